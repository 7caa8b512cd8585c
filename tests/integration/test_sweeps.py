"""Hydra sweeps: one parent run per sweep, a child per point, failures recorded, in parallel too;
Optuna; `compare`; the MLflow server's REST API over the same store."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import psutil
import pytest

from support import metric_steps, mnist, store_client
from support.servers import start_ui, stop_ui


def _sweep_args(processed: Path, store: Path, sweep_dir: Path, *extra: str) -> list[str]:
    return ["-m", f"paths.processed_dir={processed}", f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
            "data.val_subset_size=100", "data.eval_batch_size=100", "trainer.max_steps=10",
            f"hydra.sweep.dir={sweep_dir}", *extra]


def _parent_and_children(store: Path):
    client = store_client(store)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    parents = [r for r in runs if "sweep" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(runs) == 1 + len(children), "every run of the sweep is a child of its parent"
    return parents[0], children


@pytest.fixture(scope="module")
def grid_sweep(processed, tmp_path_factory):
    """lr 0.05 / 1e20 (diverges at once) x batch 32 / 64, one after the other."""
    tmp = tmp_path_factory.mktemp("grid")
    store = tmp / "mlruns"
    result = mnist("train", *_sweep_args(processed, store, tmp / "sweep", "optimizer.lr=0.05,1e20",
                                                          "data.batch_size=32,64"), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return store, result


def test_sweep_points_are_children_of_one_parent_and_failures_are_counted(grid_sweep):
    store, result = grid_sweep
    parent, children = _parent_and_children(store)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["failed_points"] == "2" and parent.data.tags["swept_keys"] == "optimizer.lr,data.batch_size"
    points = {(r.data.params["optimizer.lr"], r.data.params["data.batch_size"]): r for r in children}
    assert sorted(points) == [("0.05", "32"), ("0.05", "64"), ("1e+20", "32"), ("1e+20", "64")]
    for (lr, bs), run in points.items():
        assert f"lr={float(lr):g} bs={bs}" in run.info.run_name
        assert run.data.tags["sweep"] == parent.data.tags["sweep"]
        if lr == "0.05":
            assert run.info.status == "FINISHED" and "val_full/acc" in run.data.metrics
        else:
            assert run.info.status == "FAILED" and run.data.tags["diverged_at_step"] == "2"
    # The parent says what happened: the swept values as params, the counts and the best point.
    assert parent.data.params == {"optimizer.lr": "0.05,1e20", "data.batch_size": "32,64"}
    assert {k: parent.data.metrics[k] for k in ("sweep/points", "sweep/failed_points", "sweep/pruned_points")} == \
        {"sweep/points": 4, "sweep/failed_points": 2, "sweep/pruned_points": 0}
    best = max((r for r in children if r.info.status == "FINISHED"), key=lambda r: r.data.metrics["val_full/acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["val_full/acc"] == best.data.metrics["val_full/acc"]
    assert "2 of 4 sweep points failed" in result.stdout + result.stderr
    table = result.stdout[result.stdout.index("best first by val_full/acc"):].splitlines()
    points = [row for row in table if row.startswith("tfjs_cnn lr=")]
    assert table[1].split()[:3] == ["run", "lr", "bs"] and len(points) == 4, "the sweep ends with compare's table"
    assert "FINISHED" in points[0] and "FAILED (diverged at step 2)" in points[-1]


def test_parallel_sweep_with_joblib_loses_nothing(processed, tmp_path):
    store = tmp_path / "mlruns"
    result = mnist("train", *_sweep_args(processed, store, tmp_path / "sweep", "hydra/launcher=joblib",
                                                          "hydra.launcher.n_jobs=2", "optimizer.lr=0.05,0.1,0.15,0.2"),
                     timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    parent, children = _parent_and_children(store)
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    client = store_client(store)
    for run in children:
        assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, 11))
        assert run.data.params["threads"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert parent.data.tags["failed_points"] == "0"


def test_optuna_searches_lr_and_batch_maximising_val_full_acc(processed, tmp_path):
    store, sweep_dir = tmp_path / "mlruns", tmp_path / "sweep"
    result = mnist("train", *_sweep_args(processed, store, sweep_dir, "hparams_search=optuna",
                                                          "hydra.sweeper.n_trials=3"), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = _parent_and_children(store)
    assert len(children) == 3
    best = max(children, key=lambda r: r.data.metrics["val_full/acc"])
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_value: {best.data.metrics['val_full/acc']}" in results
    assert len({r.data.params["optimizer.lr"] for r in children}) == 3
    assert sorted(r.data.tags["optuna_trial"] for r in children) == ["0", "1", "2"]
    assert {r.data.tags["optuna_study"] for r in children} == {"mnist-lr-batch"}
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2"], "a job's folder is its trial"


@pytest.mark.parametrize(("override", "named"), [("optimizer.lrr=0.1,0.2", "optimizer.lrr"),
                                                  ("optimizer.lr=abc,0.1", "optimizer.lr")])
def test_a_bad_sweep_fails_before_any_job(processed, tmp_path, override, named):
    store, sweep_dir = tmp_path / "mlruns", tmp_path / "sweep"
    result = mnist("train", *_sweep_args(processed, store, sweep_dir, override))
    assert result.returncode != 0
    assert "error: no sweep point was run" in result.stderr and named in result.stderr
    assert not store.exists() and not sweep_dir.exists()


def test_a_points_startup_counts_from_its_own_start(grid_sweep):
    """The points run one after the other in one process: only the first pays for the imports. Were
    start-up counted from the process's start, it would grow from point to point."""
    store, _ = grid_sweep
    _, children = _parent_and_children(store)
    timed = sorted((r for r in children if "perf/startup_s" in r.data.metrics), key=lambda r: r.info.start_time)
    startups = [r.data.metrics["perf/startup_s"] for r in timed]
    assert len(startups) == 2 and 0 < startups[1] < startups[0], startups


def test_compare_ranks_points_draws_and_logs_to_the_parent(grid_sweep, tmp_path):
    from mnist_pipeline.serving.compare import compare

    store, _ = grid_sweep
    text, pictures, parent_id, *_ = compare(f"sqlite:///{store}/mlflow.db", "mnist", None, str(tmp_path))
    lines = text.splitlines()
    assert lines[1].split()[:8] == ["run", "lr", "bs", "val_full/acc", "best", "val/acc", "test/acc", "steps/s"]
    body = lines[3:]
    assert len(body) == 4
    assert all("FINISHED" in line for line in body[:2]) and all("FAILED (diverged at step 2)" in line for line in body[2:])
    values = [float(line.split()[6]) for line in body[:2]]
    assert values == sorted(values, reverse=True)
    assert sorted(p.name for p in pictures) == ["val_acc_curves.png", "val_full_acc_heatmap.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pictures)
    logged = {a.path for a in store_client(store).list_artifacts(parent_id, "compare")}
    assert logged == {"compare/val_acc_curves.png", "compare/val_full_acc_heatmap.png"}


def test_compare_says_when_there_is_nothing_to_compare(grid_sweep, tmp_path):
    store, _ = grid_sweep
    unknown = mnist("compare", "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--sweep", "nope")
    assert unknown.returncode != 0 and "no sweep named 'nope'" in unknown.stderr
    empty = mnist("compare", "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db")
    assert empty.returncode != 0 and "no MLflow store" in empty.stderr
    assert not (tmp_path / "none").exists()


def test_ui_server_lists_the_sweep_runs_over_rest(grid_sweep):
    store, _ = grid_sweep
    proc, base = start_ui(store)
    try:
        experiment_id = store_client(store).get_experiment_by_name("mnist").experiment_id
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", method="POST",
                                         data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            runs = json.load(r)["runs"]
        children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
        assert len(children) == 4
        finished = [r for r in children if r["info"]["status"] == "FINISHED"]
        assert len(finished) == 2
        for run in finished:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert params["optimizer.lr"] == "0.05" and 0 <= metrics["val_full/acc"] <= 1
    finally:
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        stop_ui(proc)
    assert not [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_compare_ends_with_the_ui_compare_page_of_the_points(grid_sweep, tmp_path):
    import json
    from urllib.parse import unquote

    store, _ = grid_sweep
    result = mnist("compare", "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--out", str(tmp_path),
                   "--ui-url", "http://127.0.0.1:5055/")
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    prefix = "compared in the MLflow UI (make ui): http://127.0.0.1:5055/#/compare-runs?runs="
    assert last.startswith(prefix)
    runs, _, experiments = last.removeprefix(prefix).partition("&experiments=")
    parent, children = _parent_and_children(store)
    assert sorted(json.loads(unquote(runs))) == sorted(r.info.run_id for r in children)
    assert json.loads(unquote(experiments)) == [parent.info.experiment_id]


def test_a_sweep_over_seeds_compares_configs_by_mean_and_promotes_the_best_configs_best_seed(processed, tmp_path):
    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store}/mlflow.db"
    result = mnist("train", *_sweep_args(processed, store, tmp_path / "sweep", "seed=0,1", "optimizer.lr=0.05,0.15"),
                   timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    compared = mnist("compare", "--tracking-uri", uri, "--out", str(tmp_path / "compare"))
    assert compared.returncode == 0, compared.stderr[-3000:]
    text = compared.stdout
    assert "2 configs (lr) over seeds, best first by mean val_full/acc" in text
    configs = text[text.index("2 configs (lr)"):].splitlines()[3:5]
    assert all(" 2 " in row and "±" in row for row in configs), configs
    best_lr = configs[0].split()[0]
    promoted = mnist("promote", "--tracking-uri", uri)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert promoted.stdout.startswith(f"best of config lr={best_lr} of sweep "), promoted.stdout
    assert "n=2), its best seed" in promoted.stdout


def test_compare_of_a_sweep_whose_points_all_failed_says_so_and_prints_no_table(processed, tmp_path):
    store = tmp_path / "mlruns"
    result = mnist("train", *_sweep_args(processed, store, tmp_path / "sweep", "optimizer.lr=1e20,2e20"), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    compared = mnist("compare", "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--out", str(tmp_path / "c"))
    assert compared.returncode == 1 and compared.stdout == ""
    (line,) = compared.stderr.strip().splitlines()
    assert line.startswith("error: every point of the sweep ") and "FAILED (diverged at step 2)" in line
