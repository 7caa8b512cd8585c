"""Every input a typo or a broken machine can spoil, checked before any work is done: before an
MLflow run, an output folder or a training step exists. `mnist train` runs these before Hydra
starts; the sweep callback runs them on every point of a sweep; `train(cfg)` runs them too.
Each refusal is a ConfigError: one line naming the key or file and the fix."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.config import ConfigError, resolve_path

SEEDS = (0, 2**32 - 1)  # what numpy (and so Lightning's seed_everything) accepts


def _positive(cfg: DictConfig, key: str, kind: type = int) -> None:
    value = OmegaConf.select(cfg, key)
    ok_type = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value) or value <= 0:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{key} must be {what} > 0, got {value!r}: e.g. {key}={'64' if kind is int else '0.15'}")


def check_config(cfg: DictConfig) -> None:
    """Every setting a typo can break, checked before any work is done."""
    _positive(cfg, "optimizer.lr", float)
    for key in ("data.batch_size", "data.val_subset_size", "data.eval_batch_size", "trainer.max_steps",
                "trainer.val_check_interval"):
        _positive(cfg, key)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not SEEDS[0] <= cfg.seed <= SEEDS[1]:
        raise ConfigError(f"seed must be a whole number in {SEEDS[0]} .. {SEEDS[1]}, got {cfg.seed!r}: e.g. seed=0")
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if isinstance(devices, int) and isinstance(nodes, int) and cfg.data.batch_size % (devices * nodes):
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} does not split evenly across {devices * nodes} "
            "processes: make it a multiple of trainer.devices * trainer.num_nodes"
        )
    if cfg.ckpt_path is not None and not resolve_path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.resume is not None and cfg.ckpt_path is not None:
        raise ConfigError("give resume= (continue a run) or ckpt_path= (start from weights), not both")
    if cfg.resume is not None and not cfg.logger.enabled:
        raise ConfigError("resume= finds the run in MLflow: it needs logger=mlflow")
    check_sweep(cfg)
    check_device(cfg)


PRUNING_RULES = ("median",)


def check_sweep(cfg: DictConfig) -> None:
    """The `sweep.*` keys: an unknown pruning rule or warm-up stops the sweep before any job runs."""
    control = cfg.get("sweep") or {}
    prune = control.get("prune")
    if prune is not None and prune not in PRUNING_RULES:
        raise ConfigError(f"sweep.prune={prune}: unknown pruning rule: use sweep.prune=median, or null (off)")
    warmup = control.get("prune_warmup")
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ConfigError(f"sweep.prune_warmup must be a whole number of steps >= 0, or null, got {warmup!r}")
    if control.get("prune_min_points") is not None:
        _positive(cfg, "sweep.prune_min_points")


def check_device(cfg: DictConfig) -> None:
    """A GPU trainer on a machine whose torch sees no CUDA device."""
    if str(cfg.trainer.accelerator) not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu or trainer=ddp): no CUDA "
                          "device here: use trainer=cpu or trainer=ddp_cpu")


def check_data(cfg: DictConfig, processed_dir: Path) -> None:
    """The split files are whole (and, for the split stage's own folder, what dvc.lock recorded), and
    hold what the config asks of them."""
    from mnist_pipeline.data.integrity import check_splits

    sizes = check_splits(processed_dir)
    if cfg.data.batch_size > sizes["train"]:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training split "
                          f"({sizes['train']} images in {processed_dir}): e.g. data.batch_size=64")
    if cfg.data.val_subset_size > sizes["val"]:
        raise ConfigError(f"data.val_subset_size={cfg.data.val_subset_size} is larger than the val split "
                          f"({sizes['val']} images): e.g. data.val_subset_size={sizes['val']}")


def check_tracking(cfg: DictConfig) -> None:
    """On an MLflow server: the credentials are right and the user may write to the experiment
    (a 401 or a 403 found now, not after training)."""
    if not cfg.logger.enabled:
        return
    from mnist_pipeline.tracking.access import check_write_access
    from mnist_pipeline.tracking.store import StoreError, experiment_name, tracking_uri

    try:
        check_write_access(tracking_uri(cfg.logger.tracking_uri), experiment_name(cfg.logger.experiment_name))
    except StoreError as e:
        raise ConfigError(str(e)) from None


def check_writable(key: str, folder: str | os.PathLike) -> None:
    """`folder` can be made and written to: a temp file is written in it, or, while it does not
    exist yet, a temp folder in its nearest existing parent (so a refusal leaves nothing behind)."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(f"{probe_in} is a file, not a folder")
        with tempfile.TemporaryDirectory(dir=probe_in, prefix=".write-probe-") as probe:
            (Path(probe) / "probe").write_bytes(b"ok")
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f"{key}={folder}: cannot write there ({reason}): choose another folder") from None
