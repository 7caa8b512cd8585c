"""The team server (PostgreSQL + basic-auth MLflow, `mnist server`) goes away during training.

- Back within `logger.retry_s`: training neither stops nor slows (MLflow writes leave the training
  thread), and nothing is lost: FINISHED, every step logged once, validation points included.
- Still away when training ends: the model and checkpoints are there, the run's records are kept in
  its output folder, one line says so and the exit code is not 0; `mnist runs sync` sends them into
  the same run once the server is back, and syncing again sends nothing twice.
- Killed while its server was away: `resume=last` finishes the run with every point.

Needs Debian's postgresql (and the `server` extra): `make test-system` installs both."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from support import MNIST, ROOT, metric_steps, mnist
from support.team_server import ADMIN

pytestmark = pytest.mark.system_packages




def _args(processed, server, experiment: str, *extra: str) -> list[str]:
    return [f"paths.processed_dir={processed}", f"logger.tracking_uri={server.url}",
            f"logger.experiment_name={experiment}", *extra]


class Training:
    """`mnist train` in the background, its output in a log file; when each progress line appeared."""

    def __init__(self, args: list[str], log) -> None:
        self.log, self.seen = log, {}
        self.out = open(log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen([*MNIST, "train", *args], cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **ADMIN})

    def step(self) -> int:
        """The last step a progress line reported; notes when each one was first seen."""
        steps = [int(s) for s in re.findall(r"step (\d+)/", self.log.read_text())]
        now = time.monotonic()
        for s in steps:
            self.seen.setdefault(s, now)
        return max(steps, default=0)

    def wait_for_step(self, step: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.step() < step:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def watch(self, seconds: float) -> None:
        """Note progress for `seconds` (training must go on all along)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def wait(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out.close()
        return code


def _the_run(client, experiment: str):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def _rate(seen: dict[int, float], start: float, end: float) -> float:
    """Steps per second between the progress lines seen within [start, end]."""
    inside = sorted((t, s) for s, t in seen.items() if start <= t <= end)
    (t0, s0), (t1, s1) = inside[0], inside[-1]
    return (s1 - s0) / (t1 - t0)


def test_a_server_away_20_s_during_a_60_s_run_neither_stalls_it_nor_loses_a_point(team_server, processed, tmp_path):
    steps = 7000  # the tutorial preset (a validation every 5 steps, 1400 in all): ~60 s of training here
    training = Training(_args(processed, team_server, "outage-back", f"trainer.max_steps={steps}",
                              "data.val_subset_size=200", "progress_every_n_steps=100",
                              f"hydra.run.dir={tmp_path / 'run'}"), tmp_path / "log")
    training.wait_for_step(600)
    before = time.monotonic()
    training.watch(5)
    team_server.stop()
    away = time.monotonic()
    training.watch(20)
    away_s = time.monotonic() - away
    assert "MLflow write failed" in training.log.read_text(), "the writer met the outage"
    team_server.start()
    back = time.monotonic()
    assert training.wait() == 0, training.log.read_text()[-3000:]
    rate_before, rate_away = _rate(training.seen, before, away), _rate(training.seen, away + 1, back)
    with team_server.as_admin() as client:
        run = _the_run(client, "outage-back")
        train_steps = metric_steps(client, run.info.run_id, "train/loss")
        val_steps = metric_steps(client, run.info.run_id, "val/acc")
    print(f"server away {away_s:.1f} s (+{time.monotonic() - back:.0f} s to finish); {rate_before:.0f} steps/s "
          f"before, {rate_away:.0f} steps/s while away; trained {steps} steps, logged {len(train_steps)} "
          f"train/loss and {len(val_steps)} val/acc points; run {run.info.status}")
    assert away_s >= 20
    assert rate_away > 0.7 * rate_before, "training went on at its pace while the server was away"
    assert run.info.status == "FINISHED"
    assert train_steps == list(range(1, steps + 1)), "every step once"
    assert val_steps == list(range(5, steps + 1, 5)), "every validation point once"
    assert "test/acc" in run.data.metrics


def test_a_server_still_away_at_the_end_keeps_the_records_until_runs_sync(team_server, processed, tmp_path):
    steps, out = 600, tmp_path / "run"
    training = Training(_args(processed, team_server, "outage-lost", f"trainer.max_steps={steps}", "logger.retry_s=5",
                              "trainer.val_check_interval=50", "data.val_subset_size=100",
                              "logger.flush_every_n_steps=20", "progress_every_n_steps=50", f"hydra.run.dir={out}"),
                        tmp_path / "log")
    try:
        training.wait_for_step(100)
        team_server.stop()
        started = time.monotonic()
        code = training.wait()
        ended_s = time.monotonic() - started
    finally:
        if team_server.proc.poll() is not None:
            team_server.start()
    last = training.log.read_text().strip().splitlines()[-1]
    print(f"server away from step ~100 to the end; training ended {ended_s:.0f} s later, exit {code}:\n{last}")
    assert code == 1
    assert last.startswith("error: training finished") and f"mnist runs sync {out}" in last
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    kept = out / "mlflow-unsent"
    assert (kept / "run.json").is_file() and (kept / "metrics.jsonl").is_file()
    shutil.copytree(kept, tmp_path / "kept-copy")
    with team_server.as_admin() as client:
        assert _the_run(client, "outage-lost").info.status == "RUNNING", "the server never heard the end"

    synced = mnist("runs", "sync", str(out), env=ADMIN, timeout=180)
    assert synced.returncode == 0, synced.stderr[-3000:]
    print(synced.stdout.strip())
    assert "sent " in synced.stdout and "the model" in synced.stdout and not kept.exists()
    with team_server.as_admin() as client:
        run = _the_run(client, "outage-lost")
        run_id = run.info.run_id
        histories = {k: metric_steps(client, run_id, k) for k in ("train/loss", "val/acc", "test/acc")}
        artifacts = {f.path for d in ("", "checkpoints", "reports") for f in client.list_artifacts(run_id, d or None)}
        models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert run.info.status == "FINISHED"
    assert histories["train/loss"] == list(range(1, steps + 1))
    assert histories["val/acc"] == list(range(50, steps + 1, 50))
    assert len(histories["test/acc"]) == 1
    assert {"config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "reports/metrics.json"} <= artifacts
    assert [str(m.status).endswith("READY") for m in models] == [True], "one model, logged from best.ckpt"

    again = mnist("runs", "sync", str(out), env=ADMIN)
    assert again.returncode == 0 and "nothing to send" in again.stdout
    shutil.copytree(tmp_path / "kept-copy", kept)  # the same records once more: the run holds them all
    twice = mnist("runs", "sync", str(out), env=ADMIN, timeout=180)
    assert twice.returncode == 0, twice.stderr[-3000:]
    print(twice.stdout.strip())
    assert "sent 0 metric points, 0 params, 0 tags, 0 artifacts, no model" in twice.stdout
    with team_server.as_admin() as client:
        assert {k: metric_steps(client, run_id, k) for k in histories} == histories, "nothing twice"
        assert len(client.search_logged_models(experiment_ids=[run.info.experiment_id])) == 1


def test_a_run_killed_while_its_server_was_away_resumes_with_every_validation_point(team_server, processed, tmp_path):
    steps, out = 1000, tmp_path / "run"
    args = _args(processed, team_server, "outage-resume", f"trainer.max_steps={steps}", "trainer.val_check_interval=50",
                 "data.val_subset_size=100", "logger.flush_every_n_steps=20", "progress_every_n_steps=50")
    training = Training([*args, f"hydra.run.dir={out}"], tmp_path / "log")
    try:
        training.wait_for_step(200)
        team_server.stop()
        training.watch(3)  # flushes fail and wait in the writer; validations and checkpoints go on
        training.proc.send_signal(signal.SIGKILL)
        assert training.wait() == -signal.SIGKILL
    finally:
        team_server.start()
    with team_server.as_admin() as client:
        run = _the_run(client, "outage-resume")
        held = metric_steps(client, run.info.run_id, "val/acc")
    import torch

    at = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    print(f"killed at step ~{training.step()} with the server away; checkpoint at step {at}; the server held "
          f"val/acc up to step {max(held, default=0)}")
    assert max(held, default=0) < at, "the server had missed validation points the checkpoint holds"
    resumed = mnist("train", *args, "resume=last", env=ADMIN, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with team_server.as_admin() as client:
        run = _the_run(client, "outage-resume")
        assert run.info.status == "FINISHED" and run.data.tags["resumed_at_step"] == str(at)
        assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, steps + 1))
        assert metric_steps(client, run.info.run_id, "val/acc") == list(range(50, steps + 1, 50))
