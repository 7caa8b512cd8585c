"""The data a run saw, as MLflow dataset inputs: the runs table's Dataset column and filter.

Each split file is one input, logged once when the run is created (a resumed run keeps them):
its name, its digest (the first 32 hex characters of the file's sha256: MLflow caps digests at 36),
its source (the DVC-tracked path, relative to the project when inside it) and its context
(training, validation or test). The full sha256 is the input's `sha256` tag.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnist_pipeline.config import project_root

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
DIGEST_CHARS = 32


def source_path(path: Path) -> str:
    path = Path(path).resolve()
    root = project_root().resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def dataset_inputs(processed_dir: Path, digests: dict[str, str]) -> list:
    """One `DatasetInput` per split, from each split file's sha256 (`data.processed.split_sha256s`)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for split, sha256 in digests.items():
        dataset = Dataset(name=f"mnist-{split}", digest=sha256[:DIGEST_CHARS], source_type="local",
                          source=json.dumps({"uri": source_path(Path(processed_dir) / f"{split}.npz")}))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", CONTEXTS[split]),
                                                  InputTag("sha256", sha256)]))
    return inputs
