"""The bundled data set: scikit-learn's handwritten digits, upscaled to 32x32 RGB.

scikit-learn ships the 1,797 images (8x8, 16 grey levels, UCI "optdigits"), so nothing is downloaded.
The splits are fixed by one seeded permutation and never overlap:

    validation   500 images   permutation[:500]
    calibration  300 images   permutation[500:800]
    train        997 images   permutation[800:]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

SPLIT_SEED = 20210911
SPLITS = {"val": (0, 500), "calib": (500, 800), "train": (800, None)}
IMAGE_SIZE = 32
CLASS_NAMES = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        from edgesmlp.errors import workstation_extra

        raise workstation_extra("scikit-learn", "the bundled digits images") from None

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}: use one of {', '.join(SPLITS)}")
    images, _ = _digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    start, stop = SPLITS[split]
    return order[start:stop]


def to_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 array of 0..16 grey levels as a 32x32 RGB Pillow image."""
    grey = Image.fromarray((pixels * (255.0 / 16.0)).round().astype(np.uint8), "L")
    return grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC).convert("RGB")


def load_split(split: str) -> list[tuple[Image.Image, int]]:
    images, labels = _digits()
    return [(to_image(images[i]), int(labels[i])) for i in split_indices(split)]


def write_imagefolders(root, force: bool = False) -> dict[str, int]:
    """Write every split as ``root/<split>/<label>/<index>.png``, atomically."""
    from pathlib import Path

    from edgesmlp.artifacts import reserved_dir

    root = Path(root)
    counts = {}
    with reserved_dir(lambda n: root, force=force) as (_, tmp):
        for split in SPLITS:
            for i, (image, label) in zip(split_indices(split), load_split(split)):
                folder = tmp / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{i:04d}.png")
            counts[split] = len(split_indices(split))
    return counts
