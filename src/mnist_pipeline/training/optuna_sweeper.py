"""`hparams_search=optuna`: a Hydra sweeper that is a thin adapter over Optuna's ask/tell.

Optuna chooses each trial's values (`study.ask`); Hydra's launcher runs the trials in batches of
`hydra.sweeper.n_jobs` (in this process, in joblib workers, as SLURM jobs: any launcher); each
job's return is told back: a number COMPLETE, NaN (a failed point) FAIL, `Pruned` PRUNED. Each job
also gets `sweep.optuna_study=<name> sweep.optuna_trial=<number>`, which its MLflow run records as
tags. With `hydra.sweeper.storage`, several processes on one machine or many share one study
(`load_if_exists`), and `hydra.sweeper.n_trials` counts the trials this process adds.

Hydra takes sweepers only from the `hydra_plugins` package: `hydra_plugins.mnist_pipeline_optuna`
names this class there, and conf/hydra/sweeper/optuna.yaml selects it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from mnist_pipeline.config import ConfigError
from mnist_pipeline.training.optuna_abandoned import fail_abandoned_trials
from mnist_pipeline.training.optuna_study import (
    StudySettings,
    open_storage,
    override,
    read_settings,
)

RESULTS_FILE = "optimization_results.yaml"  # best params and value, in the sweep folder (as hydra-optuna-sweeper)
log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        """`settings`: hydra.sweeper.* as configured (sampler, direction, study_name, storage,
        n_trials, n_jobs, params), checked when the sweep starts."""
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context = None
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> list:
        """Add `n_trials` trials to the study, `n_jobs` at a time; the launcher's returns, batch by batch."""
        import optuna

        try:
            settings = read_settings(self.settings, arguments)
            storage = open_storage(settings.storage_url)
        except ConfigError as e:  # the MLflowSweep callback checked these (and the study); this is for sweeps without it
            sys.exit(f"error: {e}")
        study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=settings.sampler,
                                    direction=settings.direction, load_if_exists=True)
        if storage is not None:
            # Processes sharing a study must not draw the same random points from equally seeded samplers.
            study.sampler.reseed_rng()
        abandoned = fail_abandoned_trials(study, self._tracking())
        earlier = len(study.get_trials(deepcopy=False))
        log.info("Optuna study %r (%s): %d trials so far%s; this process adds %d, %d at a time",
                 study.study_name, settings.storage_url or "in memory", earlier,
                 f", {len(abandoned)} of them abandoned and now FAIL" if abandoned else "",
                 settings.n_trials, settings.n_jobs)
        returns = []
        remaining = settings.n_trials
        while remaining > 0:
            trials = [ask(study, settings) for _ in range(min(settings.n_jobs, remaining))]
            overrides = [job_overrides(study.study_name, trial, settings) for trial in trials]
            try:
                batch = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # a launcher failing, or SIGINT/SIGTERM: these trials did not run to the end
                with contextlib.suppress(Exception):
                    for trial in trials:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                raise
            self.job_idx += len(batch)
            for trial, job in zip(trials, batch, strict=True):
                tell(study, trial, job)
            returns.append(batch)
            remaining -= len(trials)
        write_results(study, Path(self.config.hydra.sweep.dir))
        return returns

    def _tracking(self) -> tuple[str, str] | None:
        """(MLflow store, experiment) where the trials' runs are, or None without tracking."""
        logger = self.config.get("logger")
        if not logger or not logger.get("enabled"):
            return None
        from mnist_pipeline.tracking.store import experiment_name, tracking_uri

        return tracking_uri(logger.get("tracking_uri")), experiment_name(logger.get("experiment_name"))


def ask(study, settings: StudySettings):
    """A new trial with its values drawn, and the asking process recorded (user attrs `host`, `pid`,
    `pid_start_time`, and the sweep's MLflow parent run) so that a later process can tell whether
    a trial left RUNNING was abandoned, even one killed before its MLflow run existed."""
    from mnist_pipeline.tracking.runs import PARENT_ENV, process_tags

    trial = study.ask(fixed_distributions=settings.space.distributions)
    for key, value in process_tags().items():
        trial.set_user_attr(key, value)
    if os.environ.get(PARENT_ENV):
        trial.set_user_attr("mlflow_parent_run", os.environ[PARENT_ENV])
    return trial


def job_overrides(study_name: str, trial, settings: StudySettings) -> list[str]:
    """The overrides of the trial's job: the fixed ones, its drawn values, and which trial it is."""
    return [*settings.space.fixed.values(),
            *(override(key, value) for key, value in trial.params.items()),
            override("sweep.optuna_study", study_name), override("sweep.optuna_trial", trial.number)]


def tell(study, trial, job) -> Any:
    """Tell Optuna how the trial's job ended: a number COMPLETE; NaN (a failed point), an exception or
    no number FAIL; `Pruned` PRUNED at its step, its value the step's intermediate value. The state told."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    from mnist_pipeline.training.pruning import Pruned

    value = job._return_value if job.status == JobStatus.COMPLETED else None
    if isinstance(value, Pruned):
        if not math.isnan(value):
            trial.report(float(value), value.at_step)
        state, values = TrialState.PRUNED, None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        state, values = TrialState.COMPLETE, float(value)
    else:
        if job.status != JobStatus.COMPLETED:
            log.warning("trial %d failed: %s", trial.number, value if value is not None else job._return_value)
        state, values = TrialState.FAIL, None
    study.tell(trial, values, state=state, skip_if_finished=True)
    return state


def write_results(study, sweep_dir: Path) -> None:
    """optimization_results.yaml in the sweep folder (atomically): the study's best params and value
    so far, from every process that shares it; null while no trial is COMPLETE."""
    from omegaconf import OmegaConf

    from mnist_pipeline.atomic import write_text
    from mnist_pipeline.training.optuna_study import complete_trials

    best = study.best_trial if complete_trials(study) else None
    results = {"name": "optuna", "study_name": study.study_name,
               "best_params": best.params if best else None, "best_value": best.value if best else None}
    write_text(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))
    log.info("Best parameters: %s", results["best_params"])
    log.info("Best value: %s", results["best_value"])
