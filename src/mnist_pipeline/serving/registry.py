"""Finding a trained model and loading it as data: the registered champion, the best finished run,
a run's model, or a checkpoint file.

Shared by `predict`, `evaluate`, `promote` and `serve`. A model is loaded from its weights-only
state dict and its architecture's name (`tracking.logged_model`), a checkpoint from its weights and
its recorded architecture (`model.checkpoint`): nothing is ever unpickled, and MLflow's pytorch
flavour is never imported. Every model found here is served as a torch module taking float pixels
in [0, 1] of shape (N, 1, 28, 28) and giving 10 probabilities. Anything that cannot be found or
loaded raises ModelError, whose message is one line naming what was asked for and what to do.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.tracking.logged_model import logged_model
from mnist_pipeline.tracking.runs import SELECTION, point_runs
from mnist_pipeline.tracking.store import StoreError, add_store_args, experiment_id, experiment_name, open_store

DEFAULT_MODEL_NAME = "mnist-cnn"
CHAMPION = "champion"


class ModelError(StoreError):
    """No such model, run, store or checkpoint, or a model that cannot be loaded as data."""


@dataclass
class Found:
    uri: str          # models:/m-..., models:/name@champion
    what: str         # for people: which model this is
    run_id: str | None = None
    model_id: str | None = None


@dataclass
class Located:
    """A found model's files, on this machine: what `load` needs, without MLflow."""
    weights: Path
    architecture: dict
    what: str
    notes: list[str] = field(default_factory=list)


def add_model_args(parser, *, ckpt: bool = True) -> None:
    """--run / --ckpt / --model-name plus the store flags every command shares."""
    add_store_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="the model logged by this MLflow run")
    if ckpt:
        which.add_argument("--ckpt", metavar="PATH", help="a Lightning checkpoint file (weights only)")
    parser.add_argument("--model-name", help=f"registered model whose '{CHAMPION}' is used (default: "
                                             f"{DEFAULT_MODEL_NAME})")


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ModelError(f"no MLflow run {run_id!r} in this store (see `mnist ui` for run ids)") from None


def describe(run) -> str:
    value = run.data.metrics.get(SELECTION)
    metric = f", {SELECTION} {value:.4f}" if value is not None else ""
    return f"run {run.info.run_name!r} ({run.info.run_id}{metric})"


def found_for(run, logged) -> Found:
    """The model `logged` by `run`."""
    return Found(logged.model_uri, describe(run), run.info.run_id, logged.model_id)


def model_of(client, run) -> Found:
    """The model logged by `run` (already fetched)."""
    model = logged_model(client, run)
    if model is None:
        raise ModelError(f"{describe(run)} has no logged model (status {run.info.status}): "
                         "only runs that finished training log one")
    return found_for(run, model)


def best_run(client, experiment_ids: list[str], parent=None):
    """(run, logged model) of the best FINISHED run by val_full/acc that logged a model (among the
    points of the sweep whose parent run is `parent`, if given), or None."""
    query = f"attributes.status = 'FINISHED' and metrics.`{SELECTION}` >= 0"
    order = [f"metrics.`{SELECTION}` DESC"]
    runs = (point_runs(client, parent, query, order, 1000) if parent is not None
            else client.search_runs(experiment_ids, query, order_by=order, max_results=1000))
    for run in runs:
        if math.isnan(run.data.metrics.get(SELECTION, math.nan)):
            continue
        model = logged_model(client, run)
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


def model_id_of(version) -> str | None:
    """The logged model a registered version points at (its `source` is `models:/<model id>`)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = str(version.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def resolve(client, experiment: str | None, *, run_id: str | None = None, model_name: str | None = None,
            note=lambda text: print(text, file=sys.stderr)) -> Found:
    """The model a command should use: `run_id`'s, else the champion of `model_name`, else (no
    champion yet, and no model name asked for explicitly) the experiment's best finished run."""
    if run_id:
        return model_of(client, get_run(client, run_id))
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
                     version.run_id, model_id_of(version))
    experiment = experiment_name(experiment)
    best = best_run(client, [experiment_id(client, experiment)])
    if best is None:
        raise ModelError(f"no {CHAMPION} of {name!r} and no FINISHED run with a model in experiment "
                         f"{experiment!r}: train one first (mnist train)")
    run, logged = best
    note(f"note: {name!r} has no {CHAMPION} yet (mnist promote registers one): using the best FINISHED run "
         f"of experiment {experiment!r}, {describe(run)}")
    return found_for(run, logged)


def relog_hint(found: Found) -> str:
    run = f" --run {found.run_id}" if found.run_id else ""
    return f"mnist promote --relog{run}"


def _answer_file(args) -> tuple[Path, list | None]:
    """Where `locate` keeps its answer to these flags, and the store's fingerprint now."""
    import hashlib
    import json

    from mnist_pipeline.tracking.logged_model import cache_root
    from mnist_pipeline.tracking.store import fingerprint, tracking_uri

    uri = tracking_uri(args.tracking_uri)
    question = json.dumps([uri, args.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME"), args.run,
                           args.model_name])
    return cache_root() / "answers" / f"{hashlib.sha256(question.encode()).hexdigest()[:32]}.json", fingerprint(uri)


def cached_location(args) -> Located | None:
    """`locate`'s last answer to the same flags, if the store has not been written to since (an
    embedded store only): then the alias cannot have moved, and no MLflow import is needed."""
    import json

    path, state = _answer_file(args)
    try:
        answer = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state is None or answer.get("store") != state or not Path(answer["weights"]).is_file():
        return None
    return Located(Path(answer["weights"]), answer["architecture"], answer["what"], answer["notes"])


def locate(args) -> Located:
    """The files of the model a command's --run / --model-name / store flags name, downloaded once
    into a local cache (keyed by the model's id). Needs MLflow's client only: no torch."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import json

    from mnist_pipeline.atomic import write_text
    from mnist_pipeline.tracking.logged_model import NotOurFormat, model_files

    notes: list[str] = []
    answer_file, state = _answer_file(args)  # before asking: a write meanwhile makes the answer stale
    client, _ = open_store(args.tracking_uri)
    found = resolve(client, args.experiment, run_id=args.run, model_name=args.model_name, note=notes.append)
    if not found.model_id:
        raise ModelError(f"{found.what}: {found.uri} is not a logged model of MLflow 3: re-log it with "
                         f"`{relog_hint(found)}`")
    try:
        weights, architecture = model_files(client, found.model_id)
    except NotOurFormat as e:
        raise ModelError(f"{found.what}: not loaded, because this model is not stored as weights and an "
                         f"architecture name (a pickled model of an older version runs code when loaded): "
                         f"re-log it with `{relog_hint(found)}` ({e})") from None
    if state is not None:
        write_text(answer_file, json.dumps({"store": state, "weights": str(weights), "architecture": architecture,
                                            "what": found.what, "notes": notes}))
    return Located(weights, architecture, found.what, notes)


def load(located: Located):
    """The served module (softmax on top), eval mode, CPU, from a located model's files."""
    from mnist_pipeline.model.architectures import ArchitectureError
    from mnist_pipeline.tracking.logged_model import load_net, served

    try:
        return served(load_net(located.weights, located.architecture))
    except ArchitectureError as e:
        raise ModelError(f"{located.what}: {e}: a newer version of this project logged it") from None
    except Exception as e:  # noqa: BLE001  a damaged cached file can fail the reader in any way
        raise ModelError(f"{located.what}: its weights ({located.weights}) cannot be loaded: {first_line(e)}; "
                         "delete that folder and try again") from None


def load_checkpoint(path: str | os.PathLike):
    """A checkpoint of this project, whatever architecture trained it, as the served module."""
    from mnist_pipeline.model.checkpoint import CheckpointError, read, rebuild
    from mnist_pipeline.tracking.logged_model import served

    try:
        return served(rebuild(read(path)))
    except CheckpointError as e:
        raise ModelError(str(e)) from None


def find_and_load(args):
    """(module, what) for a command's --run / --ckpt / --model-name / store flags."""
    if getattr(args, "ckpt", None):
        return load_checkpoint(args.ckpt), f"checkpoint {args.ckpt}"
    located = locate(args)
    for text in located.notes:
        print(text, file=sys.stderr)
    return load(located), located.what


def logits_net(model):
    """The part of a served module before its softmax (for a loss from logits), or None."""
    import torch

    if isinstance(model, torch.nn.Sequential) and len(model) == 2 and isinstance(model[-1], torch.nn.Softmax):
        return model[0]
    return None
