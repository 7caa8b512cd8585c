"""`mnist server`'s settings that need no PostgreSQL: where the admin password comes from and that
it stays private, a taken port refused before anything starts."""

from __future__ import annotations

import socket

import pytest

from mnist_pipeline.atomic import write_secret
from mnist_pipeline.tracking.server import AUTH_DB, PASSWORD_FILE, ServerError, admin_password, check_port_free


def test_without_the_variable_a_password_is_generated_once_with_mode_600(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    password, hint = admin_password(tmp_path)
    path = tmp_path / PASSWORD_FILE
    assert len(password) >= 20 and hint == f"see {path}"
    assert path.stat().st_mode & 0o777 == 0o600
    assert admin_password(tmp_path) == (password, hint)  # the next start reads the same one


def test_the_variable_on_the_first_start_is_used_and_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-environment")
    assert admin_password(tmp_path) == ("from-the-environment", "the value of $MLFLOW_AUTH_ADMIN_PASSWORD")
    assert not (tmp_path / PASSWORD_FILE).exists()
    (tmp_path / AUTH_DB).touch()  # the admin now exists: the hint says which value counts
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD")
    password, hint = admin_password(tmp_path)
    assert password is None and "first start" in hint and not (tmp_path / PASSWORD_FILE).exists()


def test_a_stored_password_wins_over_a_later_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    first, _ = admin_password(tmp_path)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "set-later")
    assert admin_password(tmp_path)[0] == first


def test_write_secret_is_mode_600_and_replaces_atomically(tmp_path):
    path = tmp_path / "secret"
    write_secret(path, "one")
    write_secret(path, "two")
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_taken_port_is_refused_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is taken"):
            check_port_free(port)
