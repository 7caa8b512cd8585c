"""`mnist server` (what `make server` runs): a throwaway PostgreSQL cluster + basic-auth MLflow on a
free port; logins and permissions as training meets them; SIGTERM leaves nothing running.

Needs Debian's postgresql (and the `server` extra): `make test-system` installs both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from support import MNIST, ROOT, mnist, tiny_overrides
from support.servers import free_port
from support.team_server import ADMIN_PASSWORD, open_folder, start_server, stop

pytestmark = pytest.mark.system_packages


@pytest.fixture
def server(team_server):
    """(url, folder) of the session's team server, whose admin password came from the environment."""
    return team_server.url, team_server.folder


def family(proc: subprocess.Popen, folder: Path) -> list[int]:
    """PIDs of everything the server runs: its children (MLflow, uvicorn) and PostgreSQL's processes."""
    pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    postmaster = int((folder / "postgres" / "postmaster.pid").read_text().split()[0])
    return pids + [postmaster] + [c.pid for c in psutil.Process(postmaster).children(recursive=True)]


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def as_user(user: str, password: str) -> dict:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def test_a_request_without_credentials_gets_401(server):
    url, _ = server
    assert requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}).status_code == 401
    ok = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                      auth=("admin", ADMIN_PASSWORD))
    assert ok.status_code == 200


def test_training_as_admin_sends_runs_and_artifacts_through_the_server(server, processed, tmp_path):
    url, folder = server
    result = mnist("train", *tiny_overrides(processed, tmp_path / "unused", tmp_path / "out"),
                   f"logger.tracking_uri={url}", "logger.experiment_name=team", timeout=240,
                   env=as_user("admin", ADMIN_PASSWORD))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "unused").exists()
    from mlflow.tracking import MlflowClient

    os.environ.update(as_user("admin", ADMIN_PASSWORD))
    try:
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("team")
        (run,) = client.search_runs([experiment.experiment_id])
    finally:
        for key in as_user("", ""):
            os.environ.pop(key, None)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = {p.relative_to(folder / "artifacts").as_posix() for p in (folder / "artifacts").rglob("*") if p.is_file()}
    assert any(run.info.run_id in p and "/checkpoints/" in p and p.endswith(".ckpt") for p in stored), stored
    assert any(p.endswith("MLmodel") for p in stored), stored  # the logged model, proxied too


def _user_with_permission(url: str, user: str, password: str, experiment: str, permission: str) -> str:
    """A new experiment and a new user with `permission` on it (as the admin makes them); its id."""
    admin = ("admin", ADMIN_PASSWORD)
    api = f"{url}/api/2.0/mlflow"
    experiment_id = requests.post(f"{api}/experiments/create", json={"name": experiment}, auth=admin).json()[
        "experiment_id"]
    assert requests.post(f"{api}/users/create", json={"username": user, "password": password},
                         auth=admin).status_code == 200
    grant = {"username": user, "resource_type": "experiment", "resource_id": experiment_id, "permission": permission}
    assert requests.post(f"{url}/api/3.0/mlflow/users/permissions/grant", json=grant, auth=admin).status_code == 200
    return experiment_id


def _refused_line(url: str, processed, tmp_path, experiment: str, env: dict) -> str:
    """A training the server refuses: its one line (it must end non-zero with one line)."""
    result = mnist("train", *tiny_overrides(processed, tmp_path / "unused", tmp_path / "out"),
                   f"logger.tracking_uri={url}", f"logger.experiment_name={experiment}", timeout=120, env=env)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    print(line)
    return line


def test_a_read_only_user_is_refused_before_any_work(server, processed, tmp_path):
    url, _ = server
    admin = ("admin", ADMIN_PASSWORD)
    api = f"{url}/api/2.0/mlflow"
    experiment_id = _user_with_permission(url, "reader", "reader-password-123", "readonly-team", "READ")
    line = _refused_line(url, processed, tmp_path, "readonly-team", as_user("reader", "reader-password-123"))
    assert line.startswith("error: ") and "'reader'" in line and "'readonly-team'" in line and "403" in line
    assert not (tmp_path / "out").exists()
    runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment_id]}, auth=admin).json()
    assert runs.get("runs", []) == []


def test_an_editor_passes_the_write_probe_which_changes_nothing_and_trains(server, monkeypatch, processed, tmp_path):
    from mnist_pipeline.tracking.access import check_write_access

    url, _ = server
    admin = ("admin", ADMIN_PASSWORD)
    api = f"{url}/api/2.0/mlflow"
    experiment_id = _user_with_permission(url, "editor", "editor-password-123", "edited", "EDIT")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "editor")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "editor-password-123")
    check_write_access(url, "edited")  # no StoreError
    check_write_access(url, "not-created-yet")  # a missing experiment passes: training creates it
    found = requests.get(f"{api}/experiments/get", params={"experiment_id": experiment_id}, auth=admin).json()
    assert found["experiment"].get("tags", []) == []  # the probe changed nothing
    assert requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment_id]}, auth=admin).json() == {}
    result = mnist("train", *tiny_overrides(processed, tmp_path / "unused", tmp_path / "out"),
                   f"logger.tracking_uri={url}", "logger.experiment_name=edited", timeout=240,
                   env=as_user("editor", "editor-password-123"))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment_id]}, auth=admin).json()["runs"]
    assert run["info"]["status"] == "FINISHED"


def test_wrong_password_is_one_line_before_any_work(server, processed, tmp_path):
    url, _ = server
    line = _refused_line(url, processed, tmp_path, "team", as_user("admin", "not-the-password"))
    assert line.startswith("error: ") and "'admin'" in line and "401" in line
    assert not (tmp_path / "out").exists()
    anonymous = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    result = subprocess.run([*MNIST, "train", *tiny_overrides(processed, tmp_path / "unused", tmp_path / "out"),
                             f"logger.tracking_uri={url}", "logger.experiment_name=team"],
                            cwd=ROOT, env=anonymous, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    print(line)
    assert line.startswith("error: ") and "requires a login (401)" in line and "MLFLOW_TRACKING_USERNAME" in line
    sweep = mnist("train", "-m", *tiny_overrides(processed, tmp_path / "unused", None), "optimizer.lr=0.1,0.2",
                  f"logger.tracking_uri={url}", "logger.experiment_name=team", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  timeout=120, env=as_user("admin", "not-the-password"))
    assert sweep.returncode != 0
    (line,) = sweep.stderr.strip().splitlines()
    print(line)
    assert line.startswith("error: no sweep point was run: ") and "'admin'" in line and "401" in line
    assert not list((tmp_path / "sweep").glob("*/.hydra"))


def test_generated_password_is_private_sigterm_leaves_nothing_running_and_a_restart_keeps_the_data(tmp_path):
    folder, port = open_folder(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        proc, lines = start_server(folder / "server", port, env)
        try:
            password_file = folder / "server" / "admin_password"
            assert password_file.stat().st_mode & 0o777 == 0o600
            password = password_file.read_text().strip()
            output = "".join(lines)
            print(output)
            assert password not in output and f"see {password_file}" in output
            assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in output
            assert "MLFLOW_TRACKING_USERNAME=admin" in output
            created = requests.post(f"{api}/experiments/create", json={"name": "kept"}, auth=("admin", password))
            assert created.status_code == 200
            pids = family(proc, folder / "server")
            assert len(pids) >= 3  # mlflow, its uvicorn worker, the postmaster (and its helpers)
        finally:
            stop(proc)
        deadline = time.monotonic() + 20
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(pids) == [], [psutil.Process(p).cmdline() for p in alive(pids)]
        assert proc.returncode == 0
        # Second start on the same folder: the same cluster, users and password; SIGINT (Ctrl-C) stops it.
        proc, lines = start_server(folder / "server", port, {**env, "MLFLOW_AUTH_ADMIN_PASSWORD": "ignored-now-1234"})
        try:
            assert f"see {password_file}" in "".join(lines)
            found = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "kept"},
                                 auth=("admin", password))
            assert found.status_code == 200
            pids = family(proc, folder / "server")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(pids) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_the_postgres_user_cannot_enter_is_one_line(tmp_path):
    # pytest's tmp folders are closed to other users: PostgreSQL (run as `postgres`) cannot work there
    if os.geteuid() != 0:
        pytest.skip("as another user than root, PostgreSQL runs as that user")
    result = mnist("server", "--folder", str(tmp_path / "server"), "--port", str(free_port()), timeout=60)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    print(line)
    assert line.startswith("error: ") and "postgres user cannot enter" in line


def test_a_taken_port_is_one_line_before_postgres_starts(tmp_path):
    import socket

    folder = open_folder()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = mnist("server", "--folder", str(folder / "server"), "--port", str(port), timeout=60)
        assert result.returncode != 0
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and f"port {port}" in line and "taken" in line
        assert not (folder / "server").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = mnist("server", "--folder", str(tmp_path / "a-file" / "server"), "--port", str(free_port()), timeout=60)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    print(line)
    assert line.startswith("error: cannot write the server folder") and "a-file/server" in line


def test_eight_trainings_at_once_on_a_fresh_database_with_compare_running(server, processed, tmp_path):
    """Issue 15 point 3: 8 trainings start together against a fresh experiment of the PostgreSQL
    server (4 on their own, 4 as the points of a joblib sweep) while `compare` (of the sweep) and
    `runs list` read it; all finish, with complete histories, in one experiment."""
    from mlflow.tracking import MlflowClient

    url, _ = server
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "MLFLOW_EXPERIMENT_NAME": "eight-at-once"}
    steps = 10
    common = [o for o in tiny_overrides(processed, tmp_path, None)
              if not o.startswith(("logger.", "trainer.max_steps="))] + [f"trainer.max_steps={steps}", "threads=1"]

    def start(name: str, *args: str) -> tuple[subprocess.Popen, object]:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        return subprocess.Popen([*MNIST, "train", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log

    trainings = [start(f"train{i}", *common, f"seed={i}", f"hydra.run.dir={tmp_path / f'run{i}'}") for i in range(4)]
    trainings.append(start("sweep", "-m", *common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "seed=4,5,6,7",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    not_yet = ("error: no experiment 'eight-at-once'", "error: no sweep in this experiment yet", "error: the sweep ")
    listed = compared = 0
    while any(p.poll() is None for p, _ in trainings):
        result = mnist("runs", "list", env=env, timeout=60)
        assert result.returncode == 0 or result.stderr.startswith(not_yet), result.stderr[-2000:]
        listed += result.returncode == 0
        result = mnist("compare", "--out", str(tmp_path / "compare"), env=env, timeout=60)
        assert result.returncode == 0 or result.stderr.startswith(not_yet), result.stderr[-2000:]
        compared += result.returncode == 0 and any(p.poll() is None for p, _ in trainings)
    for proc, log in trainings:
        log.close()
        assert proc.returncode == 0, Path(log.name).read_text()[-3000:]
    client = MlflowClient(url)
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    try:
        experiments = [e for e in client.search_experiments() if e.name == "eight-at-once"]
        assert len(experiments) == 1, "one experiment, however many created it at once"
        runs = client.search_runs([experiments[0].experiment_id])
        trained = [r for r in runs if not (r.data.tags.get("sweep") and "mlflow.parentRunId" not in r.data.tags)]
        assert len(runs) == 9 and len(trained) == 8 and all(r.info.status == "FINISHED" for r in runs)
        for run in trained:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == \
                list(range(1, steps + 1))
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
    print(f"8 trainings (4 alone, 4 sweep points) finished; during them `compare` answered {compared} times "
          f"and `runs list` ran {listed} times")
    assert compared >= 1, "compare answered while the trainings ran"
