"""A tracking URI nobody answers, or a server that refuses the client: one line within 15 s, before
any work, from training and from the commands that read runs (not the MLflow client's ~4 minutes
of retries and a long traceback)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time

import pytest

from support import MNIST, ROOT, mnist, tiny_overrides

WITHIN_S = 15


@pytest.fixture(scope="module")
def silent_server():
    """A port that takes connections and never answers: a server hung, or a firewall's black hole."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def refusing_server():
    """A server that wants credentials this client does not have (401), as MLflow's basic-auth app."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _train_args(processed, tmp_path, uri: str) -> list[str]:
    """A tiny run whose store is the server at `uri`."""
    return [o for o in tiny_overrides(processed, tmp_path, tmp_path / "out") if not o.startswith("logger.")] + [
        f"logger.tracking_uri={uri}", f"hydra.run.dir={tmp_path / 'run'}"]


def _one_line(result, started: float) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < WITHIN_S
    return errors[0]


@pytest.mark.parametrize("server", ["silent_server", "closed_port"])
def test_training_against_no_server_is_one_line_before_any_work(processed, tmp_path, server, request):
    uri = request.getfixturevalue(server)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = mnist("train", *_train_args(processed, tmp_path, uri), timeout=60)
    line = _one_line(result, started)
    assert line.startswith(f"error: no MLflow server answers at {uri} (")
    assert line.endswith("start it (make server) or fix logger.tracking_uri (--tracking-uri) or MLFLOW_TRACKING_URI")
    if server == "silent_server":
        assert "no answer within 5 s" in line
    assert not run_dir.exists() and not (tmp_path / "out").exists(), "no output folder"


def test_a_sweep_against_no_server_runs_no_point(processed, tmp_path, silent_server):
    started = time.monotonic()
    result = mnist("train", "-m", f"paths.processed_dir={processed}", f"logger.tracking_uri={silent_server}",
                   "data.val_subset_size=100", "optimizer.lr=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=60)
    assert _one_line(result, started).startswith("error: no sweep point was run: no MLflow server answers at ")
    assert not (tmp_path / "sweep").exists()


def test_a_server_that_refuses_the_client_is_one_line(processed, tmp_path, refusing_server):
    started = time.monotonic()
    result = mnist("train", *_train_args(processed, tmp_path, refusing_server),
                   env={"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "wrong"}, timeout=60)
    line = _one_line(result, started)
    assert line == (f"error: the MLflow server {refusing_server} refused user 'alice' (401, wrong user name or "
                    "password): fix MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")


def test_the_commands_that_read_runs_say_it_in_one_line(silent_server, tmp_path):
    """compare, promote, runs list and predict, at once (each waits out the 5 s first contact)."""
    from PIL import Image

    digit = Image.new("L", (28, 28))
    digit.paste(255, (12, 6, 16, 22))  # a "1"
    digit.save(tmp_path / "digit.png")
    commands = [["compare"], ["promote"], ["runs", "list"], ["predict", str(tmp_path / "digit.png")]]
    started = time.monotonic()
    procs = [subprocess.Popen([*MNIST, *command, "--tracking-uri", silent_server], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for command in commands]
    for command, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=60)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert _one_line(result, started).startswith(f"error: no MLflow server answers at {silent_server} ("), command
