"""Where the project lives, and Hydra composition for the stages that are not Hydra apps.

The project root is the folder holding `conf/` and `dvc.yaml`: the current directory or one of its
parents (so a DVC experiment's temporary copy uses its own files), else the checkout this package
was installed from. Relative paths in the config are taken from there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A bad setting, found before any work is done. Its message names the key and the fix."""


def _is_root(folder: Path) -> bool:
    return (folder / "conf" / "config.yaml").is_file() and (folder / "dvc.yaml").is_file()


def project_root() -> Path:
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_root(folder):
            return folder
    return Path(__file__).resolve().parents[2]


def conf_dir() -> str:
    return str(project_root() / "conf")


def resolve_path(path: str | os.PathLike) -> Path:
    """A config path as an absolute one, relative paths taken from the project root."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else project_root() / path


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The composed config, for stages run as plain commands (`python -m ... key=value`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides or []))


def stage_main(run, argv: list[str] | None = None) -> None:
    """Run a stage's `run(cfg)` on the config composed from command-line overrides.

    A bad override or a `ConfigError` ends the process with one `error:` line on stderr and exit
    code 2; SIGTERM (DVC, schedulers, `kill`) unwinds like Ctrl-C, so temp files are cleaned up,
    and ends it with exit code 130.
    """
    import logging
    import signal

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = sys.argv[1:] if argv is None else argv
    module = sys.modules[run.__module__]
    if any(a in ("-h", "--help") for a in argv):
        name = module.__spec__.name if module.__spec__ else run.__module__
        print(f"usage: python -m {name} [key=value ...]   (Hydra overrides of conf/)")
        print((module.__doc__ or "").strip())
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        run(compose(argv))
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; no partial file was left in place", file=sys.stderr)
        sys.exit(130)
