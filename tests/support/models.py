"""A real small digit model shared by the tests of predict, promote, evaluate, serve and diagnostics
(its fixtures are in `plugin.py`), plus pictures of digits made the ways people make them.

`trained_real`: the real MNIST split (1000 val images) and 300 training steps of the tutorial's CNN
(a few seconds, about 95% test accuracy), through `train(cfg)` into its own SQLite store, once per
session. `champion_real`: that run promoted as the champion of `mnist-cnn` in that store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RealModel:
    processed: Path
    uri: str
    run_id: str
    experiment_id: str
    out: Path
    reports: Path
    model_uri: str
    metrics: dict
    test_images: np.ndarray
    test_labels: np.ndarray
    registered_after_training: list[str]


def write_mnist_pngs(folder: Path, images: np.ndarray, labels: np.ndarray, n: int = 30) -> list[tuple[Path, int]]:
    """`n` real MNIST test images as files people might make: 28, 64 and 200 px, light on dark or
    dark on light (every other one), padded off-centre on a larger canvas, some as JPEG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        size = (28, 64, 200)[i % 3]
        digit = Image.fromarray(images[i]).resize((size, size), Image.BICUBIC)
        pad = (0, size // 4, size // 2)[(i // 3) % 3]
        canvas = Image.new("L", (size + 2 * pad, size + pad), 0)
        canvas.paste(digit, (2 * pad if i % 2 else 0, pad))
        if i % 2:
            canvas = Image.eval(canvas, lambda v: 255 - v)
        suffix = ".jpg" if i % 5 == 4 and size > 28 else ".png"
        path = folder / f"mnist_{i:02d}_label{int(labels[i])}_{size}px{suffix}"
        canvas.save(path, quality=95) if suffix == ".jpg" else canvas.save(path)
        files.append((path, int(labels[i])))
    return files


def draw_digits(folder: Path) -> list[tuple[Path, int]]:
    """Five digits drawn with Pillow's ImageDraw as a person would with a thick pen: dark ink on
    white paper, different sizes, not centred."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    drawings = {
        0: ((300, 300), lambda d: d.ellipse((90, 40, 210, 260), outline=0, width=22)),
        1: ((120, 200), lambda d: d.line((70, 25, 60, 180), fill=0, width=14)),
        4: ((400, 300), lambda d: (d.line((200, 30, 120, 180), fill=0, width=24),
                                   d.line((120, 180, 260, 180), fill=0, width=24),
                                   d.line((230, 80, 230, 280), fill=0, width=24))),
        7: ((256, 256), lambda d: (d.line((50, 40, 200, 40), fill=0, width=20),
                                   d.line((200, 40, 110, 230), fill=0, width=20))),
        8: ((240, 320), lambda d: (d.ellipse((80, 30, 170, 140), outline=0, width=18),
                                   d.ellipse((65, 130, 185, 270), outline=0, width=18))),
    }
    files = []
    for digit, (size, draw) in drawings.items():
        image = Image.new("L", size, 255)
        draw(ImageDraw.Draw(image))
        path = folder / f"drawn_{digit}.png"
        image.save(path)
        files.append((path, digit))
    return files
