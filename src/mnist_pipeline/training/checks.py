"""Every setting a typo can break, checked before any work is done: before an MLflow run, an output
folder or a training step exists. Also run by the sweep callback on every point of a sweep."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.config import ConfigError, resolve_path


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
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be a whole number, got {cfg.seed!r}")
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
