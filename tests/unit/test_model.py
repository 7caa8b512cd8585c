"""The default config is the tutorial exactly, and the CNN is the tutorial's."""

import math

import torch
from hydra.utils import instantiate

from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
from support import compose


def test_default_config_is_the_tutorial():
    cfg = compose()
    assert cfg.model.name == "tfjs_cnn" and isinstance(instantiate(cfg.model), TfjsCNN)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.15
    assert cfg.data.batch_size == 64 and cfg.data.val_subset_size == 1000
    assert cfg.trainer.max_steps == 100 and cfg.trainer.val_check_interval == 5
    assert cfg.trainer.accelerator == "cpu" and cfg.seed == 0
    assert cfg.data.split.val_size == 5000 and cfg.data.split.seed == 0
    assert cfg.logger.enabled and cfg.logger.experiment_name == "mnist"


def test_full_preset_trains_for_at_most_ten_epochs():
    cfg = compose("experiment=full")
    steps_per_epoch = 55_000 // cfg.data.batch_size
    assert steps_per_epoch < cfg.trainer.max_steps <= 10 * steps_per_epoch


def test_cnn_layers_shapes_and_parameter_count():
    net = TfjsCNN()
    assert [tuple(p.shape) for p in net.parameters()] == [(8, 1, 5, 5), (8,), (16, 8, 5, 5), (16,), (10, 256), (10,)]
    per_layer = [sum(p.numel() for p in m.parameters()) for m in (net.conv1, net.conv2, net.dense)]
    assert per_layer == [208, 3216, 2570] and sum(per_layer) == 5994
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_variance_scaling_init_matches_tfjs():
    torch.manual_seed(0)
    net = TfjsCNN()
    for layer, fan_in in ((net.conv1, 25), (net.conv2, 200), (net.dense, 256)):
        std = math.sqrt(1 / fan_in)
        w = layer.weight.detach()
        assert w.abs().max() <= 2 * std + 1e-6, "truncated at two standard deviations"
        tolerance = 0.15 if w.numel() < 1000 else 0.05
        assert abs(w.std().item() / std - 0.88) < tolerance
        assert torch.all(layer.bias == 0)


def test_fast99_preset_composes_a_wider_cnn_with_a_one_cycle_schedule():
    from mnist_pipeline.model.architectures.fast_cnn import FastCNN

    cfg = compose("experiment=fast99")
    assert cfg.model.name == "fast_cnn" and cfg.data.batch_size == 256
    assert isinstance(instantiate(cfg.model), FastCNN)
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert cfg.scheduler.total_steps == cfg.trainer.max_steps and cfg.trainer.max_steps % cfg.trainer.val_check_interval == 0
    assert FastCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_scheduled_preset_trains_and_moves_the_learning_rate(processed, tmp_path):
    from mnist_pipeline.training.train import train
    from support import tiny_overrides

    cfg = compose(*tiny_overrides(processed, tmp_path / "s", tmp_path / "o"), "experiment=fast99", "logger=none",
                  "data.batch_size=64", "trainer.max_steps=10", "trainer.val_check_interval=5")
    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1
    last = torch.load(tmp_path / "o" / "checkpoints" / "last.ckpt", weights_only=True)
    (scheduler,) = last["lr_schedulers"]
    assert scheduler["last_epoch"] == 10 and scheduler["_last_lr"][0] < cfg.optimizer.lr / 10
