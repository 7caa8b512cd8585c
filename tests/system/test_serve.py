"""`make serve`: the champion behind `mlflow models serve`, answering what `predict` answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import psutil

from mnist_pipeline.serving import digits, predict
from support import MNIST, ROOT
from support.models import write_mnist_pngs
from support.servers import free_port

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def get(url: str, timeout: float = 2.0) -> int:
    with OPENER.open(url, timeout=timeout) as response:
        return response.status


def post_json(url: str, body: dict, timeout: float = 60.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with OPENER.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def stop_group(proc: subprocess.Popen, known: set[psutil.Process]) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            continue
        _, alive = psutil.wait_procs(list(known), timeout=10)
        if not alive:
            break


def test_make_serve_answers_what_predict_answers(champion_real, tmp_path, capsys):
    files = write_mnist_pngs(tmp_path / "pictures", champion_real.test_images, champion_real.test_labels, n=8)
    assert predict.main(["--json", "--tracking-uri", champion_real.uri, *[str(f) for f, _ in files]]) == 0
    expected = json.loads(capsys.readouterr().out)
    inputs = np.stack([digits.load(f) for f, _ in files])[:, None]  # (N, 1, 28, 28) in [0, 1]

    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the command sets it from --tracking-uri, as `make serve` from the repo
    proc = subprocess.Popen(
        [*MNIST, "serve", "--tracking-uri", champion_real.uri, "--port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    known: set[psutil.Process] = set()
    try:
        server = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            known |= {server, *server.children(recursive=True)}
            try:
                if get(f"http://127.0.0.1:{port}/ping") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "server did not come up: " + (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        cmdline = server.cmdline()
        assert cmdline[cmdline.index("-m") + 1 :][:2] == ["mlflow", "models"], "the command execs mlflow models serve"
        assert {"--env-manager", "local", "--host", "127.0.0.1", "models:/mnist-cnn@champion"} <= set(cmdline)
        known |= set(server.children(recursive=True))
        assert len(known) >= 2, "mlflow and the uvicorn server it started"

        # The README's lines, as written (but for the port): a request of two test digits, then curl.
        readme = (ROOT / "README.md").read_text()
        (example,) = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("mnist serve --example")]
        (curl,) = [line for line in readme.splitlines() if line.startswith("curl ") and "/invocations" in line]
        made = subprocess.run(f"{MNIST[0]} {example.removeprefix('mnist ')} --processed-dir {champion_real.processed}",
                              shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0 and made.stdout.startswith("wrote request.json: 2 test digits"), made.stderr
        curled = subprocess.run(curl.replace("5001", str(port)), shell=True, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert curled.returncode == 0, curled.stderr
        example_probs = np.asarray(json.loads(curled.stdout)["predictions"])
        assert example_probs.shape == (2, 10)
        assert example_probs.argmax(axis=1).tolist() == champion_real.test_labels[:2].tolist()

        answer = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": inputs.tolist()})
        served = np.asarray(answer["predictions"], dtype=np.float64)
        assert served.shape == (len(files), 10)
        mine = np.asarray([r["probabilities"] for r in expected])
        assert np.allclose(served, mine, atol=1e-5), np.abs(served - mine).max()
        assert served.argmax(axis=1).tolist() == [r["digit"] for r in expected]
        assert sum(d == label for d, (_, label) in zip(served.argmax(axis=1), files)) >= 7
    finally:
        stop_group(proc, known)
        log.close()
    assert proc.returncode is not None
    left = [p.pid for p in known if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"


def test_serve_without_a_champion_says_what_to_do(trained_real):
    result = subprocess.run([*MNIST, "serve", "--tracking-uri", trained_real.uri,
                             "--model-name", "never-promoted"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: 'never-promoted' has no champion yet: run "
                                     "`mnist promote` first")


def test_make_serve_target_runs_the_serve_command():
    # Run from `make test` too: a nested make must not add its "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "serve"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30, env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip().splitlines()[-1].strip() == "mnist serve"
