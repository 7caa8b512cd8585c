"""Dependencies: no known-bad release installed, pinned or allowed. Lightning 2.6.2 and 2.6.3 were
withdrawn as malicious; torch before 2.10 has known vulnerabilities. `make test` runs this file, so
a venv holding any of them fails the test suite."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from support import ROOT

MIN_TORCH = Version("2.10")
BAD_LIGHTNING = {Version("2.6.2"), Version("2.6.3")}
LIGHTNING_DISTS = ("pytorch-lightning", "lightning")  # the same code is published under both names


def _installed(dist: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = Version(match.group(2))
    return pins


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(spec).name.lower(): Requirement(spec) for spec in project["dependencies"]}


def test_installed_torch_is_not_vulnerable():
    version = _installed("torch")
    assert version is not None
    assert Version(version.base_version) >= MIN_TORCH, \
        f"torch {version} has known vulnerabilities: install >= {MIN_TORCH}"


@pytest.mark.parametrize("dist", LIGHTNING_DISTS)
def test_installed_lightning_is_not_a_malicious_release(dist):
    version = _installed(dist)
    assert version not in BAD_LIGHTNING, f"{dist} {version} is a withdrawn, malicious release: reinstall the venv"


def test_lock_pins_a_safe_torch_and_lightning():
    pins = _lock()
    assert Version(pins["torch"].base_version) >= MIN_TORCH, f"requirements.lock pins torch {pins['torch']}"
    assert "pytorch-lightning" in pins
    for dist in LIGHTNING_DISTS:
        assert pins.get(dist) not in BAD_LIGHTNING, f"requirements.lock pins {dist} {pins[dist]}"


def test_pyproject_allows_no_bad_release():
    declared = _declared()
    torch = declared["torch"].specifier
    for old in ("2.5.1", "2.9.1"):
        assert not torch.contains(old), f"pyproject.toml allows a vulnerable torch ({old}): {torch}"
    lightning = declared["pytorch-lightning"].specifier
    for bad in BAD_LIGHTNING:
        assert not lightning.contains(str(bad)), f"pyproject.toml allows pytorch-lightning {bad}: {lightning}"
    if "lightning" in declared:
        assert not any(declared["lightning"].specifier.contains(str(bad)) for bad in BAD_LIGHTNING)
