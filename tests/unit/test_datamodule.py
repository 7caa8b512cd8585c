"""Sampling: step k's global batch depends only on (seed, k), whatever the process count."""

import pytest
import torch

from mnist_pipeline.config import ConfigError
from mnist_pipeline.training.datamodule import EvalBatches, MNISTDataModule, TrainBatches


def _batches(n=640, batch=64, seed=0, rank=0, world=1, start=0):
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1).expand(n, 28, 28).to(torch.uint8)
    labels = torch.arange(n)  # label = index: batches name their images
    return TrainBatches(images, labels, batch, seed, rank, world, lambda: start)


def test_global_batches_are_split_across_processes_identically():
    single = [y for _, y in _batches()]
    assert len(single) == 10 and all(len(y) == 64 for y in single)
    assert all(torch.equal(y, _batches().global_batch(k)) for k, y in enumerate(single))
    for world in (2, 4):
        per_rank = [[y for _, y in _batches(rank=r, world=world)] for r in range(world)]
        for step in range(10):
            assert torch.equal(torch.cat([per_rank[r][step] for r in range(world)]), single[step])


def test_epoch_is_a_permutation_reshuffled_each_epoch_and_seeded():
    b = _batches()
    epoch0 = torch.cat([b.global_batch(k) for k in range(10)])
    epoch1 = torch.cat([b.global_batch(k) for k in range(10, 20)])
    assert sorted(epoch0.tolist()) == list(range(640)) and sorted(epoch1.tolist()) == list(range(640))
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0, torch.cat([_batches().global_batch(k) for k in range(10)]))
    assert not torch.equal(epoch0, torch.cat([_batches(seed=1).global_batch(k) for k in range(10)]))


def test_iteration_resumes_at_the_trainer_step():
    full = [y for _, y in _batches(start=10)]  # epoch 1 from its start
    resumed = [y for _, y in _batches(start=13)]
    assert len(resumed) == 7
    for a, b in zip(full[3:], resumed):
        assert torch.equal(a, b)


def test_inputs_are_scaled_floats():
    x, _ = next(iter(_batches()))
    assert x.dtype == torch.float32 and x.shape == (64, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


def test_eval_batches_cover_each_image_once_across_processes():
    labels = torch.arange(1000)
    images = torch.zeros(1000, 28, 28, dtype=torch.uint8)
    seen = torch.cat([y for r in range(2) for _, y in EvalBatches(images, labels, 300, r, 2)])
    assert sorted(seen.tolist()) == list(range(1000))


def test_datamodule_loads_splits_and_fixes_the_val_subset(processed):
    dm = MNISTDataModule(str(processed), batch_size=64, val_subset_size=100, eval_batch_size=50, seed=0)
    dm.setup("fit")
    assert dm.splits["train"][0].dtype == torch.uint8 and len(dm.splits["train"][1]) == 640
    a = torch.cat([y for _, y in dm.val_dataloader()])
    b = torch.cat([y for _, y in dm.val_dataloader()])
    assert len(a) == 100 and torch.equal(a, b)
    val_full, test = dm.test_dataloader()
    assert sum(len(y) for _, y in val_full) == 200 and sum(len(y) for _, y in test) == 200
    assert dm.state_dict() == {"seed": 0, "batch_size": 64, "step": 0}
    dm.load_state_dict({"seed": 0, "batch_size": 64, "step": 13})
    assert dm.state_dict()["step"] == 13
    with pytest.raises(ConfigError, match="batch_size"):
        dm.load_state_dict({"seed": 0, "batch_size": 32, "step": 13})


def test_missing_processed_data_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="dvc repro split"):
        MNISTDataModule(str(tmp_path)).setup("fit")


def test_the_whole_dataset_moves_to_the_training_device(processed):
    """On a GPU every batch must come from device memory, with no host-to-device copy per step.
    The `meta` device stands in for a GPU here: a tensor that ever passed through the CPU path
    would be on `cpu`."""
    from types import SimpleNamespace

    dm = MNISTDataModule(str(processed), batch_size=64, val_subset_size=100, eval_batch_size=50, seed=0)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")),
                                 global_rank=0, world_size=1, global_step=0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.device.type == y.device.type == "meta" and x.shape == (64, 1, 28, 28)
    assert all(t.device.type == "meta" for t in next(iter(dm.val_dataloader())))
    assert all(t.device.type == "meta" for loader in dm.test_dataloader() for t in next(iter(loader)))
    assert dm.splits["test"][0].device.type == "cpu"  # the host copy, for reports
