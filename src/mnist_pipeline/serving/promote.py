"""`mnist promote`: register the best run's model and make it the champion.

Which runs compete: `--run RUN_ID` (that run alone), `--sweep NAME` (that sweep's points), `--all`
(every run of the experiment), or by default the newest sweep if there is one, else every run of
the experiment. For a sweep over seeds (`seed=0,1,2` with other swept keys), the config with the
best mean val_full/acc is chosen first, then its best run. The best FINISHED run by val_full/acc
that logged a model is registered as a new
version of `--model-name` (default mnist-cnn), and the alias `champion` moves to that version
(`predict`, `evaluate` and `make serve` use it). If that run's model is already a version, no new
version is made: the alias moves to it.

`--relog` re-logs a run's model (`--run`, default the champion's run) from the run's `best`
checkpoint in today's format (`pt2` plus weights and architecture name: see
`tracking.logged_model`), registers it as a new version and moves the alias: the way to bring a
pickled model of an older version back into use without ever unpickling it.

This is the only place that writes the model registry, one call at a time (a file lock on an
embedded store): sweep jobs never register anything. `compare --promote` calls `promote()` for
the sweep it compared.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from mnist_pipeline.serving import registry
from mnist_pipeline.serving.registry import CHAMPION, DEFAULT_MODEL_NAME, ModelError
from mnist_pipeline.tracking.runs import SELECTION, find_sweep
from mnist_pipeline.tracking.store import (
    StoreError,
    add_store_args,
    experiment_id,
    experiment_name,
    open_store,
    store_lock,
)


def candidates(client, experiment: str | None, *, run_id=None, sweep=None, parent_run_id=None, all_runs=False):
    """(run, logged model, where it was chosen from) of the best run among those asked for."""
    if run_id:
        run = registry.get_run(client, run_id)
        if run.info.status != "FINISHED":
            raise ModelError(f"{registry.describe(run)} is {run.info.status}: only FINISHED runs are promoted")
        return run, registry.model_of(client, run), "the run asked for"
    experiment = experiment_name(experiment)
    exp_id = experiment_id(client, experiment)
    parent = None
    if parent_run_id:
        parent = registry.get_run(client, parent_run_id)
    elif sweep:
        parent = find_sweep(client, exp_id, sweep)
    elif not all_runs:
        with contextlib.suppress(StoreError):
            parent = find_sweep(client, exp_id, None)
    where = f"sweep {parent.info.run_name!r}" if parent else f"experiment {experiment!r}"
    if parent is not None:
        over_seeds = _best_config_run(client, parent, where)
        if over_seeds is not None:
            return over_seeds
    best = registry.best_run(client, [exp_id], parent)
    if best is None:
        raise ModelError(f"no FINISHED run with {SELECTION} and a logged model in {where}")
    run, logged = best
    return run, registry.found_for(run, logged), where


def _best_config_run(client, parent, where: str):
    """A sweep over seeds: (the best run of the config with the best mean val_full/acc, its model,
    where it was chosen from, in words), None for any other sweep. Only configs with a model count."""
    from mnist_pipeline.tracking.sweep_table import SEED, config_rows, read_sweep

    if SEED not in parent.data.tags.get("swept_keys", "").split(","):
        return None  # not a sweep over seeds: no need to read its points' curves
    sweep = read_sweep(client, parent)
    by_name = {r.info.run_name: r for r in sweep.points}
    for config in config_rows(sweep.rows, sweep.swept):
        members = sorted((by_name[name] for name in config["_runs"]
                          if by_name[name].info.status == "FINISHED" and SELECTION in by_name[name].data.metrics),
                         key=lambda r: -r.data.metrics[SELECTION])
        for run in members:
            logged = registry.logged_model(client, run)
            if logged is not None:
                described = " ".join(f"{k}={v}" for k, v in config["_config"].items())
                return run, registry.found_for(run, logged), (
                    f"config {described} of {where} (best mean {SELECTION} {config[f'{SELECTION} (mean)']}, "
                    f"n={config['n']}), its best seed")
    return None


def register(client, uri: str, name: str, found) -> tuple[str, bool, str | None]:
    """(version, created, previous champion version): `found`'s model as a version of `name`
    (reused if it already is one), with the alias moved to it."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    with store_lock(uri):
        model = registry.registered(client, name)
        if model is None:
            try:
                model = client.create_registered_model(
                    name, description="The tutorial's CNN for MNIST digits: float pixels in [0, 1], "
                    "(N, 1, 28, 28) in; 10 probabilities out.")
            except MlflowException:  # another process created it meanwhile
                model = registry.registered(client, name)
                if model is None:
                    raise
        previous = model.aliases.get(CHAMPION)
        previous = None if previous is None else str(previous)
        same = [v for v in client.search_model_versions(f"name = '{name}'")
                if v.source == found.uri or (found.model_id and getattr(v, "model_id", None) == found.model_id)]
        if same:
            version, created = max(same, key=lambda v: int(v.version)).version, False
        else:
            version = client.create_model_version(name, source=found.uri, run_id=found.run_id,
                                                  model_id=found.model_id).version
            created = True
            if found.model_id:  # as mlflow.register_model does: the logged model links to its version
                with contextlib.suppress(MlflowException):
                    import json

                    tags = client.get_logged_model(found.model_id).tags
                    links = json.loads(tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
                    links.append({"name": name, "version": str(version)})
                    client.set_logged_model_tags(found.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return str(version), created, previous


def _moved(version: str, previous: str | None) -> str:
    if previous == version:
        return f"it was already the {CHAMPION}"
    return f"alias {CHAMPION!r} moved to it (was: {f'version {previous}' if previous else 'none'})"


def promote(tracking_uri: str | None, experiment: str | None = None, *, run_id: str | None = None,
            sweep: str | None = None, parent_run_id: str | None = None, all_runs: bool = False,
            model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Register the best run's model as `model_name`'s champion; returns what was done, in words."""
    client, uri = open_store(tracking_uri)
    run, found, where = candidates(client, experiment, run_id=run_id, sweep=sweep, parent_run_id=parent_run_id,
                                   all_runs=all_runs)
    version, created, previous = register(client, uri, model_name, found)
    made = "registered as new version" if created else "already registered as version"
    test_acc = run.data.metrics.get("test/acc")
    test = f", test/acc {test_acc:.4f}" if test_acc is not None else ""
    return (f"best of {where}: {found.what}{test}\n"
            f"{made} {version} of {model_name!r}; {_moved(version, previous)}\n"
            f"model: models:/{model_name}@{CHAMPION}")


def relog(tracking_uri: str | None, *, run_id: str | None = None, model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Re-log the model of `run_id` (default: the champion's run) from the run's `best` checkpoint,
    register it as a new version and move the alias to it; returns what was done, in words."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from mnist_pipeline.model.checkpoint import CheckpointError, architecture_of, read, rebuild
    from mnist_pipeline.tracking.logged_model import log_model

    client, uri = open_store(tracking_uri)
    if run_id is None:
        model = registry.registered(client, model_name)
        if model is None or CHAMPION not in model.aliases:
            raise ModelError(f"{model_name!r} has no {CHAMPION} to re-log: pass --run RUN_ID")
        run_id = client.get_model_version(model_name, model.aliases[CHAMPION]).run_id
        if not run_id:
            raise ModelError(f"the {CHAMPION} of {model_name!r} names no run: pass --run RUN_ID")
    run = registry.get_run(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "checkpoints/best.ckpt", tmp)
        except (MlflowException, OSError):
            raise ModelError(f"{registry.describe(run)} has no checkpoints/best.ckpt artifact to re-log "
                             "its model from") from None
        try:
            checkpoint = read(path)
            net, architecture = rebuild(checkpoint), architecture_of(checkpoint)
        except CheckpointError as e:
            raise ModelError(f"{registry.describe(run)}: {e}") from None
    model_id = log_model(run_id, net, architecture)
    found = registry.Found(f"models:/{model_id}", registry.describe(run), run_id, model_id)
    version, _, previous = register(client, uri, model_name, found)
    return (f"re-logged the model of {found.what} from its best checkpoint ({architecture['name']}, pt2 + weights), "
            f"model {model_id}\nregistered as new version {version} of {model_name!r}; {_moved(version, previous)}\n"
            f"model: models:/{model_name}@{CHAMPION}")


def main(argv: list[str] | None = None, prog: str = "mnist promote") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_store_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="promote this run's model (with --relog: re-log it)")
    which.add_argument("--sweep", metavar="NAME", help="the best point of this sweep (its parent run's name)")
    which.add_argument("--all", action="store_true", help="the best run of the whole experiment")
    parser.add_argument("--relog", action="store_true", help="re-log the model of --run (default: the champion's "
                        "run) from its best checkpoint as pt2, register it and move the alias")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help=f"registered model name (default: {DEFAULT_MODEL_NAME})")
    args = parser.parse_args(argv)
    if args.relog and (args.sweep or args.all):
        parser.error("--relog takes --run (or the champion's run), not --sweep or --all")
    try:
        if args.relog:
            print(relog(args.tracking_uri, run_id=args.run, model_name=args.model_name))
        else:
            print(promote(args.tracking_uri, args.experiment, run_id=args.run, sweep=args.sweep, all_runs=args.all,
                          model_name=args.model_name))
    except StoreError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.serving.promote")
