"""The project's architectures, by name.

One module per architecture in this folder, named as its config in `conf/model/` (`tfjs_cnn.py`
and `conf/model/tfjs_cnn.yaml`); each defines `Net`, an `nn.Module` whose keyword arguments are the
settings in that yaml. A new architecture is one file here plus one yaml there.

Checkpoints and logged models record an architecture as `{"name": ..., "settings": {...}}`. The
name is looked up among the files of this folder and nothing else: a checkpoint is data, and never
chooses which code is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


class ArchitectureError(ValueError):
    """An unknown architecture name, or settings it does not take: a one-line message."""


def names() -> list[str]:
    """The architectures this version knows."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def net_class(name: str):
    known = names()
    if not isinstance(name, str) or name not in known:
        raise ArchitectureError(f"unknown architecture {name!r}: this version knows {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{name}").Net


def build(name: str, **settings: Any):
    """A new net of the architecture `name` (what `conf/model/*.yaml` instantiates)."""
    cls = net_class(name)
    try:
        return cls(**settings)
    except TypeError as e:
        raise ArchitectureError(f"architecture {name!r} does not take the settings {settings}: {e}") from None


def record(model_cfg) -> dict:
    """`{"name", "settings"}` of a `model` config, as plain containers (checkpoints hold no
    OmegaConf objects, so `torch.load(weights_only=True)` reads them)."""
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    settings = {k: v for k, v in plain.items() if k != "name" and not (k.startswith("_") and k.endswith("_"))}
    return {"name": plain.get("name"), "settings": settings}


def _fits(net, weights: dict) -> bool:
    own = net.state_dict()
    return own.keys() == weights.keys() and all(own[k].shape == weights[k].shape for k in own)


def identify(weights: dict) -> dict | None:
    """The record of the known architecture whose parameters have exactly these names and shapes
    (for checkpoints written before they recorded it), or None."""
    for name in names():
        cls = net_class(name)
        try:
            settings = cls.settings_from(weights) if hasattr(cls, "settings_from") else {}
        except (KeyError, IndexError, AttributeError):
            continue
        if _fits(build(name, **settings), weights):
            return {"name": name, "settings": settings}
    return None


def from_record(architecture: dict, weights: dict):
    """The net `architecture` names, with `weights` loaded (RuntimeError if they do not fit)."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("settings", {}), dict):
        raise ArchitectureError(f"unreadable architecture record {architecture!r}")
    net = build(architecture.get("name"), **architecture.get("settings", {}))
    net.load_state_dict(weights)
    return net
