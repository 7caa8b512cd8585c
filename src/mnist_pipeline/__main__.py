"""`python -m mnist_pipeline <command>`: the `mnist` command, where the script is not on PATH."""

import sys

from mnist_pipeline.cli import main

sys.exit(main())
