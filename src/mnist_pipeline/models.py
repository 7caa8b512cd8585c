"""Finding a trained model: the registered champion, the best finished run, a run id, a checkpoint.

Shared by `predict`, `evaluate`, `promote` and `serve`. Every model found here is the served form:
a torch module taking float pixels in [0, 1] of shape (N, 1, 28, 28) and giving 10 probabilities
(the tutorial's CNN with softmax on top). Anything that cannot be found or loaded raises
ModelError, whose message is one line that names what was asked for and what to do.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "mnist-cnn"
CHAMPION = "champion"
SELECTION = "val_full/acc"  # how runs are ranked: the model selection metric of every run


class ModelError(RuntimeError):
    """No such model, run, store or checkpoint: a one-line message."""


@dataclass
class Found:
    uri: str          # what mlflow.pytorch.load_model takes: models:/m-..., models:/name@champion
    what: str         # for people: which model this is
    run_id: str | None = None
    model_id: str | None = None


def store_args(parser: argparse.ArgumentParser) -> None:
    """The flags every non-training command shares to find the store (as training does)."""
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else the repo's mlruns/)")
    parser.add_argument("--experiment", default="mnist", help="MLflow experiment (default: mnist)")


def add_model_args(parser, *, ckpt: bool = True) -> None:
    """--run / --ckpt / --model-name plus the store flags every command shares."""
    store_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="the model logged by this MLflow run")
    if ckpt:
        which.add_argument("--ckpt", metavar="PATH", help="a Lightning checkpoint file (weights only)")
    parser.add_argument("--model-name", help=f"registered model whose '{CHAMPION}' is used (default: "
                                             f"{DEFAULT_MODEL_NAME})")


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__


def open_store(tracking_uri: str | None):
    """(client, uri) of the store training uses; a missing embedded store is an error, not created."""
    from mnist_pipeline import tracking

    try:
        return tracking.open_store(tracking_uri)
    except tracking.NoStore as e:
        raise ModelError(f"{e}: train a model first (python -m mnist_pipeline.train) or pass --tracking-uri") from None


def experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        raise ModelError(f"no experiment {name!r} in this store: train a model first or pass --experiment")
    return found.experiment_id


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ModelError(f"no MLflow run {run_id!r} in this store (see `make ui` for run ids)") from None


def logged_model(run):
    """The newest model logged by `run`, or None."""
    import mlflow

    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'",
                                         output_format="list")
    models = [m for m in models if str(m.status).endswith("READY")] or models
    return max(models, key=lambda m: m.creation_timestamp, default=None)


def describe(run) -> str:
    value = run.data.metrics.get(SELECTION)
    metric = f", {SELECTION} {value:.4f}" if value is not None else ""
    return f"run {run.info.run_name!r} ({run.info.run_id}{metric})"


def found_for(run, logged) -> Found:
    """The model `logged` by `run`."""
    return Found(logged.model_uri, describe(run), run.info.run_id, logged.model_id)


def model_of(run) -> Found:
    """The model logged by `run` (already fetched)."""
    model = logged_model(run)
    if model is None:
        raise ModelError(f"{describe(run)} has no logged model (status {run.info.status}): "
                         "only runs that finished training log one")
    return found_for(run, model)


def run_model(client, run_id: str) -> Found:
    return model_of(get_run(client, run_id))


def best_run(client, experiment_ids: list[str], parent_run_id: str | None = None):
    """(run, logged model) of the best FINISHED run by val_full/acc that logged a model, or None."""
    query = f"attributes.status = 'FINISHED' and metrics.`{SELECTION}` >= 0"
    if parent_run_id:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = client.search_runs(experiment_ids, query, order_by=[f"metrics.`{SELECTION}` DESC"], max_results=1000)
    for run in runs:
        if math.isnan(run.data.metrics.get(SELECTION, math.nan)):
            continue
        model = logged_model(run)
        if model is not None:
            return run, model
    return None


def registered(client, name: str):
    """The registered model called `name`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def resolve(client, experiment: str, *, run_id: str | None = None, model_name: str | None = None,
            note=lambda text: print(text, file=sys.stderr)) -> Found:
    """The model a command should use: `run_id`'s, else the champion of `model_name`, else (no
    champion yet, and no model name asked for explicitly) the experiment's best finished run."""
    if run_id:
        return run_model(client, run_id)
    name = model_name or DEFAULT_MODEL_NAME
    model = registered(client, name)
    if model is None and model_name is not None:
        names = sorted(m.name for m in client.search_registered_models())
        known = f" (registered: {', '.join(names)})" if names else " (none is registered yet)"
        raise ModelError(f"no registered model {name!r} in this store{known}")
    if model is not None and CHAMPION in model.aliases:
        version = client.get_model_version(name, model.aliases[CHAMPION])
        where = describe(get_run(client, version.run_id)) if version.run_id else version.source
        return Found(f"models:/{name}@{CHAMPION}", f"{name}@{CHAMPION} (version {version.version}, {where})",
                     version.run_id, getattr(version, "model_id", None))
    best = best_run(client, [experiment_id(client, experiment)])
    if best is None:
        raise ModelError(f"no {CHAMPION} of {name!r} and no FINISHED run with a model in experiment "
                         f"{experiment!r}: train one first (python -m mnist_pipeline.train)")
    run, logged = best
    note(f"note: {name!r} has no {CHAMPION} yet (python -m mnist_pipeline.promote registers one): using the "
         f"best FINISHED run of experiment {experiment!r}, {describe(run)}")
    return found_for(run, logged)


def load(found: Found):
    """The served torch module (softmax on top), in eval mode, on the CPU."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    try:
        net = mlflow.pytorch.load_model(found.uri, map_location="cpu")
    except (MlflowException, OSError, RuntimeError, ModuleNotFoundError) as e:
        raise ModelError(f"cannot load the model of {found.what} ({found.uri}): {first_line(e)}") from None
    return net.eval()


def load_checkpoint(path: str | os.PathLike):
    """A Lightning checkpoint of this project as the served module. Read with weights_only=True:
    a checkpoint is data, and one holding code or other objects is refused."""
    import pickle

    import torch

    from mnist_pipeline.cnn import TfjsCNN

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        imported = re.search(r"GLOBAL (\S+)", str(e))
        if imported:
            raise ModelError(f"{path}: refused: it holds code or objects other than weights (it would import "
                             f"{imported[1]}; read with weights_only=True)") from None
        raise ModelError(f"{path}: not a checkpoint (the weights-only reader cannot parse it)") from None
    except Exception as e:  # noqa: BLE001 (garbage bytes can fail the unpickler in any way)
        raise ModelError(f"{path}: truncated or not a checkpoint ({type(e).__name__}: {first_line(e)})") from None
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ModelError(f"{path}: no state_dict in it: not a Lightning checkpoint of this project")
    net = TfjsCNN()
    try:
        net.load_state_dict({k.removeprefix("net."): v for k, v in weights.items() if k.startswith("net.")})
    except RuntimeError as e:
        raise ModelError(f"{path}: its weights do not fit the tutorial's CNN ({first_line(e)})") from None
    return torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()


def find_and_load(args):
    """(module, what) for a command's --run / --ckpt / --model-name / store flags."""
    if getattr(args, "ckpt", None):
        return load_checkpoint(args.ckpt), f"checkpoint {args.ckpt}"
    client, _ = open_store(args.tracking_uri)
    found = resolve(client, args.experiment, run_id=args.run, model_name=args.model_name)
    return load(found), found.what


def logits_net(model):
    """The part of a served module before its softmax (for a loss from logits), or None."""
    import torch

    if isinstance(model, torch.nn.Sequential) and len(model) == 2 and isinstance(model[-1], torch.nn.Softmax):
        return model[0]
    return None
