"""Register the best run's model and make it the champion: `python -m mnist_pipeline.promote`.

Which runs compete: `--run RUN_ID` (that run alone), `--sweep NAME` (that sweep's points), `--all`
(every run of the experiment), or by default the newest sweep if there is one, else every run of
the experiment. The best FINISHED run by val_full/acc that logged a model is registered as a new
version of `--model-name` (default mnist-cnn), and the alias `champion` moves to that version
(`predict`, `evaluate` and `make serve` use it). If that run's model is already a version, no new
version is made: the alias moves to it.

This is the only place that writes the model registry, one call at a time (a file lock on an
embedded store): sweep jobs never register anything. `compare --promote` calls `promote()` for
the sweep it compared.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from mnist_pipeline.models import CHAMPION, DEFAULT_MODEL_NAME, SELECTION, ModelError


def candidates(client, experiment: str, *, run_id=None, sweep=None, parent_run_id=None, all_runs=False):
    """(run, logged model, where it was chosen from) of the best run among those asked for."""
    from mnist_pipeline import models
    from mnist_pipeline.compare import CompareError, find_sweep

    if run_id:
        run = models.get_run(client, run_id)
        if run.info.status != "FINISHED":
            raise ModelError(f"{models.describe(run)} is {run.info.status}: only FINISHED runs are promoted")
        return run, models.model_of(run), "the run asked for"
    experiment_id = models.experiment_id(client, experiment)
    parent = None
    if parent_run_id:
        parent = models.get_run(client, parent_run_id)
    elif sweep:
        try:
            parent = find_sweep(client, experiment_id, sweep)
        except CompareError as e:
            raise ModelError(str(e)) from None
    elif not all_runs:
        with contextlib.suppress(CompareError):
            parent = find_sweep(client, experiment_id, None)
    where = f"sweep {parent.info.run_name!r}" if parent else f"experiment {experiment!r}"
    best = models.best_run(client, [experiment_id], parent.info.run_id if parent else None)
    if best is None:
        raise ModelError(f"no FINISHED run with {SELECTION} and a logged model in {where}")
    run, logged = best
    return run, models.found_for(run, logged), where


def register(client, uri: str, name: str, found) -> tuple[str, bool, str | None]:
    """(version, created, previous champion version): `found`'s model as a version of `name`
    (reused if it already is one), with the alias moved to it."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    from mnist_pipeline import models

    lock = None
    if uri.startswith("sqlite:///"):
        from filelock import FileLock

        lock = FileLock(f"{uri.removeprefix('sqlite:///')}.lock")
    with lock or contextlib.nullcontext():
        model = models.registered(client, name)
        if model is None:
            try:
                model = client.create_registered_model(
                    name, description="The tutorial's CNN for MNIST digits: float pixels in [0, 1], "
                    "(N, 1, 28, 28) in; 10 probabilities out.")
            except MlflowException:  # another process created it meanwhile
                model = models.registered(client, name)
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


def promote(tracking_uri: str | None, experiment: str = "mnist", *, run_id: str | None = None,
            sweep: str | None = None, parent_run_id: str | None = None, all_runs: bool = False,
            model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Register the best run's model as `model_name`'s champion; returns what was done, in words."""
    from mnist_pipeline import models

    client, uri = models.open_store(tracking_uri)
    run, found, where = candidates(client, experiment, run_id=run_id, sweep=sweep, parent_run_id=parent_run_id,
                                   all_runs=all_runs)
    version, created, previous = register(client, uri, model_name, found)
    made = "registered as new version" if created else "already registered as version"
    if previous == version:
        moved = f"it was already the {CHAMPION}"
    else:
        moved = f"alias {CHAMPION!r} moved to it (was: {f'version {previous}' if previous else 'none'})"
    test_acc = run.data.metrics.get("test/acc")
    test = f", test/acc {test_acc:.4f}" if test_acc is not None else ""
    return (f"best of {where}: {found.what}{test}\n"
            f"{made} {version} of {model_name!r}; {moved}\n"
            f"model: models:/{model_name}@{CHAMPION}")


def main(argv: list[str] | None = None) -> None:
    from mnist_pipeline.models import store_args

    parser = argparse.ArgumentParser(prog="python -m mnist_pipeline.promote", description=__doc__.split("\n")[0])
    store_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="promote this run's model")
    which.add_argument("--sweep", metavar="NAME", help="the best point of this sweep (its parent run's name)")
    which.add_argument("--all", action="store_true", help="the best run of the whole experiment")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help=f"registered model name (default: {DEFAULT_MODEL_NAME})")
    args = parser.parse_args(argv)
    try:
        print(promote(args.tracking_uri, args.experiment, run_id=args.run, sweep=args.sweep, all_runs=args.all,
                      model_name=args.model_name))
    except ModelError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

