"""Where a model fails: confusion matrix (PNG, CSV for DVC) and the most confident mistakes."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image

from mnist_pipeline.training import diagnostics
from support import ROOT

FILES = ("confusion_matrix.png", "confusion.csv", "most_confident_errors.png")


class LookupNet(torch.nn.Module):
    """Logits chosen per image: image i (its pixel [0, 0] holds i) gets `logits[i]`."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


def _case(n: int = 60, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    predicted = labels.clone()
    wrong = torch.randperm(n, generator=gen)[:15]
    predicted[wrong] = (labels[wrong] + 1 + torch.randint(0, 9, (15,), generator=gen)) % 10
    confidence = torch.rand(n, generator=gen) * 6 + 1
    logits = torch.zeros(n, 10)
    logits[torch.arange(n), predicted] = confidence
    images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return LookupNet(logits), images, labels, predicted, wrong


def test_confusion_per_class_and_most_confused_by_hand():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 1, 1, 2, 1, 1, 0]
    m = diagnostics.confusion(labels, predicted, classes=3)
    assert m.tolist() == [[2, 1, 0], [0, 2, 0], [1, 2, 1]]
    per = diagnostics.per_class(m)
    assert per["precision"].tolist() == pytest.approx([2 / 3, 2 / 5, 1])
    assert per["recall"].tolist() == pytest.approx([2 / 3, 1, 1 / 4])
    assert per["f1"][2] == pytest.approx(2 * 1 * 0.25 / 1.25) and per["support"].tolist() == [3, 2, 4]
    assert diagnostics.most_confused(m, 2) == [(2, 1, 2), (0, 1, 1)]


def test_write_diagnostics_counts_and_picks_the_surest_mistakes(tmp_path):
    net, images, labels, predicted, wrong = _case()
    net.train()
    files = diagnostics.write_diagnostics(tmp_path, net, images, labels, batch_size=7)
    assert files == [tmp_path / "plots" / name for name in FILES]
    assert net.training, "the net's mode is left as it was"
    rows = (tmp_path / "plots" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted"
    assert rows[1:] == [f"{a},{p}" for a, p in zip(labels.tolist(), predicted.tolist())]
    probs = torch.softmax(net.logits, dim=1)
    surest = diagnostics.confident_errors(probs, labels, 5)
    by_confidence = sorted(wrong.tolist(), key=lambda i: -float(probs[i].max()))
    assert surest == by_confidence[:5] and len(diagnostics.confident_errors(probs, labels, 100)) == 15
    for name in ("confusion_matrix.png", "most_confident_errors.png"):
        with Image.open(tmp_path / "plots" / name) as png:
            assert png.format == "PNG" and png.width > 600 and png.height > 300
    assert not list((tmp_path / "plots").glob(".*")), "atomic writes leave no temp files"


def test_no_mistakes_still_writes_every_file(tmp_path):
    net, images, labels, _, _ = _case()
    net.logits.data = torch.nn.functional.one_hot(labels, 10).float() * 5
    diagnostics.write_diagnostics(tmp_path, net, images, labels)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == set(FILES)


def test_dvc_declares_the_confusion_matrix_plot():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert {"reports/plots": {"cache": False}} in dvc["stages"]["train"]["outs"]
    assert "plots" not in dvc["stages"]["train"], "declared once, at the top level: `dvc plots show` draws it once"
    plots = {k: v for entry in dvc["plots"] if isinstance(entry, dict) for k, v in entry.items()}
    (confusion,) = [p for p in plots.values() if p.get("template") == "confusion"]
    assert confusion["x"] == "actual" and confusion["y"] == {"reports/plots/confusion.csv": "predicted"}
    pictures = {p for p in dvc["plots"] if isinstance(p, str)}
    assert {f"reports/plots/{name}" for name in FILES if name.endswith(".png")} <= pictures
