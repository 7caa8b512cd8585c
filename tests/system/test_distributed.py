"""DDP on the CPU (gloo): same numbers as one process, one record per run, sweeps, nodes, failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from support import FAULTY, ROOT, mnist, store_client, store_runs, tiny_overrides
from support.servers import free_port


def _history(store: Path, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in store_client(store).get_metric_history(run_id, key)}


def _leftover_processes(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and proc.pid != os.getpid():
            found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def one_and_two(processed, tmp_path_factory):
    """The same 20-step run on 1 process and on 2 (trainer=ddp_cpu), each in its own store."""
    tmp = tmp_path_factory.mktemp("ddp")
    runs = {}
    for name, extra in (("one", []), ("two", ["trainer=ddp_cpu"])):
        store = tmp / name / "mlruns"
        args = [*tiny_overrides(processed, store, None), "trainer.max_steps=20",
                f"hydra.run.dir={tmp / name / 'job'}", *extra]
        result = mnist("train", *args, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        (run,) = store_runs(store)
        runs[name] = (store, run, tmp / name / "job")
    return runs


def test_two_processes_log_the_same_numbers_as_one(one_and_two):
    (s1, r1, _), (s2, r2, _) = one_and_two["one"], one_and_two["two"]
    assert (r1.data.params["world_size"], r2.data.params["world_size"]) == ("1", "2")
    assert (r1.data.params["threads"], r2.data.params["threads"]) == (str(os.cpu_count()), str(max(1, os.cpu_count() // 2)))
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        h1, h2 = _history(s1, r1.info.run_id, key), _history(s2, r2.info.run_id, key)
        assert sorted(h1) == sorted(h2), key
        assert all(abs(h1[s] - h2[s]) < 1e-3 for s in h1), (key, h1, h2)
    assert sorted(_history(s2, r2.info.run_id, "val/acc")) == [5, 10, 15, 20]
    for key in ("val_full/acc", "test/acc"):
        assert abs(r1.data.metrics[key] - r2.data.metrics[key]) < 1e-3


def test_a_ddp_run_is_one_folder_and_one_mlflow_run(one_and_two):
    store, run, job = one_and_two["two"]
    assert run.info.status == "FINISHED"
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (job / "metrics.json").is_file() and (job / ".hydra" / "config.yaml").is_file()
    assert len(store_runs(store)) == 1
    assert not list(ROOT.glob("*.log")), "no rank wrote a log file into the working directory"


def test_batch_must_split_evenly_across_processes(processed, tmp_path):
    result = mnist("train", *tiny_overrides(processed, tmp_path / "s", tmp_path / "o"),
                     "trainer=ddp_cpu", "data.batch_size=63")
    assert result.returncode != 0 and "does not split evenly across 2 processes" in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_sweep_of_ddp_jobs_is_one_job_and_one_run_per_point(processed, tmp_path):
    store, sweep = tmp_path / "mlruns", tmp_path / "sweep"
    args = tiny_overrides(processed, store, None)
    result = mnist("train", "-m", *args, "trainer.max_steps=10", "trainer=ddp_cpu",
                     "optimizer.lr=0.05,0.15", f"hydra.sweep.dir={sweep}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    runs = [r for r in store_runs(store) if "world_size" in r.data.params]  # the sweep's points
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.05", "0.15"]
    assert all(r.data.params["world_size"] == "2" and r.info.status == "FINISHED" for r in runs)
    for job in jobs:
        assert (sweep / job / "metrics.json").is_file()


def test_two_simulated_nodes_make_one_run(processed, tmp_path):
    store, job, cwd = tmp_path / "mlruns", tmp_path / "job", tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    args = tiny_overrides(processed, store, None)
    # The store exists before both nodes start, as a team's shared store would.
    from mnist_pipeline.tracking.store import ensure_experiment

    ensure_experiment(f"sqlite:///{store}/mlflow.db", "mnist")
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
             "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "mnist_pipeline", "train", *args,
             "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", "trainer.max_steps=10",
             f"hydra.run.dir={job}"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [n.communicate(timeout=180)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    (run,) = store_runs(store)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert (job / "metrics.json").is_file()
    assert list(cwd.iterdir()) == [], "rank 1 made no output folder of its own"


def test_a_failed_rank_fails_the_run_and_stops_every_process(processed, tmp_path):
    store = tmp_path / "mlruns"
    marker = str(tmp_path)
    args = tiny_overrides(processed, store, None)
    # The other rank is stopped, not left waiting for its peer: the whole run ends well within this.
    result = mnist("train", *args, "trainer=ddp_cpu", "model._target_=support.faulty.FailsOnRank1",
                   f"hydra.run.dir={tmp_path / 'job'}", timeout=120, env=FAULTY)
    assert result.returncode != 0
    assert "injected failure in rank 1" in result.stdout + result.stderr
    (run,) = store_runs(store)
    assert run.info.status == "FAILED"
    assert _leftover_processes(marker) == []
