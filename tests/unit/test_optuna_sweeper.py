"""The Optuna sweeper without training: a fake launcher returns what jobs would, and the study's
trials are read back from its storage."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mnist_pipeline.config import ConfigError
from mnist_pipeline.training.optuna_abandoned import fail_abandoned_trials
from mnist_pipeline.training.optuna_study import SWEEPER_TARGET, read_settings, search_space
from mnist_pipeline.training.optuna_sweeper import OptunaSweeper
from mnist_pipeline.training.pruning import Pruned

SPACE = {"optimizer.lr": "tag(log, interval(0.01, 1.0))", "data.batch_size": "choice(32, 64, 128, 256)"}


class FakeLauncher:
    """Returns the given outcomes in order (an exception: the job failed); records each launch."""

    def __init__(self, outcomes: list, raises: BaseException | None = None) -> None:
        self.outcomes, self.raises, self.launches = list(outcomes), raises, []

    def launch(self, job_overrides, initial_job_idx):
        self.launches.append((initial_job_idx, [list(o) for o in job_overrides]))
        if self.raises is not None:
            raise self.raises
        returns = []
        for overrides in job_overrides:
            outcome = self.outcomes.pop(0)
            failed = isinstance(outcome, BaseException)
            returns.append(JobReturn(overrides=list(overrides), _return_value=outcome,
                                     status=JobStatus.FAILED if failed else JobStatus.COMPLETED))
        return returns


def _settings(storage: str | None, **extra) -> dict:
    return {"sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0}, "direction": "maximize",
            "study_name": "s", "storage": storage, "n_trials": 1, "n_jobs": 1, "params": dict(SPACE), **extra}


def _sweep(tmp_path, outcomes: list, raises: BaseException | None = None,
           **settings) -> tuple[OptunaSweeper, FakeLauncher]:
    sweeper = OptunaSweeper(**_settings(**settings))
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}, "logger": {"enabled": False}})
    sweeper.launcher = launcher = FakeLauncher(outcomes, raises)
    sweeper.sweep(arguments=["paths.processed_dir=/data", "+extra=1"])
    return sweeper, launcher


def test_each_return_is_told_as_its_state_in_batches_of_n_jobs(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    outcomes = [0.5, float("nan"), Pruned(0.25, at_step=7), RuntimeError("boom"), 0.75]
    _, launcher = _sweep(tmp_path, outcomes, storage=storage, n_trials=5, n_jobs=2)
    assert [(idx, len(batch)) for idx, batch in launcher.launches] == [(0, 2), (2, 2), (4, 1)]
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                         TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].value == 0.5 and trials[4].value == 0.75
    assert trials[2].intermediate_values == {7: 0.25} and trials[2].value == 0.25
    jobs = [overrides for _, batch in launcher.launches for overrides in batch]
    for trial, overrides in zip(trials, jobs, strict=True):
        assert overrides[:2] == ["paths.processed_dir=/data", "+extra=1"], "fixed overrides passed on as typed"
        assert overrides[-2:] == ["sweep.optuna_study=s", f"sweep.optuna_trial={trial.number}"]
        values = dict(o.split("=", 1) for o in overrides[2:-2])
        assert float(values["optimizer.lr"]) == trial.params["optimizer.lr"] and 0.01 <= trial.params["optimizer.lr"] <= 1
        assert int(values["data.batch_size"]) == trial.params["data.batch_size"] in (32, 64, 128, 256)
        assert trial.user_attrs["pid"] == str(os.getpid()) and trial.user_attrs["host"]
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_value == 0.75 and dict(results.best_params) == trials[4].params
    assert results.study_name == "s" and results.name == "optuna"


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_processes_sharing_a_storage_each_add_their_n_trials(tmp_path, scheme):
    storage = f"sqlite:///{tmp_path}/optuna.db" if scheme == "sqlite" else f"journal://{tmp_path}/optuna.log"
    _sweep(tmp_path, [0.1, 0.2], storage=storage, n_trials=2)
    _sweep(tmp_path, [0.3, 0.4, 0.5], storage=storage, n_trials=3, n_jobs=2)
    trials = optuna.load_study(study_name="s", storage=read_storage(storage)).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.value for t in trials] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert len({t.params["optimizer.lr"] for t in trials}) == 5, "each process draws its own values"


def read_storage(url: str):
    from mnist_pipeline.training.optuna_study import open_storage

    return open_storage(url)


def test_a_launch_that_is_interrupted_fails_its_trials_and_raises(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, [], raises=KeyboardInterrupt(), storage=storage, n_trials=3, n_jobs=2)
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL], "no trial left RUNNING, none launched after"


def _dead_process() -> tuple[str, str]:
    """(pid, start time) of a process that has ended."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return str(proc.pid), f"{started:.2f}"


def test_trials_left_running_by_a_process_that_is_gone_become_fail(tmp_path):
    import socket

    from mnist_pipeline.tracking.runs import process_tags

    study = optuna.create_study(study_name="s", storage=read_storage(f"sqlite:///{tmp_path}/optuna.db"))
    pid, started = _dead_process()
    owners = {"gone": {"host": socket.gethostname(), "pid": pid, "pid_start_time": started},
              "alive": process_tags(),
              "elsewhere": {"host": "another-host", "pid": pid, "pid_start_time": started},
              "unknown": {}}
    numbers = {}
    for name, attrs in owners.items():
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        numbers[name] = trial.number
    assert fail_abandoned_trials(study, None) == [numbers["gone"]]
    states = {name: study.get_trials()[n].state for name, n in numbers.items()}
    assert states == {"gone": TrialState.FAIL, "alive": TrialState.RUNNING, "elsewhere": TrialState.RUNNING,
                      "unknown": TrialState.RUNNING}


def test_the_search_space_grammar_of_hydra_optuna_sweeper():
    space = search_space({**SPACE, "model.width": "range(8, 32, 8)", "optimizer.momentum": "interval(0.0, 0.9)",
                          "trainer.max_steps": "interval(10, 20)", "seed": "7"}, ["+extra=a", "optimizer.lr=0.2"])
    d = space.distributions
    assert d["data.batch_size"] == CategoricalDistribution([32, 64, 128, 256])
    assert d["model.width"] == IntDistribution(8, 32, step=8)
    assert d["optimizer.momentum"] == FloatDistribution(0.0, 0.9)
    assert d["trainer.max_steps"] == FloatDistribution(10.0, 20.0), "Hydra's interval is a float range"
    assert "optimizer.lr" not in d, "the command line's plain value wins over the searched one"
    assert space.fixed == {"seed": "seed=7", "+extra": "+extra=a", "optimizer.lr": "optimizer.lr=0.2"}
    assert search_space(SPACE).distributions["optimizer.lr"] == FloatDistribution(0.01, 1.0, log=True)


@pytest.mark.parametrize(("change", "named"), [
    ({"direction": "up"}, "hydra.sweeper.direction=up"),
    ({"direction": ["maximize", "minimize"]}, "hydra.sweeper.direction="),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0"),
    ({"n_jobs": "two"}, "hydra.sweeper.n_jobs=two"),
    ({"params": {"optimizer.lr": "tag(log, interval(0, 1.0))"}}, "hydra.sweeper.params.optimizer.lr"),
    ({"params": {"optimizer.lr": "interval(0.1"}}, "hydra.sweeper.params.optimizer.lr"),
    ({"sampler": {"_target_": "optuna.samplers.NoSuchSampler"}}, "hydra.sweeper.sampler"),
])
def test_bad_settings_are_one_line_naming_the_key(change, named):
    with pytest.raises(ConfigError) as refused:
        read_settings({**_settings(None), **change})
    assert named in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db", "garbage", "journal:///nonexistent/dir/x.log"])
def test_a_storage_that_cannot_be_opened_is_one_line(url):
    from mnist_pipeline.training.optuna_study import open_storage

    with pytest.raises(ConfigError) as refused:
        open_storage(url)
    message = str(refused.value)
    assert message.startswith(f"hydra.sweeper.storage={url}: cannot open") and "\n" not in message
    assert not os.path.exists("/nonexistent")


def test_hydra_finds_the_sweeper_that_hparams_search_selects():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from mnist_pipeline.config import compose

    cfg = compose(["hparams_search=optuna"], with_hydra=True)
    assert cfg.hydra.sweeper._target_ == SWEEPER_TARGET
    assert SWEEPER_TARGET in {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    job_folder = OmegaConf.to_container(cfg.hydra.sweep)["subdir"]
    assert cfg.hydra.sweeper.direction == "maximize" and job_folder == "${sweep.optuna_trial}"


def test_a_study_that_exists_with_the_other_direction_is_refused(tmp_path):
    from mnist_pipeline.training.optuna_study import check_study, open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    check_study(storage, "s", "maximize")
    check_study(storage, "another", "minimize")
    with pytest.raises(ConfigError, match=r"hydra.sweeper.direction=minimize: the study 's' .* made to maximize"):
        check_study(storage, "s", "minimize")


def test_a_study_that_searched_a_key_another_way_is_refused(tmp_path):
    """Optuna refuses a changed choice() at the first ask, after the sweep's parent run exists: the
    check before anything runs names the key instead."""
    from mnist_pipeline.training.optuna_study import check_study, open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.ask({"data.batch_size": CategoricalDistribution([32, 64])})
    check_study(storage, "s", "maximize", {"data.batch_size": CategoricalDistribution([32, 64])})
    check_study(storage, "s", "maximize", {"optimizer.lr": FloatDistribution(0.01, 1.0, log=True)})
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.data.batch_size: the study 's' searched it as "):
        check_study(storage, "s", "maximize", {"data.batch_size": CategoricalDistribution([32, 128])})
