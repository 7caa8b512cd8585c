"""The UI is local by default: what `make ui` starts listens on 127.0.0.1 only, and refuses requests
whose Host header names another site (DNS rebinding) or that come from another site's page."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess

import psutil
import pytest

from support import MNIST, ROOT
from support.servers import free_port, stop_ui, wait_until_up

pytestmark = pytest.mark.timeout(120)

API = "/api/2.0/mlflow/experiments/search?max_results=5"


def _request(port: int, path: str, host: str, method: str = "GET", body: dict | None = None,
             headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Host": host, "Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_make_ui_runs_the_local_only_command():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "mnist ui" in recipe
    assert "--host" not in recipe and "0.0.0.0" not in recipe


def test_ui_listens_on_loopback_only_and_refuses_foreign_hosts(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS", "MLFLOW_SERVER_DISABLE_SECURITY"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlruns/mlflow.db"  # not the repo's own store
    # What `make ui` runs, on a free port; its own session, so it and its workers stop together.
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*MNIST, "ui", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    family = []
    try:
        wait_until_up(proc, port)
        family = _family(proc.pid)

        # Nothing of it listens anywhere but 127.0.0.1.
        listening = [(c.laddr.ip, c.laddr.port) for p in family for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert (("127.0.0.1", port)) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        # ... and so no other address of this machine answers on its port.
        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                    with socket.socket() as s, pytest.raises(OSError):
                        s.settimeout(2)
                        s.connect((addr.address, port))

        # Its own address and localhost are served.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, body = _request(port, API, host)
            assert status == 200, (host, body[:200])
            assert "experiments" in json.loads(body)

        # A Host header naming another site (a DNS-rebinding page) is refused, on the API and the UI.
        for host in ("evil.example.com", f"evil.example.com:{port}", "mlflow.attacker.net"):
            for path in (API, "/"):
                status, body = _request(port, path, host)
                assert status == 403, (host, path, status, body[:200])

        # A state-changing call made by another site's page (its Origin) is refused too.
        status, _ = _request(port, "/api/2.0/mlflow/experiments/create", f"127.0.0.1:{port}", "POST",
                             {"name": "planted"}, {"Origin": "http://evil.example.com"})
        assert status == 403
        status, body = _request(port, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=planted",
                                f"127.0.0.1:{port}")
        assert status == 404, body[:200]
    finally:
        family = family or _family(proc.pid)
        stop_ui(proc)
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    printed = log.read_text()
    assert f"http://127.0.0.1:{port}/#/experiments/" in printed
