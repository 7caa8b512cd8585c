"""`mnist train [overrides]` (and `-m` sweeps): what happens before Hydra's command line starts.

- Under `dvc repro`, params.yaml is refreshed from conf/.
- A single run's inputs are checked (`checks.py`) before Hydra makes its output folder: a refusal
  leaves no folder, no log and no MLflow run. A sweep's points are checked by the sweep callback.
- DDP workers other than rank 0 get no output folder of their own.
- A resumed run's Hydra output goes to the run's own folder.

torchrun starts the workers of a DDP job as `python -m mnist_pipeline train ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_pipeline.config import ConfigError, compose, refresh_params_file, resolve_path

# Hydra flags after which nothing trains, and flags that name another config than conf/
NO_RUN = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--shell-completion", "-sc")
OTHER_CONFIG = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
SWEEP = ("-m", "--multirun")


def preflight(overrides: list[str]) -> list[str]:
    """Check a single run's inputs before Hydra starts; the overrides to add (a resumed run's folder)."""
    from omegaconf import OmegaConf

    from mnist_pipeline.training.checks import check_config, check_data, check_tracking, check_writable

    with_hydra = compose(overrides, with_hydra=True)
    cfg = OmegaConf.masked_copy(with_hydra, [k for k in with_hydra if k != "hydra"])  # the job's config
    check_config(cfg)
    check_data(cfg, resolve_path(cfg.data.processed_dir))
    check_tracking(cfg)
    if str(with_hydra.hydra.mode).endswith("MULTIRUN"):  # a preset that sweeps (hparams_search=optuna)
        return []
    extra = []
    run_dir = Path(with_hydra.hydra.run.dir)
    if cfg.resume is not None and not any(o.startswith("hydra.run.dir=") for o in overrides):
        from mnist_pipeline.training.resume import find

        run_dir = find(cfg).out_dir
        extra = [f"hydra.run.dir={run_dir}"]
    check_writable("hydra.run.dir", run_dir)
    if cfg.paths.output_dir:
        check_writable("paths.output_dir", resolve_path(cfg.paths.output_dir))
    if cfg.paths.reports_dir:
        check_writable("paths.reports_dir", resolve_path(cfg.paths.reports_dir))
    return extra


def cli(argv: list[str] | None = None, prog: str = "mnist train") -> None:
    from mnist_pipeline.training.launch import global_rank, under_launcher
    from mnist_pipeline.training.train import main

    argv = sys.argv[1:] if argv is None else list(argv)
    if global_rank() > 0:  # a DDP worker other than rank 0: no output folder, no log file of its own
        argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    elif not any(a.split("=")[0] in (*NO_RUN, *OTHER_CONFIG, *SWEEP) for a in argv) and not under_launcher():
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            refresh_params_file()
            argv += preflight(argv)
        except (ConfigError, HydraException, OmegaConfBaseException) as e:
            cause = f": {e.__cause__}" if e.__cause__ and str(e.__cause__) not in str(e) else ""
            sys.exit(f"error: {' '.join(f'{e}{cause}'.split())}")
    elif not any(a.split("=")[0] in NO_RUN for a in argv):
        refresh_params_file()
    sys.argv = [prog, *argv]  # Hydra reads its command line from sys.argv
    main()
