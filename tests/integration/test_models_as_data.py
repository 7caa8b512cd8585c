"""Models that are data: every run logs a `pt2` model plus a weights-only state dict and its
architecture's name; `predict` and `evaluate` load those without unpickling anything or importing
`mlflow.pytorch`; a pickled model of an older version is refused in one line, and
`mnist promote --relog` brings it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support import mnist, tiny_overrides
from support.payloads import touching

INPUTS = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)  # a batch of 3: not the example's 2


def _model_dir(client, model_id: str) -> Path:
    return Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def _checkpoint_probs(path: Path) -> np.ndarray:
    from mnist_pipeline.serving.registry import load_checkpoint

    with torch.inference_mode():
        return load_checkpoint(path)(torch.from_numpy(INPUTS)).numpy()


@pytest.fixture(scope="module")
def trained(processed, tmp_path_factory):
    """A short run in a store of its own (this module registers models in it)."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.training.train import train
    from support import compose

    tmp = tmp_path_factory.mktemp("models_as_data")
    train(compose(*tiny_overrides(processed, tmp / "mlruns", tmp / "out"), "trainer.max_steps=10"))
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    (model,) = client.search_logged_models([run.info.experiment_id])
    return {"tmp": tmp, "uri": uri, "client": client, "run_id": run.info.run_id, "model_id": model.model_id,
            "best": tmp / "out" / "checkpoints" / "best.ckpt"}


def test_a_run_logs_pt2_weights_and_the_architecture(trained):
    folder = _model_dir(trained["client"], trained["model_id"])
    assert (folder / "data" / "model.pt2").is_file() and not list(folder.rglob("*.pth"))
    assert json.loads((folder / "extra_files" / "architecture.json").read_text()) == {"name": "tfjs_cnn",
                                                                                       "settings": {}}
    weights = torch.load(folder / "extra_files" / "weights.pt", weights_only=True)
    best = torch.load(trained["best"], weights_only=True)["state_dict"]
    assert weights.keys() == {k.removeprefix("net.") for k in best if k.startswith("net.")}
    assert all(torch.equal(v, best[f"net.{k}"]) for k, v in weights.items()), "the best checkpoint's weights"
    mlmodel = (folder / "MLmodel").read_text()
    assert "signature:" in mlmodel and (folder / "serving_input_example.json").is_file()


def test_the_pt2_model_loads_with_pickles_refused_and_without_this_package(trained):
    """The served form needs none of our code: here every `mnist_pipeline` import fails, as after a
    rename of the architecture's module, and MLflow refuses pickles and checks the archive for any."""
    script = f"""
import sys, numpy as np
sys.modules["mnist_pipeline"] = None  # any import of this package (renamed, moved, absent) fails
import mlflow.pyfunc
mlflow.set_tracking_uri({trained["uri"]!r})
model = mlflow.pyfunc.load_model("models:/{trained["model_id"]}")
np.save(sys.argv[1], model.predict(np.load(sys.argv[2])))
"""
    np.save(trained["tmp"] / "inputs.npy", INPUTS)
    out = trained["tmp"] / "probs.npy"
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    result = subprocess.run([sys.executable, "-c", script, str(out), str(trained["tmp"] / "inputs.npy")], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    probs = np.load(out)
    assert probs.shape == (3, 10), "the batch dimension is dynamic"
    np.testing.assert_allclose(probs, _checkpoint_probs(trained["best"]), atol=1e-5)


def test_predict_and_evaluate_never_unpickle(trained, processed, monkeypatch, capsys):
    """Every file they read goes through the weights-only reader, and nothing through pickle."""
    import pickle

    from mnist_pipeline.serving import evaluate, predict

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", weights_only_load)
    store = ["--run", trained["run_id"], "--tracking-uri", trained["uri"]]
    evaluate.main([*store, "--processed-dir", str(processed)])
    assert "test/acc" in capsys.readouterr().out
    monkeypatch.setattr(predict, "can_fork", lambda: False)  # found in this process, where the patches hold
    picture = trained["tmp"] / "digit.png"
    from PIL import Image

    Image.fromarray((INPUTS[0, 0] * 255).astype(np.uint8)).save(picture)
    assert predict.main([*store, "--json", str(picture)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["probabilities"]) == 10


def test_predict_imports_neither_lightning_hydra_nor_mlflow_pytorch(trained, tmp_path):
    from PIL import Image

    Image.fromarray((INPUTS[0, 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    heavy = ("pytorch_lightning", "lightning", "hydra", "mlflow.pytorch", "torch._dynamo", "mlflow")
    script = f"""
import atexit, os, sys
atexit.register(lambda: print("IMPORTED", os.getpid(), sorted(m for m in {heavy!r} if m in sys.modules)))
from mnist_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""
    for _ in range(2):  # asking the store, then with its answer cached
        result = subprocess.run([sys.executable, "-c", script, "predict", "--run", trained["run_id"],
                                 "--tracking-uri", trained["uri"], str(tmp_path / "digit.png")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED")]
        assert line.endswith("[]"), f"the predicting process imported {line}"


@pytest.fixture(scope="module")
def pickled_champion(trained):
    """The run's model as an older version logged it (pickled), registered as the champion, with its
    pickle replaced by one that would create a marker file when unpickled."""
    import mlflow
    import mlflow.pytorch

    from mnist_pipeline.serving.promote import register
    from mnist_pipeline.serving.registry import Found, load_checkpoint

    client, run_id = trained["client"], trained["run_id"]
    mlflow.set_tracking_uri(trained["uri"])
    old = mlflow.initialize_logged_model(name="model", source_run_id=run_id,
                                         experiment_id=client.get_run(run_id).info.experiment_id)
    mlflow.pytorch.log_model(load_checkpoint(trained["best"]), name="model", model_id=old.model_id, run_id=run_id,
                             serialization_format="pickle", pip_requirements=["torch"])
    register(client, trained["uri"], "mnist-cnn", Found(f"models:/{old.model_id}", "old", run_id, old.model_id))
    marker = trained["tmp"] / "payload-ran"
    (pth,) = _model_dir(client, old.model_id).rglob("model.pth")
    torch.save(touching(marker), pth)
    return {**trained, "marker": marker, "old_model_id": old.model_id}


def test_a_pickled_champion_is_refused_in_one_line_and_nothing_runs(pickled_champion, processed, tmp_path):
    from PIL import Image

    Image.fromarray((INPUTS[0, 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    store = ["--tracking-uri", pickled_champion["uri"]]
    for args in (["predict", str(tmp_path / "digit.png")], ["evaluate", "--processed-dir", str(processed)],
                 ["serve"]):
        result = mnist(*args, *store, timeout=120)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(errors) == 1 and f"mnist promote --relog --run {pickled_champion['run_id']}" in errors[0], errors
    # MLflow's own loader refuses it too, once its switch is off (as `mnist serve` sets it).
    script = ("import mlflow.pyfunc, sys; mlflow.set_tracking_uri(sys.argv[1]); "
              "mlflow.pyfunc.load_model('models:/mnist-cnn@champion')")
    refused = subprocess.run([sys.executable, "-c", script, pickled_champion["uri"]], capture_output=True, text=True,
                             env={**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}, timeout=120)
    assert refused.returncode != 0 and "Deserializing model using pickle is disallowed" in refused.stderr
    assert not pickled_champion["marker"].exists(), "the pickle ran"


def test_relog_makes_the_champion_data_again(pickled_champion, tmp_path):
    store = ["--tracking-uri", pickled_champion["uri"]]
    relogged = mnist("promote", "--relog", *store, timeout=180)
    assert relogged.returncode == 0, relogged.stderr[-3000:]
    assert "re-logged the model of run" in relogged.stdout and "tfjs_cnn" in relogged.stdout
    assert ("registered as new version 2 of 'mnist-cnn'; alias 'champion' moved to it (was: version 1)"
            in relogged.stdout)
    from PIL import Image

    Image.fromarray((INPUTS[0, 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    predicted = mnist("predict", "--json", str(tmp_path / "digit.png"), *store)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (result,) = json.loads(predicted.stdout)
    from mnist_pipeline.serving.digits import load

    expected = _checkpoint_probs_of(pickled_champion["best"], load(tmp_path / "digit.png"))
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5)
    assert not pickled_champion["marker"].exists(), "the pickle ran"


def _checkpoint_probs_of(path: Path, picture: np.ndarray) -> list[float]:
    from mnist_pipeline.serving.registry import load_checkpoint

    with torch.inference_mode():
        return load_checkpoint(path)(torch.from_numpy(picture.reshape(1, 1, 28, 28))).double()[0].tolist()
