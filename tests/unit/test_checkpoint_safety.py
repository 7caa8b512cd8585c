"""Checkpoints are data, not code: plain containers only, always loaded with weights_only=True; a
checkpoint carrying a pickled payload is refused with one clear line and nothing in it runs; a
truncated checkpoint is one clear line, not a stack dump."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.timeout(120)

PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def _types(obj, path="ckpt"):
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _types(key, f"{path} key")
            yield from _types(value, f"{path}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _types(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_real_checkpoints_hold_plain_containers_only(tiny_run, name):
    ckpt = torch.load(tiny_run.out / "checkpoints" / name, map_location="cpu", weights_only=True)
    assert "state_dict" in ckpt and "hyper_parameters" not in ckpt
    for path, value in _types(ckpt):
        assert isinstance(value, PLAIN), f"{path} is a {type(value).__module__}.{type(value).__name__}"
        assert not type(value).__module__.startswith(("omegaconf", "hydra")), path


@pytest.mark.parametrize(("cut", "message"), [
    (0, "truncated or corrupt checkpoint file"),                # empty
    ("half", "truncated or corrupt checkpoint file"),           # what a kill mid-copy leaves
    (100, "truncated or corrupt checkpoint file"),              # the zip's start only
    (-10, "truncated or corrupt checkpoint file"),              # all but the end
    ("garbage", "truncated or corrupt checkpoint file"),        # not a zip, a pickle's header then junk
    ("text", "truncated or corrupt checkpoint file"),           # not a zip, not a pickle
    ("tensor", "not a Lightning checkpoint of this project (no state_dict in it)"),
    ("other_net", "its weights do not fit this model"),
])
def test_every_unusable_checkpoint_is_a_config_error(tiny_run, tmp_path, cut, message):
    """What `mnist train ckpt_path=...` prints as its one `error:` line (the
    refused payload above shows that path end to end)."""
    from mnist_pipeline.config import ConfigError
    from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
    from mnist_pipeline.training.checkpoints import read_weights

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
    from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
    from mnist_pipeline.training.checkpoints import read_weights

    net = TfjsCNN()
    read_weights(tiny_run.out / "checkpoints" / "last.ckpt", net)
    saved = torch.load(tiny_run.out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(net.state_dict()[k.removeprefix("net.")], v) for k, v in saved.items()
               if k.startswith("net."))
