"""Every run records the data it saw as MLflow dataset inputs (the UI's Dataset column): one per
split, with the split file's sha256 (its first 32 hex characters as the digest, all of it as a
tag), its DVC-tracked path and its context. Runs on the same data share the digests; a changed
split changes its own digest only."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np

from mnist_pipeline.tracking.runs import start_run
from support import compose, store_client, tiny_overrides


def _inputs(client, run_id: str) -> dict[str, tuple]:
    """split context -> (name, digest, source uri, sha256 tag)."""
    found = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        found[tags["mlflow.data.context"]] = (item.dataset.name, item.dataset.digest,
                                              json.loads(item.dataset.source)["uri"], tags["sha256"])
    return found


def test_a_trained_run_has_its_three_splits_as_dataset_inputs(tiny_run, processed):
    inputs = _inputs(tiny_run.client, tiny_run.run_id)
    assert set(inputs) == {"training", "validation", "test"}
    for context, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        name, digest, source, sha256 = inputs[context]
        assert sha256 == hashlib.sha256((processed / f"{split}.npz").read_bytes()).hexdigest()
        assert name == f"mnist-{split}" and digest == sha256[:32] and source == str(processed / f"{split}.npz")
    assert "data_sha256" in tiny_run.run.data.tags


def test_the_same_data_shares_digests_and_a_changed_split_changes_its_own(processed, tmp_path):
    store = tmp_path / "mlruns"
    changed = tmp_path / "changed"
    shutil.copytree(processed, changed)
    with np.load(changed / "val.npz") as val:
        arrays = dict(val)
    arrays["images"][0] = 255 - arrays["images"][0]
    np.savez(changed / "val.npz", **arrays)

    def run(folder):
        cfg = compose(*tiny_overrides(folder, store, tmp_path / "out"))
        return start_run(cfg, processed_dir=folder, out_dir=tmp_path / "out", overrides=[])

    client = store_client(store)
    first, second, third = (_inputs(client, run(folder)) for folder in (processed, processed, changed))
    assert first == second, "the same files: the same inputs"
    assert third["training"][1] == first["training"][1] and third["test"][1] == first["test"][1]
    assert third["validation"][1] != first["validation"][1]
