"""Trials a killed sweeping process left RUNNING in a shared Optuna study.

A process killed with SIGKILL cannot end its trials, and Optuna would keep them RUNNING for ever.
The next process to open the study finds them from the asking process recorded on each trial (user
attrs `host`, `pid`, `pid_start_time`, set by the sweeper right after `ask`, so even a trial killed
before its MLflow run existed is found) and from the trial's MLflow run (tags `optuna_study`,
`optuna_trial`), and fails them when those processes are gone, as `mnist runs cleanup` does.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def fail_abandoned_trials(study, tracking: tuple[str, str] | None) -> list[int]:
    """Fail the study's RUNNING trials whose asking process is gone, and whose MLflow run (in the
    store and experiment `tracking`, if any) is not RUNNING in a live process either; that run,
    if RUNNING, becomes FAILED, and so does its sweep's parent run if its process is gone too. A
    trial asked on another host is left alone: from here its process cannot be seen. The numbers failed."""
    from optuna.trial import TrialState

    from mnist_pipeline.tracking.runs import process_state

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        asker = process_state(trial.user_attrs)
        if not asker.gone:
            continue
        runs = _trial_runs(study.study_name, trial.number, tracking) if tracking else []
        live = [r for r in runs if r.info.status == "RUNNING" and not process_state(r.data.tags).gone]
        if live:
            continue  # its job outlived the sweep (a cluster job): it may still finish
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        marked = [_fail_run(tracking[0], r) for r in runs if r.info.status == "RUNNING"]
        parent = trial.user_attrs.get("mlflow_parent_run")
        if tracking and parent:
            _fail_run(tracking[0], parent)
        log.warning("trial %d of study %r left RUNNING by a process that is gone (%s): marked FAIL%s",
                    trial.number, study.study_name, asker.why,
                    f"; its MLflow run {', '.join(marked)} FAILED" if marked else "")
        failed.append(trial.number)
    return failed


def _trial_runs(study_name: str, number: int, tracking: tuple[str, str]) -> list:
    from mlflow.tracking import MlflowClient

    uri, experiment = tracking
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], f"tags.optuna_trial = '{number}'", max_results=1000)
    return [r for r in runs if r.data.tags.get("optuna_study") == study_name]


def _fail_run(uri: str, run) -> str:
    """Mark a RUNNING run (or run id) whose process is gone FAILED, as `mnist runs cleanup` does; its id."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.cleanup import mark_gone
    from mnist_pipeline.tracking.runs import process_state

    client = MlflowClient(uri)
    if isinstance(run, str):
        try:
            run = client.get_run(run)
        except MlflowException as e:  # recorded in another store: nothing to mark here
            log.warning("run %s: %s", run, " ".join(str(e).split()))
            return run
    if run.info.status != "RUNNING" or not process_state(run.data.tags).gone:
        return run.info.run_id
    mark_gone(client, run.info.run_id)
    return run.info.run_id
