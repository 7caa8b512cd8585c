"""Pictures of digits as people make them -> MNIST-like 28x28 inputs, made the way MNIST was made.

A PNG or JPEG of any size, dark ink on light paper or MNIST's light on dark (told apart by the
border: a border lighter than the picture as a whole is paper), becomes: light ink on black, the
background subtracted and the ink stretched to full brightness, cropped to the ink's bounding box,
resized so its longer side is 20 px (aspect ratio kept, Lanczos), and placed in a 28x28 field so
that its intensity-weighted centre of mass is at (14, 14), as in MNIST. Pixels are float32 in
[0, 1], what the model was trained on. Pillow does the image work; nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SIZE = 28          # MNIST's field
BOX = 20           # the digit's longer side inside it
MIN_CONTRAST = 40  # ink at least this much (of 255) brighter than the background, else: blank
NOISE_FLOOR = 0.1  # after stretching the ink to [0, 1], fainter pixels are background
INK = 0.25         # pixels at least this bright define the digit's bounding box
MAX_SIDE = 1024    # larger pictures are scaled down first (memory and time)


class DigitError(ValueError):
    """A file that gives no digit; the message says why (the caller names the file)."""


def load(path: str | os.PathLike) -> np.ndarray:
    """The picture at `path` as a float32 (28, 28) MNIST-like input in [0, 1]; DigitError if none."""
    return to_mnist(read_gray(path))


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """The picture as float grayscale in [0, 255], (height, width); transparency composited away."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DigitError("no such file")
    if path.is_dir():
        raise DigitError("is a folder, not an image")
    if path.stat().st_size == 0:
        raise DigitError("empty file")
    try:
        with Image.open(path) as image:
            image.draft("L", (MAX_SIDE, MAX_SIDE))  # JPEG: decode big photos at a reduced scale
            image.load()
            image = ImageOps.exif_transpose(image)
            if max(image.size) > MAX_SIDE:  # the digit ends up 20 px tall: no need for more
                image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
            return _gray(image)
    except UnidentifiedImageError:
        raise DigitError("not an image (PNG or JPEG expected)") from None
    except Image.DecompressionBombError:
        raise DigitError("image too large") from None
    except PermissionError:
        raise DigitError("cannot be read: permission denied") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DigitError(f"damaged image ({' '.join(str(e).split()) or type(e).__name__})") from None


def _gray(image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise DigitError("empty image (0 pixels)")
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float64) / 257.0
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        return values / 257.0 if values.max() > 255 else values
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255.0
        lum = np.asarray(rgba.convert("L"), dtype=np.float64)
        if (alpha < 1).any():
            # Strokes on a transparent background: lay them on paper of the other brightness.
            opaque = alpha > 0.5
            dark_ink = not opaque.any() or lum[opaque].mean() < 128
            return lum * alpha + (255.0 if dark_ink else 0.0) * (1 - alpha)
        return lum
    return np.asarray(image.convert("L"), dtype=np.float64)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Grayscale [0, 255] of any size -> float32 (28, 28) in [0, 1], light digit on black, centred."""
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or gray.size == 0:
        raise DigitError("empty image (0 pixels)")
    k = max(1, round(0.02 * min(gray.shape)))
    border = np.concatenate([gray[:k].ravel(), gray[-k:].ravel(), gray[:, :k].ravel(), gray[:, -k:].ravel()])
    if border.mean() > gray.mean():  # light paper: dark ink on light, MNIST is the other way round
        gray, border = 255.0 - gray, 255.0 - border
    ink = np.clip(gray - np.median(border), 0, None)
    peak = ink.max()
    if peak < MIN_CONTRAST:
        raise DigitError("no digit found: the image is blank (or has too little contrast)")
    ink /= peak
    ink[ink < NOISE_FLOOR] = 0.0

    rows, cols = _ink_box(ink)
    crop = ink[rows, cols]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray(np.round(crop * 255).astype(np.uint8), "L").resize((new_w, new_h), Image.LANCZOS)
    digit = np.asarray(small, dtype=np.float64) / 255.0
    if digit.max() <= 0:
        raise DigitError("no digit found: the ink is too thin to survive the resize")
    digit /= digit.max()  # thin strokes of a large picture as bright as MNIST's

    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (digit * ys).sum() / mass, (digit * xs).sum() / mass
    top = min(max(round(SIZE / 2 - cy), 0), SIZE - new_h)
    left = min(max(round(SIZE / 2 - cx), 0), SIZE - new_w)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = digit
    return out


def _ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the ink's bounding box. On larger pictures, isolated specks (noise,
    dust) are ignored: a 3x3 median of the ink mask keeps strokes and drops single pixels."""
    mask = ink >= INK
    if min(ink.shape) > 2 * SIZE:
        from PIL import Image, ImageFilter

        filtered = Image.fromarray(mask.astype(np.uint8) * 255, "L").filter(ImageFilter.MedianFilter(3))
        if np.asarray(filtered).any():
            mask = np.asarray(filtered) > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
