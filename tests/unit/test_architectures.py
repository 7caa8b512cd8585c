"""Architectures by name: checkpoints record theirs, any of them is rebuilt from a checkpoint, older
checkpoints are recognised by their weights, and a checkpoint never chooses which code is imported."""

from __future__ import annotations

import sys

import pytest
import torch
from hydra.utils import instantiate

from mnist_pipeline.model import architectures
from mnist_pipeline.model.architectures.fast_cnn import FastCNN
from mnist_pipeline.model.checkpoint import CheckpointError, read, rebuild
from mnist_pipeline.serving.registry import ModelError, load_checkpoint
from support import compose, tiny_overrides


def test_every_model_config_names_a_known_architecture():
    from support import ROOT

    configs = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
    assert configs == architectures.names() == ["fast_cnn", "tfjs_cnn"]
    for name in configs:
        cfg = compose(f"model={name}")
        assert cfg.model.name == name
        assert type(instantiate(cfg.model)) is architectures.net_class(name)


def test_unknown_names_and_settings_are_one_line_errors():
    for name in ("resnet", "os", "../tfjs_cnn", "mnist_pipeline.model.architectures.tfjs_cnn", "", None):
        with pytest.raises(architectures.ArchitectureError, match="unknown architecture .*knows fast_cnn, tfjs_cnn"):
            architectures.build(name)
    with pytest.raises(architectures.ArchitectureError, match="does not take the settings"):
        architectures.build("tfjs_cnn", channels1=3)


def test_a_record_is_plain_data():
    record = architectures.record(compose("model=fast_cnn", "model.channels1=24").model)
    assert record == {"name": "fast_cnn", "settings": {"channels1": 24, "channels2": 32}}
    assert all(type(v) is int for v in record["settings"].values())


@pytest.fixture(scope="module")
def fast_run(processed, tmp_path_factory):
    """A short training of fast_cnn with other filter counts than its defaults, logged nowhere."""
    from mnist_pipeline.training.train import train

    tmp = tmp_path_factory.mktemp("fast_run")
    train(compose(*tiny_overrides(processed, tmp / "mlruns", tmp / "out"), "logger=none", "model=fast_cnn",
                  "model.channels1=12", "model.channels2=20", "trainer.max_steps=6"))
    return tmp / "out" / "checkpoints" / "best.ckpt"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        return torch.allclose(a.eval()(x), b.eval()(x))


def test_a_checkpoint_records_its_architecture_and_rebuilds_it(fast_run):
    checkpoint = read(fast_run)
    assert checkpoint.architecture == {"name": "fast_cnn", "settings": {"channels1": 12, "channels2": 20}}
    net = rebuild(checkpoint)
    assert isinstance(net, FastCNN) and net.dense.in_features == 20 * 16
    served = load_checkpoint(fast_run)  # what `mnist predict --ckpt` and `mnist evaluate --ckpt` use
    assert _same_outputs(served[0], net)


def test_an_older_checkpoint_without_the_record_is_recognised_by_its_weights(fast_run, tiny_run, tmp_path):
    for path, name, settings in ((fast_run, "fast_cnn", {"channels1": 12, "channels2": 20}),
                                 (tiny_run.out / "checkpoints" / "best.ckpt", "tfjs_cnn", {})):
        state = torch.load(path, weights_only=True)
        del state["architecture"]
        old = tmp_path / f"old-{name}.ckpt"
        torch.save(state, old)
        checkpoint = read(old)
        assert checkpoint.architecture is None
        assert architectures.identify(checkpoint.weights) == {"name": name, "settings": settings}
        assert _same_outputs(rebuild(checkpoint), rebuild(read(path)))


def test_a_checkpoint_of_an_unknown_architecture_is_one_line_and_imports_nothing(tiny_run, tmp_path):
    state = torch.load(tiny_run.out / "checkpoints" / "best.ckpt", weights_only=True)
    cases = {
        "newer": {"name": "vit_tiny", "settings": {}},
        "a class path": {"name": "tests_payload_module", "settings": {}, "_target_": "tests_payload_module.Net"},
        "a module path": {"name": "support.faulty", "settings": {}},
    }
    for label, record in cases.items():
        path = tmp_path / f"{label}.ckpt"
        torch.save({**state, "architecture": record}, path)
        with pytest.raises(ModelError) as error:
            load_checkpoint(path)
        message = str(error.value)
        assert message.startswith(f"{path}: unknown architecture {record['name']!r}") and "\n" not in message
    assert "tests_payload_module" not in sys.modules and "support.faulty" not in sys.modules


def test_weights_that_fit_no_architecture_are_one_line(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(10, 784)}}, path)
    with pytest.raises(CheckpointError, match=r"records no architecture and its weights fit none of this "
                                              r"version's \(fast_cnn, tfjs_cnn\)"):
        rebuild(read(path))
