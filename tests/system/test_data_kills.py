"""Data is never half-written: `fetch` and `split` killed with SIGKILL at random moments (10 kills,
seeded, spread over each command's duration) leave in their folder only complete, verified files
(and hidden `.*.part` temp files, which the next run removes); running the stages again then
finishes with the right data and no temp file left."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.data.fetch import CANONICAL, verified
from support import MNIST, ROOT

pytestmark = pytest.mark.timeout(180)

KILLS = 10
SPLIT_SIZES = {"train.npz": 55_000, "val.npz": 5_000, "test.npz": 10_000}
TEMP = re.compile(r"^\..+\.part$")


def _fetch_cmd(source: Path, raw: Path) -> list[str]:
    return [*MNIST, "fetch", "data.fetch.sources=[local]",
            f"data.fetch.source_dir={source}", f"paths.raw_dir={raw}"]


def _split_cmd(raw: Path, processed: Path) -> list[str]:
    return [*MNIST, "split", f"paths.raw_dir={raw}", f"paths.processed_dir={processed}"]


def _run(cmd: list[str]) -> float:
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.monotonic() - started


def _kill_after(cmd: list[str], delay: float) -> int:
    """Start `cmd`, SIGKILL it `delay` s later (if still running); its exit code."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _temps_and_files(folder: Path) -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    hidden = [n for n in names if n.startswith(".")]
    assert all(TEMP.match(n) for n in hidden), f"an unexpected hidden file: {hidden}"
    return hidden, [n for n in names if not n.startswith(".")]


def _check_raw(raw: Path) -> tuple[list[str], list[str]]:
    temps, files = _temps_and_files(raw)
    for name in files:
        assert name in CANONICAL, f"unexpected file {name} in {raw}"
        assert verified(raw / name, CANONICAL[name]), f"{name} is present but not complete and verified"
    return temps, files


def _check_processed(processed: Path, reference: Path) -> tuple[list[str], list[str]]:
    temps, files = _temps_and_files(processed)
    for name in files:
        assert name in SPLIT_SIZES, f"unexpected file {name} in {processed}"
        with np.load(processed / name, allow_pickle=False) as npz:
            n = SPLIT_SIZES[name]
            assert npz["images"].shape == (n, 28, 28) and npz["labels"].shape == (n,) and npz["index"].shape == (n,)
        assert (processed / name).read_bytes() == (reference / name).read_bytes(), f"{name} is not the full split"
    return temps, files


def test_killing_fetch_and_split_at_random_moments_never_leaves_a_partial_file(real_mnist_raw, tmp_path):
    # A clean run of each stage: the reference outputs, and how long each command takes.
    reference_raw, reference_processed = tmp_path / "ref" / "raw", tmp_path / "ref" / "processed"
    durations = {"fetch": _run(_fetch_cmd(real_mnist_raw, reference_raw)),
                 "split": _run(_split_cmd(reference_raw, reference_processed))}
    # The interpreter and the imports (what `--help` costs), before any file is touched.
    startup = {name: min(_run([*MNIST, name, "--help"]), durations[name] / 2)
               for name in durations}
    assert _check_raw(reference_raw) == ([], sorted(CANONICAL))
    assert _check_processed(reference_processed, reference_processed) == ([], sorted(SPLIT_SIZES))

    raw, processed = tmp_path / "raw", tmp_path / "processed"
    stages = {
        "fetch": (lambda: _fetch_cmd(real_mnist_raw, raw), lambda: _check_raw(raw), raw, len(CANONICAL)),
        "split": (lambda: _split_cmd(reference_raw, processed),
                  lambda: _check_processed(processed, reference_processed), processed, len(SPLIT_SIZES)),
    }
    rng = random.Random(20240607)
    per_stage = KILLS // len(stages)
    kills = {name: 0 for name in stages}
    observed = []
    for _attempt in range(3 * KILLS):
        name = min(kills, key=kills.get)  # alternate: the stage with fewer kills so far
        if kills[name] == per_stage:
            break
        cmd, check, folder, n_outputs = stages[name]
        # Stratified over the part of the command's duration that does the work: the stage's k-th
        # kill lands in the k-th fifth of it.
        delay = startup[name] + (durations[name] - startup[name]) * (kills[name] + rng.random()) / per_stage
        code = _kill_after(cmd(), delay)
        temps, files = check()
        observed.append((name, round(delay, 3), code, len(temps), len(files)))
        if code == -signal.SIGKILL:
            kills[name] += 1
        else:  # it finished first (a faster run than the measured one): aim a little earlier
            assert code == 0
            durations[name] *= 0.85
        if len(files) == n_outputs:  # it got to the end: give the next kill a whole run to hit
            for file in files:
                (folder / file).unlink()

    assert sum(kills.values()) == KILLS, f"{KILLS} kills mid-run: {observed}"
    assert any(code and (n_temps or 0 < n_files < stages[name][3]) for name, _, code, n_temps, n_files in observed), \
        f"no kill landed while a stage was writing: {observed}"

    # The next `dvc repro`: both stages again, from whatever the kills left.
    _run(_fetch_cmd(real_mnist_raw, raw))
    _run(_split_cmd(raw, processed))
    assert _check_raw(raw) == ([], sorted(CANONICAL)), "the next run removes the temp files"
    assert _check_processed(processed, reference_processed) == ([], sorted(SPLIT_SIZES))
