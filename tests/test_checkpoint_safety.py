"""Checkpoints are data, not code: plain containers only, always loaded with weights_only=True; a
checkpoint carrying a pickled payload is refused with one clear line and nothing in it runs; a
truncated checkpoint is one clear line, not a stack dump."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.timeout(120)

PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


class Payload:
    """Unpickling this runs `code`: what a malicious checkpoint would carry."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _types(obj, path="ckpt"):
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _types(key, f"{path} key")
            yield from _types(value, f"{path}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _types(value, f"{path}[{i}]")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_real_checkpoints_hold_plain_containers_only(tiny_run, name):
    ckpt = torch.load(tiny_run.out / "checkpoints" / name, map_location="cpu", weights_only=True)
    assert "state_dict" in ckpt and "hyper_parameters" not in ckpt
    for path, value in _types(ckpt):
        assert isinstance(value, PLAIN), f"{path} is a {type(value).__module__}.{type(value).__name__}"
        assert not type(value).__module__.startswith(("omegaconf", "hydra")), path


@pytest.fixture
def malicious_ckpt(tiny_run, tmp_path):
    """A real checkpoint with one more entry: a payload that creates a marker file when unpickled."""
    marker = tmp_path / "payload-ran"
    ckpt = torch.load(tiny_run.out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["callbacks"]["extra"] = Payload(f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    return path, marker


@pytest.mark.slow
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(malicious_ckpt, processed, tmp_path):
    from mnist_pipeline.checkpoints import AtomicCheckpointIO

    path, marker = malicious_ckpt
    result = run_cli("mnist_pipeline.train", *tiny_overrides(processed, tmp_path / "mlruns", tmp_path / "out"),
                     f"ckpt_path={path}", timeout=90)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert f"ckpt_path={path}: refused: it holds more than plain data (Unsupported global: GLOBAL exec)" in line
    assert "nothing in it was run" in line
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "mlruns").exists(), "refused before any MLflow run was created"

    # Lightning's own loading path (trainer.fit/test ckpt_path=..., resuming) refuses it too.
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists(), "the payload ran"

    # The payload is real: an unsafe load would have run it.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(("cut", "message"), [
    (0, "truncated or corrupt checkpoint file"),                # empty
    ("half", "truncated or corrupt checkpoint file"),           # what a kill mid-copy leaves
    (100, "truncated or corrupt checkpoint file"),              # the zip's start only
    (-10, "truncated or corrupt checkpoint file"),              # all but the end
    ("garbage", "truncated or corrupt checkpoint file"),        # not a zip, a pickle's header then junk
    ("text", "truncated or corrupt checkpoint file"),           # not a zip, not a pickle
    ("tensor", "not a Lightning checkpoint (no state_dict in it)"),
    ("other_net", "its weights do not fit this model"),
])
def test_every_unusable_checkpoint_is_a_config_error(tiny_run, tmp_path, cut, message):
    """What `python -m mnist_pipeline.train ckpt_path=...` prints as its one `error:` line (the
    refused payload above shows that path end to end)."""
    from mnist_pipeline.checkpoints import read_weights
    from mnist_pipeline.cnn import TfjsCNN
    from mnist_pipeline.config import ConfigError

    data = (tiny_run.out / "checkpoints" / "last.ckpt").read_bytes()
    path = tmp_path / "bad.ckpt"
    if cut == "half":
        path.write_bytes(data[: len(data) // 2])
    elif cut == "garbage":
        path.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    elif cut == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif cut == "tensor":
        torch.save(torch.zeros(3), path)
    elif cut == "other_net":
        torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}}, path)
    else:
        path.write_bytes(data[:cut])
    with pytest.raises(ConfigError) as error:
        read_weights(path, TfjsCNN())
    text = str(error.value)
    assert text.startswith(f"ckpt_path={path}: ") and message in text and "\n" not in text


def test_a_good_checkpoint_loads(tiny_run):
    from mnist_pipeline.checkpoints import read_weights
    from mnist_pipeline.cnn import TfjsCNN

    net = TfjsCNN()
    read_weights(tiny_run.out / "checkpoints" / "last.ckpt", net)
    saved = torch.load(tiny_run.out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(net.state_dict()[k.removeprefix("net.")], v) for k, v in saved.items()
               if k.startswith("net."))
