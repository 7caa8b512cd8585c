"""The tracking server goes away during training and comes back: training neither stops nor
stalls (metrics leave the training thread), and nothing is lost: the run ends FINISHED with every
step logged once, validation points included."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from support import MNIST, ROOT, metric_steps, store_client
from support.servers import free_port, stop_ui, wait_until_up


def _server(store, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
         "--default-artifact-root", str(store / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until_up(proc, port)
    return proc


def test_a_server_away_for_seconds_mid_training_loses_nothing(processed, tmp_path):
    store, port = tmp_path / "mlruns", free_port()
    store.mkdir()
    server = _server(store, port)
    steps = 1500
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        training = subprocess.Popen(
            [*MNIST, "train", f"paths.processed_dir={processed}", f"logger.tracking_uri=http://127.0.0.1:{port}",
             "data.val_subset_size=100", "data.eval_batch_size=100", f"trainer.max_steps={steps}",
             "trainer.val_check_interval=50", "logger.flush_every_n_steps=20", "progress_every_n_steps=100",
             f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "step 300/" not in log.read_text():  # training has begun, some points are sent
            assert training.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        stop_ui(server)
        went_away = time.monotonic()
        time.sleep(8)
        text = log.read_text()
        assert training.poll() is None, text[-3000:]
        assert "MLflow write failed" in text, "the writer met the outage"
        server = _server(store, port)
        print(f"server away {time.monotonic() - went_away:.1f} s")
        assert training.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if training.poll() is None:
            training.kill()
        stop_ui(server)
    client = store_client(store)
    run = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, steps + 1)), "every step once"
    assert metric_steps(client, run.info.run_id, "val/acc") == list(range(50, steps + 1, 50))
