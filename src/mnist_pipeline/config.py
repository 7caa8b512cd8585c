"""Where the project lives, where its config comes from, and composition for plain commands.

The project root is the folder holding `conf/` and `dvc.yaml`: the current directory or one of its
parents (so a DVC experiment's temporary copy uses its own files), else the checkout this package
was installed from. Relative paths in the config are taken from there.

Where the config comes from: `conf/`, composed by Hydra, except inside `dvc exp run`. There DVC
(with `hydra.enabled`) has just composed `conf/` plus the experiment's `-S` overrides into
`params.yaml`, and that file is the config. Under a plain `dvc repro`, `params.yaml` is rewritten
from `conf/` so that `dvc.lock` and `dvc exp show` record the values that actually ran.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig


class ConfigError(ValueError):
    """A bad setting, found before any work is done. Its message names the key and the fix."""


def _is_root(folder: Path) -> bool:
    return (folder / "conf" / "config.yaml").is_file() and (folder / "dvc.yaml").is_file()


def project_root() -> Path:
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_root(folder):
            return folder
    return Path(__file__).resolve().parents[2]


PARAMS_FILE = "params.yaml"


def in_dvc_experiment() -> bool:
    return bool(os.environ.get("DVC_EXP_NAME"))


def config_source() -> tuple[str, str]:
    """(folder, name) of the primary config: conf/config.yaml, or params.yaml in `dvc exp run`."""
    root = project_root()
    if in_dvc_experiment() and (root / PARAMS_FILE).is_file():
        return str(root), PARAMS_FILE.removesuffix(".yaml")
    return str(root / "conf"), "config"


def refresh_params_file() -> None:
    """Under a plain `dvc repro` stage, make params.yaml the composition of conf/ (see above)."""
    if not os.environ.get("DVC_STAGE") or in_dvc_experiment():
        return
    from omegaconf import OmegaConf

    from mnist_pipeline.atomic import write_text

    path = project_root() / PARAMS_FILE
    fresh = OmegaConf.to_container(compose(), resolve=True)  # conf/ (not in an experiment), as DVC writes it
    if not path.is_file() or OmegaConf.to_container(OmegaConf.load(path)) != fresh:
        write_text(path, OmegaConf.to_yaml(fresh))


def resolve_path(path: str | os.PathLike) -> Path:
    """A config path as an absolute one, relative paths taken from the project root."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else project_root() / path


def reports_dir(cfg: DictConfig, out_dir: Path) -> Path:
    """Where a run's metrics.json and plots go: `paths.reports_dir`, else the run's output folder."""
    return resolve_path(cfg.paths.reports_dir) if cfg.paths.reports_dir else out_dir


def compose(overrides: list[str] | None = None, with_hydra: bool = False) -> DictConfig:
    """The composed config, for stages run as plain commands (`mnist fetch key=value`, ...);
    `with_hydra`: with Hydra's own settings (`hydra.run.dir`, ...) under `hydra`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    folder, name = config_source()
    with initialize_config_dir(config_dir=folder, version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides or []), return_hydra_config=with_hydra)


def stage_main(run, argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run a stage's `run(cfg)` on the config composed from command-line overrides.

    A bad override or a `ConfigError` ends the process with one `error:` line on stderr and exit
    code 2; SIGTERM (DVC, schedulers, `kill`) unwinds like Ctrl-C, so temp files are cleaned up,
    and ends it with exit code 130.
    """
    import logging
    import signal

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = sys.argv[1:] if argv is None else argv
    module = sys.modules[run.__module__]
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog or 'python -m ' + run.__module__} [key=value ...]   (Hydra overrides of conf/)")
        print((module.__doc__ or "").strip())
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        refresh_params_file()
        run(compose(argv))
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; no partial file was left in place", file=sys.stderr)
        sys.exit(130)
