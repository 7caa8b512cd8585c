"""The whole pipeline against the team server (`mnist server`: PostgreSQL + basic-auth MLflow),
unchanged: only MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are set.
A joblib sweep with its parent run, `compare`, `promote`, `predict` and `serve`; a `ddp_cpu` run;
`resume=last` after a SIGKILL. Checkpoints and models travel through the server (`mlflow-artifacts:`
URIs): the client never opens the artifact folder.

Needs Debian's postgresql (and the `server` extra): `make test-system` installs both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from support import FAULTY, MNIST, ROOT, metric_steps, mnist
from support.models import write_mnist_pngs
from support.servers import free_port, stop_ui

pytestmark = pytest.mark.system_packages




def _tiny(processed, *extra: str) -> list[str]:
    return [f"paths.processed_dir={processed}", "data.val_subset_size=100", "data.eval_batch_size=100",
            "trainer.max_steps=23", *extra]


def _serve(env: dict, port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen([*MNIST, "serve", "--port", str(port)], cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "mnist serve did not come up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)


def test_a_joblib_sweep_then_compare_promote_predict_and_serve(team_server, processed, tmp_path):
    env = {**os.environ, **team_server.client_env("team-sweep")}
    sweep = mnist("train", "-m", *_tiny(processed), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  "optimizer.lr=0.05,0.15", f"hydra.sweep.dir={tmp_path / 'sweep'}", env=env, timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    with team_server.as_admin() as client:
        experiment = client.get_experiment_by_name("team-sweep")
        runs = client.search_runs([experiment.experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        points = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert parent.info.status == "FINISHED" and len(points) == 2
        assert all(p.info.status == "FINISHED" for p in points)
        for point in points:
            assert point.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
            assert metric_steps(client, point.info.run_id, "train/loss") == list(range(1, 24))
            assert {f.path for f in client.list_artifacts(point.info.run_id, "checkpoints")} == \
                {"checkpoints/best.ckpt", "checkpoints/last.ckpt"}
        models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
        assert len(models) == 2 and all(m.artifact_location.startswith("mlflow-artifacts:") for m in models)

    compared = mnist("compare", "--out", str(tmp_path / "compare"), env=env, timeout=120)
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert all(p.info.run_name in compared.stdout for p in points)
    promoted = mnist("promote", env=env, timeout=180)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "models:/mnist-cnn@champion" in promoted.stdout

    test = np.load(processed / "test.npz")
    files = write_mnist_pngs(tmp_path / "pictures", test["images"], test["labels"], n=4)
    cache = {"MNIST_PIPELINE_CACHE": str(tmp_path / "cache")}  # the model's files come from the server
    predicted = mnist("predict", "--json", *[str(f) for f, _ in files], env={**env, **cache}, timeout=120)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    answers = json.loads(predicted.stdout)
    assert len(answers) == 4 and list((tmp_path / "cache" / "models").iterdir()), "downloaded through the server"

    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        serving = _serve(env, port, log)
        try:
            from mnist_pipeline.serving import digits

            inputs = np.stack([digits.load(f) for f, _ in files])[:, None]
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                             data=json.dumps({"inputs": inputs.tolist()}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                served = np.asarray(json.loads(answer.read())["predictions"])
        finally:
            stop_ui(serving)
    assert np.allclose(served, [a["probabilities"] for a in answers], atol=1e-5), "serve answers what predict does"


def test_a_ddp_cpu_run(team_server, processed, tmp_path):
    env = team_server.client_env("team-ddp")
    result = mnist("train", *_tiny(processed), "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'job'}", env=env,
                   timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    with team_server.as_admin() as client:
        (run,) = client.search_runs([client.get_experiment_by_name("team-ddp").experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
        assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, 24))
        assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} == \
            {"checkpoints/best.ckpt", "checkpoints/last.ckpt"}


def test_resume_last_after_a_sigkill(team_server, processed, tmp_path):
    env = team_server.client_env("team-resume")
    args = [*_tiny(processed), "trainer.max_steps=60", "trainer.deterministic=true"]
    crashed = mnist("train", *args, "model._target_=support.faulty.KillsItself", f"hydra.run.dir={tmp_path / 'job'}",
                    env={**env, **FAULTY, "KILL_AT_CALL": "37"}, timeout=240)
    assert crashed.returncode == -signal.SIGKILL
    resumed = mnist("train", *args, "model._target_=support.faulty.KillsItself", "resume=last",
                    env={**env, **FAULTY}, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with team_server.as_admin() as client:
        (run,) = client.search_runs([client.get_experiment_by_name("team-resume").experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["resumed_at_step"] == "35"
        assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, 61)), "no step missing or twice"
        assert metric_steps(client, run.info.run_id, "val/acc") == list(range(5, 61, 5))
