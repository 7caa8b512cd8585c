"""The `mnist` command: one entry point, its help, its errors, and the store named the same way
everywhere."""

from __future__ import annotations

import subprocess

import pytest

from support import MNIST, mnist, store_client, tiny_overrides

COMMANDS = ("train", "fetch", "split", "compare", "promote", "predict", "evaluate", "serve", "ui", "server", "runs", "bench")


def test_help_lists_every_command_one_line_each():
    result = mnist("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("commands:\n")[1].splitlines()]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_own_help(command):
    result = mnist(command, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"mnist {command}" in result.stdout and "Traceback" not in result.stderr


def test_an_unknown_command_prints_the_list_and_exits_2():
    result = mnist("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr and "  predict " in result.stderr
    assert mnist().returncode == 2


def test_the_experiment_is_named_the_same_way_for_training_and_the_other_commands(processed, tmp_path):
    """$MLFLOW_EXPERIMENT_NAME for both; conf/logger/mlflow.yaml's default otherwise."""
    store = tmp_path / "mlruns"
    env = {"MLFLOW_EXPERIMENT_NAME": "team-a"}
    trained = mnist("train", *tiny_overrides(processed, store, tmp_path / "out"), "trainer.max_steps=5", env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    client = store_client(store)
    names = [e.name for e in client.search_experiments()]
    assert "team-a" in names and "mnist" not in names
    uri = f"sqlite:///{store}/mlflow.db"
    listed = mnist("runs", "list", "--tracking-uri", uri, env=env)
    assert listed.returncode == 0 and "0 RUNNING run(s) in 'team-a'" in listed.stdout
    default = mnist("runs", "list", "--tracking-uri", uri)
    assert default.returncode == 1 and default.stderr.startswith("error: no experiment 'mnist' in this store")
    flag = mnist("runs", "list", "--tracking-uri", uri, "--experiment", "team-a")
    assert flag.returncode == 0


def test_a_reader_that_closes_the_pipe_ends_it_quietly(tiny_run, tmp_path):
    """`mnist predict --json ... | head -1`: the rest of the output has nowhere to go."""
    from PIL import Image

    picture = tmp_path / "digit.png"
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (10, 4, 16, 24))
    image.save(picture)
    files = " ".join([str(picture)] * 400)  # ~150 KB of JSON: more than a pipe holds
    ckpt = tiny_run.out / "checkpoints" / "best.ckpt"
    command = f"{MNIST[0]} predict --json --ckpt {ckpt} {files} | head -1; echo \"exit ${{PIPESTATUS[0]}}\""
    result = subprocess.run(command, shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == ["[", "exit 141"]
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
