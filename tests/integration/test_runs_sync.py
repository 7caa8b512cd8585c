"""`mnist runs sync <output folder>`: what a run's server did not take (kept by `tracking.spool`) goes
into the same run, only what the run lacks; syncing twice sends nothing. (Against a real server that
goes away: tests/system/test_server_outage.py.)"""

from __future__ import annotations

import shutil
import time

from mlflow.entities import Metric

from mnist_pipeline.tracking.spool import Spool
from support import metric_steps, mnist, store_client


def test_sync_sends_what_the_run_lacks_once_and_a_second_sync_sends_nothing(tiny_run, tmp_path):
    store, out = tmp_path / "mlruns", tmp_path / "out"
    uri = f"sqlite:///{store}/mlflow.db"
    client = store_client(store)
    run_id = client.create_run(client.create_experiment("kept")).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("train/loss", 1.0, now, s) for s in (1, 2)])  # sent before the outage
    (out / "checkpoints").mkdir(parents=True)
    best = shutil.copy(tiny_run.out / "checkpoints" / "best.ckpt", out / "checkpoints" / "best.ckpt")
    (out / "metrics.json").write_text('{"test/acc": 0.5}\n')
    spool = Spool(out)
    spool.keep(run_id, uri, metrics=[Metric("train/loss", 1.0, now, s) for s in (2, 3, 4)])  # step 2: held already
    spool.keep(run_id, uri, metrics=[Metric("test/acc", 0.5, now, 4)], tags={"pruned_at_step": "4"},
               params={"extra": "1"}, artifacts=[(out / "metrics.json", "reports"), (best, "checkpoints")],
               model_checkpoint=best, status="FINISHED")
    shutil.copytree(spool.folder, tmp_path / "copy")

    first = mnist("runs", "sync", str(out), timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sent 3 metric points, 1 params, 1 tags, 2 artifacts, the model, and its final status" in first.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pruned_at_step"] == "4" and run.data.params["extra"] == "1"
    assert metric_steps(client, run_id, "train/loss") == [1, 2, 3, 4]
    assert {f.path for d in ("reports", "checkpoints") for f in client.list_artifacts(run_id, d)} == \
        {"reports/metrics.json", "checkpoints/best.ckpt"}
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert str(model.status).endswith("READY") and model.source_run_id == run_id
    assert not spool.folder.exists()

    again = mnist("runs", "sync", str(out))
    assert again.returncode == 0 and "nothing to send" in again.stdout
    shutil.copytree(tmp_path / "copy", spool.folder)  # the same records again: the run holds them all
    twice = mnist("runs", "sync", str(out), timeout=180)
    assert twice.returncode == 0 and "sent 0 metric points, 0 params, 0 tags, 0 artifacts, no model" in twice.stdout
    assert metric_steps(client, run_id, "train/loss") == [1, 2, 3, 4]
    assert len(client.search_logged_models(experiment_ids=[run.info.experiment_id])) == 1


def test_a_folder_with_nothing_kept_or_no_folder_at_all(tmp_path):
    (tmp_path / "run").mkdir()
    nothing = mnist("runs", "sync", str(tmp_path / "run"))
    assert nothing.returncode == 0 and "nothing to send" in nothing.stdout
    missing = mnist("runs", "sync", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith("error: no folder ") and "output_dir" in line
