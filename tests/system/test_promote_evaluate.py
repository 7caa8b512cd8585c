"""The model registry (`promote`, `compare --promote`), finding models, and `evaluate`."""

from __future__ import annotations

import os
import re
import threading

import pytest
import torch
from PIL import Image

from mnist_pipeline.serving import compare, evaluate, predict, promote

SWEEP = "sweep 2024-01-01 00:00:00 optimizer.lr=0.05,0.15"


class FakeStore:
    """Runs with chosen val_full/acc, each with an (untrained) logged model unless said otherwise:
    a 0.80, b 0.90 (the best FINISHED with a model), failed 0.95 (FAILED), no_model 0.99 (FINISHED,
    no model), and a sweep (the newest) of e 0.85 and f 0.70."""

    def __init__(self, tmp):
        import mlflow
        from mlflow.tracking import MlflowClient

        from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
        from mnist_pipeline.tracking.logged_model import log_model
        from mnist_pipeline.tracking.store import ensure_experiment

        self.uri = f"sqlite:///{tmp}/mlflow.db"
        self.client = MlflowClient(self.uri)
        experiment_id = ensure_experiment(self.uri, "mnist")
        mlflow.set_tracking_uri(self.uri)
        self.ids = {}

        def run(name, acc, status="FINISHED", model=True, tags=None):
            run_id = self.client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id
            self.client.log_metric(run_id, "val_full/acc", acc)
            self.client.log_metric(run_id, "val/acc", acc, step=5)
            if model:
                log_model(run_id, TfjsCNN(), {"name": "tfjs_cnn", "settings": {}})
            self.client.set_terminated(run_id, status)
            self.ids[name] = run_id

        run("a", 0.80)
        run("b", 0.90)
        run("failed", 0.95, status="FAILED")
        run("no_model", 0.99, model=False)
        parent = self.client.create_run(experiment_id, run_name=SWEEP, tags={"sweep": SWEEP,
                                                                              "swept_keys": "optimizer.lr"})
        for name, acc, lr in (("e", 0.85, "0.05"), ("f", 0.70, "0.15")):
            run(name, acc, tags={"mlflow.parentRunId": parent.info.run_id, "sweep": SWEEP})
            self.client.log_param(self.ids[name], "optimizer.lr", lr)
        self.client.set_terminated(parent.info.run_id, "FINISHED")

    def champion(self, name):
        return self.client.get_model_version_by_alias(name, "champion")

    def name_of(self, run_id):
        return {v: k for k, v in self.ids.items()}[run_id]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FakeStore:
    return FakeStore(tmp_path_factory.mktemp("fake_store"))


def _error(capsys_or_exc) -> str:
    message = str(capsys_or_exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_no_champion_yet_says_so_then_promote_makes_one(store, tmp_path, capsys):
    picture = tmp_path / "digit.png"
    image = Image.new("L", (40, 40), 0)
    image.paste(255, (15, 5, 25, 35))
    image.save(picture)

    assert predict.main(["--tracking-uri", store.uri, str(picture)]) == 0
    err = capsys.readouterr().err
    assert "note: 'mnist-cnn' has no champion yet" in err
    assert f"model: run 'b' ({store.ids['b']}" in err, "the best FINISHED run with a model"

    promote.main(["--tracking-uri", store.uri])
    out = capsys.readouterr().out
    assert f"best of sweep {SWEEP!r}: run 'e'" in out, "by default: the newest sweep's best point"
    assert "registered as new version 1 of 'mnist-cnn'; alias 'champion' moved to it (was: none)" in out
    assert store.champion("mnist-cnn").run_id == store.ids["e"]

    assert predict.main(["--tracking-uri", store.uri, str(picture)]) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and f"model: mnist-cnn@champion (version 1, run 'e' ({store.ids['e']}" in err


def test_promote_picks_what_was_asked_for_and_reuses_versions(store, capsys):
    name = ["--tracking-uri", store.uri, "--model-name", "choices"]
    steps = [(["--all"], "b", "1", "registered as new version 1", "(was: none)"),
             (["--run", store.ids["a"]], "a", "2", "registered as new version 2", "(was: version 1)"),
             (["--sweep", SWEEP], "e", "3", "registered as new version 3", "(was: version 2)"),
             (["--run", store.ids["b"]], "b", "1", "already registered as version 1", "(was: version 3)"),
             (["--all"], "b", "1", "already registered as version 1", "it was already the champion")]
    for flags, run, version, made, moved in steps:
        promote.main([*name, *flags])
        out = capsys.readouterr().out
        assert made in out and moved in out, out
        champion = store.champion("choices")
        assert (store.name_of(champion.run_id), str(champion.version)) == (run, version)
    assert len(store.client.search_model_versions("name = 'choices'")) == 3


@pytest.mark.parametrize(("flags", "message"), [
    (["--run", "FAILED_RUN"], "is FAILED: only FINISHED runs are promoted"),
    (["--run", "NO_MODEL_RUN"], "has no logged model"),
    (["--run", "deadbeef"], "no MLflow run 'deadbeef'"),
    (["--sweep", "no such sweep"], "no sweep named 'no such sweep'"),
    (["--experiment", "nope"], "no experiment 'nope'"),
])
def test_promote_refuses_with_one_line(store, flags, message):
    flags = [{"FAILED_RUN": store.ids["failed"], "NO_MODEL_RUN": store.ids["no_model"]}.get(f, f) for f in flags]
    with pytest.raises(SystemExit) as exc:
        promote.main(["--tracking-uri", store.uri, "--model-name", "refused", *flags])
    assert message in _error(exc)
    assert store.client.search_model_versions("name = 'refused'") == []


def test_promote_without_a_store_does_not_create_one(tmp_path):
    with pytest.raises(SystemExit) as exc:
        promote.main(["--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db"])
    assert "no MLflow store at" in _error(exc)
    assert not (tmp_path / "none").exists()


def test_concurrent_promotes_register_one_version(store):
    results, errors = [], []

    def go():
        try:
            results.append(promote.promote(store.uri, run_id=store.ids["a"], model_name="race"))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 3
    assert len(store.client.search_model_versions("name = 'race'")) == 1
    assert sum("registered as new version 1" in r for r in results) == 1


def test_compare_promote_registers_the_compared_sweeps_best(store, tmp_path, capsys):
    compare.main(["--tracking-uri", store.uri, "--out", str(tmp_path), "--promote", "--model-name", "compared"])
    out = capsys.readouterr().out
    assert f"best of sweep {SWEEP!r}: run 'e'" in out and "new version 1 of 'compared'" in out
    assert store.champion("compared").run_id == store.ids["e"]


def test_training_registers_nothing(trained_real):
    assert trained_real.registered_after_training == [], "only promote writes the registry"


# -- evaluate ----------------------------------------------------------------------------------------

def _report(out: str) -> tuple[float, float, list[list[str]]]:
    m = re.search(r"^test/loss (\S+)   test/acc (\S+)$", out, re.M)
    assert m, out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s*(\d|macro)\s", line)]
    return float(m[1]), float(m[2]), rows


def test_evaluate_a_run_reproduces_its_test_metrics(trained_real, capsys):
    evaluate.main(["--run", trained_real.run_id, "--tracking-uri", trained_real.uri,
                   "--processed-dir", str(trained_real.processed)])
    out = capsys.readouterr().out
    loss, acc, rows = _report(out)
    assert acc == pytest.approx(trained_real.metrics["test/acc"], abs=1e-4)
    assert loss == pytest.approx(trained_real.metrics["test/loss"], abs=1e-3)
    assert [r[0] for r in rows] == [*map(str, range(10)), "macro"]
    assert sum(int(r[4]) for r in rows[:10]) == int(rows[10][4]) == 10000
    for r in rows:
        assert all(0 <= float(v) <= 1 for v in r[1:4])
    assert "model: run 'tfjs_cnn lr=0.15 bs=64" in out and "most confused (true -> predicted" in out


def test_evaluate_the_champion_and_the_best_checkpoint_agree(champion_real, tmp_path, capsys):
    common = ["--processed-dir", str(champion_real.processed)]
    evaluate.main(["--tracking-uri", champion_real.uri, *common])
    champion_out = capsys.readouterr().out
    assert "model: mnist-cnn@champion (version 1" in champion_out
    best = champion_real.out / "checkpoints" / "best.ckpt"
    evaluate.main(["--ckpt", str(best), "--out", str(tmp_path), *common])
    ckpt_out = capsys.readouterr().out
    assert f"model: checkpoint {best}" in ckpt_out
    assert _report(ckpt_out)[1:] == _report(champion_out)[1:], "the logged model is the best checkpoint"
    for name in ("confusion_matrix.png", "confusion.csv", "most_confident_errors.png"):
        assert (tmp_path / "plots" / name).is_file()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_evaluate_refuses_bad_checkpoints_with_one_line(trained_real, tmp_path):
    best = (trained_real.out / "checkpoints" / "best.ckpt").read_bytes()
    marker = tmp_path / "code_ran"
    cases = {
        "missing.ckpt": (None, "no such checkpoint file"),
        "truncated.ckpt": (best[: len(best) // 2], "truncated or corrupt checkpoint file"),
        "text.ckpt": (b"hello\n", "truncated or corrupt checkpoint file"),
        "garbage.ckpt": (bytes(range(256)) * 4, "truncated or corrupt checkpoint file"),
        "evil.ckpt": ({"state_dict": _Evil(marker)}, "refused: it holds more than plain data"),
        "no_state.ckpt": ({"epoch": 1}, "no state_dict in it"),
        "wrong_shapes.ckpt": ({"state_dict": {"net.conv1.weight": torch.zeros(3)}},
                              "records no architecture and its weights fit none of this version's"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(SystemExit) as exc:
            evaluate.main(["--ckpt", str(path), "--processed-dir", str(trained_real.processed)])
        error = _error(exc)
        assert error.startswith(f"error: {path}") and message in error, error
    assert not marker.exists(), "a checkpoint never runs code"


def test_evaluate_unknown_run_or_missing_data_is_one_line(trained_real, tmp_path):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--run", "feedface", "--tracking-uri", trained_real.uri,
                       "--processed-dir", str(trained_real.processed)])
    assert "no MLflow run 'feedface'" in _error(exc)
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--run", trained_real.run_id, "--tracking-uri", trained_real.uri,
                       "--processed-dir", str(tmp_path)])
    assert "no test split" in _error(exc)
