"""Every run records the machine's use (MLflow's SystemMetricsMonitor, started by us: runs made by
the client get none otherwise), at least one sample however short the run; `logger.system_metrics`
is run control, not a param, and false turns them off."""

from __future__ import annotations

from support import compose, store_runs, tiny_overrides

KEYS = ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes")


def test_a_short_run_has_a_sample_of_each_system_metric(tiny_run):
    for key in KEYS:
        history = tiny_run.client.get_metric_history(tiny_run.run_id, key)
        assert len(history) >= 1, key
        assert all(m.value >= 0 for m in history)
    assert not any(k.startswith("logger.system_metrics") for k in tiny_run.run.data.params)


def test_system_metrics_false_records_none(processed, tmp_path):
    from mnist_pipeline.training.train import train

    store = tmp_path / "mlruns"
    train(compose(*tiny_overrides(processed, store, tmp_path / "out"), "trainer.max_steps=3",
                  "logger.system_metrics=false"))
    (run,) = store_runs(store)
    assert run.info.status == "FINISHED"
    assert not [k for k in run.data.metrics if k.startswith("system/")]
