"""A trained net as MLflow keeps it: data that loads without running code.

Every run logs one model (MLflow 3: a LoggedModel linked to the run), holding:
- the served form in MLflow's `pt2` format (`torch.export`): the net with softmax on top, float
  pixels in [0, 1] of shape (N, 1, 28, 28) in (N dynamic), 10 probabilities out, with its
  signature and input example. `mlflow models serve` and `mlflow.pyfunc.load_model` load it with
  `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`, and it does not refer to this package's modules;
- `extra_files/weights.pt`: the net's state dict, readable with `torch.load(weights_only=True)`;
- `extra_files/architecture.json`: `{"name", "settings"}`, looked up in `model.architectures`.

`predict` and `evaluate` read the last two only (`model_files`): no unpickling, no torch.export
import (~2 s cold), no `mlflow.pytorch` import (~8 s). A model without them (a pickled model of an
older version, or one logged by something else) is refused with one line: `mnist promote --relog`
re-logs it from its run's best checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

WEIGHTS, ARCHITECTURE = "weights.pt", "architecture.json"
EXTRA = "extra_files"
NAME = "model"


class NotOurFormat(LookupError):
    """A logged model without the weights and architecture files: pickled, or foreign."""


def served(net):
    """The net as served: a CPU copy in eval mode with softmax on top."""
    import copy

    import torch

    return torch.nn.Sequential(copy.deepcopy(net).cpu(), torch.nn.Softmax(dim=1)).eval()


def log_model(run_id: str, net, architecture: dict) -> str:
    """Log `net` (logits out) to the run as the model described above; returns its model id."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    run = mlflow.MlflowClient().get_run(run_id)
    # Created here, in the run's own experiment: left to log_model, a model of a run that is not
    # this process's active run lands in the default experiment.
    logged = mlflow.initialize_logged_model(name=NAME, source_run_id=run_id, experiment_id=run.info.experiment_id,
                                            params=run.data.params, model_type="pytorch")
    model = served(net)
    example = np.zeros((2, 1, 28, 28), dtype=np.float32)  # a batch of 2: the batch dimension is exported dynamic
    with torch.no_grad():
        probs = model(torch.from_numpy(example)).numpy()
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)  # its "validating serving input" notes
    with tempfile.TemporaryDirectory() as tmp:
        weights, arch = Path(tmp) / WEIGHTS, Path(tmp) / ARCHITECTURE
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, weights)
        arch.write_text(json.dumps(architecture, sort_keys=True))
        mlflow.pytorch.log_model(
            model,
            name=NAME,
            run_id=run_id,
            model_id=logged.model_id,
            serialization_format="pt2",
            signature=infer_signature(example, probs),
            input_example=example,
            extra_files=[str(weights), str(arch)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
    return logged.model_id


def logged_model(client, run):
    """The newest READY model logged by `run`, else its newest one (a failed upload), or None."""
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    models = [m for m in models if str(m.status).endswith("READY")] or list(models)
    return max(models, key=lambda m: m.creation_timestamp, default=None)


def cache_root() -> Path:
    """Where downloaded model files are kept, one folder per model id (a model's files never
    change): $MNIST_PIPELINE_CACHE, else $XDG_CACHE_HOME/mnist-pipeline, else ~/.cache/mnist-pipeline."""
    base = os.environ.get("MNIST_PIPELINE_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "mnist-pipeline")
    return Path(base).expanduser() / "models"


def model_files(client, model_id: str) -> tuple[Path, dict]:
    """(the weights file, the architecture record) of the logged model `model_id`, downloaded once
    into the cache. NotOurFormat if it has no such files."""
    folder = cache_root() / model_id
    weights, arch = folder / WEIGHTS, folder / ARCHITECTURE
    if not (weights.is_file() and arch.is_file()):
        _download(client, model_id, folder)
    return weights, json.loads(arch.read_text())


def _download(client, model_id: str, folder: Path) -> None:
    import shutil

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    location = client.get_logged_model(model_id).artifact_location
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{model_id}.") as tmp:
        try:
            got = Path(download_artifacts(artifact_uri=f"{location.rstrip('/')}/{EXTRA}", dst_path=tmp))
        except (MlflowException, OSError) as e:
            raise NotOurFormat(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        if not ((got / WEIGHTS).is_file() and (got / ARCHITECTURE).is_file()):
            raise NotOurFormat(f"no {EXTRA}/{WEIGHTS} and {EXTRA}/{ARCHITECTURE} in it")
        for name in (WEIGHTS, ARCHITECTURE):  # the weights first: a folder with both files is complete
            shutil.move(got / name, Path(tmp) / f"done-{name}")
        folder.mkdir(exist_ok=True)
        os.replace(Path(tmp) / f"done-{WEIGHTS}", folder / WEIGHTS)
        os.replace(Path(tmp) / f"done-{ARCHITECTURE}", folder / ARCHITECTURE)


def load_net(weights: Path, architecture: dict):
    """The net (logits out) from a weights-only state dict and its architecture record."""
    import torch

    from mnist_pipeline.model.architectures import from_record

    state = torch.load(weights, map_location="cpu", weights_only=True)
    return from_record(architecture, state).eval()
