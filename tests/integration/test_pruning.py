"""`sweep.prune=median`: a sweep point whose val/acc falls below the other points' median at the
same step stops there, ends FINISHED with its metrics so far and the tag `pruned_at_step`, and
ranks after the complete points; the good points train to the end. A bad rule is refused."""

from __future__ import annotations

import pytest

from support import metric_steps, mnist, store_client


def _sweep(processed, tmp_path, *extra: str):
    store, sweep_dir = tmp_path / "mlruns", tmp_path / "sweep"
    args = ["-m", f"paths.processed_dir={processed}", f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
            "data.val_subset_size=100", "data.eval_batch_size=100", "trainer.max_steps=20",
            f"hydra.sweep.dir={sweep_dir}", *extra]
    return mnist("train", *args, timeout=240), store, sweep_dir


@pytest.fixture(scope="module")
def pruned_sweep(processed, tmp_path_factory):
    """Two learning rates that learn, then one that cannot (1e-5): run one after the other, so the
    bad one has two points to be compared with from its first validation after the warm-up."""
    result, store, _ = _sweep(processed, tmp_path_factory.mktemp("pruning"), "sweep.prune=median",
                              "optimizer.lr=0.1,0.2,0.00001")
    assert result.returncode == 0, result.stderr[-3000:]
    client = store_client(store)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], "tags.mlflow.parentRunId != ''")
    return result, client, {r.data.params["optimizer.lr"]: r for r in runs}


def test_the_bad_point_stops_at_the_first_validation_after_the_warm_up(pruned_sweep):
    _, client, points = pruned_sweep
    bad = points["1e-05"]
    assert bad.info.status == "FINISHED"
    assert bad.data.tags["pruned_at_step"] == "5", "warm-up: a quarter of trainer.max_steps=20"
    assert metric_steps(client, bad.info.run_id, "val/acc") == [5]
    assert metric_steps(client, bad.info.run_id, "train/loss") == list(range(1, 6))
    assert {"val_full/acc", "test/acc", "perf/pruning_s"} <= set(bad.data.metrics), "evaluated with its best checkpoint"
    for lr in ("0.1", "0.2"):
        good = points[lr]
        assert good.info.status == "FINISHED" and "pruned_at_step" not in good.data.tags
        assert metric_steps(client, good.info.run_id, "val/acc") == [5, 10, 15, 20]


def test_the_sweep_keys_and_the_device_are_tags_not_params(pruned_sweep):
    _, _, points = pruned_sweep
    for run in points.values():
        assert run.data.tags["prune"] == "median" and run.data.tags["prune_min_points"] == "2"
        assert not any(k.startswith("sweep.") for k in run.data.params), "resuming an older run is not refused"
        assert run.data.tags["device"] == "cpu"


def test_the_table_ranks_the_pruned_point_after_the_complete_ones(pruned_sweep):
    result, _, _ = pruned_sweep
    table = result.stdout[result.stdout.index("best first by val_full/acc"):].splitlines()
    points = [row for row in table if row.startswith("tfjs_cnn lr=")]
    assert [row.split()[1] for row in points][-1] == "lr=1e-05"
    assert points[-1].rstrip().endswith("pruned at step 5") and "FINISHED" in points[0]


def test_an_unknown_rule_is_refused_before_any_job(processed, tmp_path):
    result, store, sweep_dir = _sweep(processed, tmp_path, "sweep.prune=mean", "optimizer.lr=0.1,0.2")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: no sweep point was run: sweep.prune=mean: unknown pruning rule: use "
                      "sweep.prune=median, or null (off)"]
    assert not store.exists() and not sweep_dir.exists()


def test_an_optuna_trial_below_the_studys_median_is_pruned(processed, tmp_path):
    """Two sweeping processes, one after the other, on one study: the second one's only trial (a
    learning rate that cannot learn) is judged against the first one's trials (other parent runs,
    same study) and ends PRUNED in Optuna, FINISHED with `pruned_at_step` in MLflow."""
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path}/optuna.db"

    def search(lr: str, n_trials: int):
        result, store, _ = _sweep(processed, tmp_path, "hparams_search=optuna", f"hydra.sweeper.storage={storage}",
                                  "hydra.sweeper.study_name=pruning", f"hydra.sweeper.n_trials={n_trials}",
                                  "sweep.prune=median", f"hydra.sweeper.params={{optimizer.lr:'tag(log, interval({lr}))'}}")
        assert result.returncode == 0, result.stderr[-3000:]
        return store

    search("0.15, 0.2", 2)
    store = search("0.00001, 0.00002", 1)
    trials = optuna.load_study(study_name="pruning", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    client = store_client(store)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], "tags.optuna_trial = '2'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.tags["pruned_at_step"] == "5"
