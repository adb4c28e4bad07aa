"""Where images come from: an ImageFolder tree, a flat folder, a path[,label] list, or the bundled digits.

Decoding is Pillow's. Unreadable files are skipped and counted, never fatal, unless none is left.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgesmlp.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
LIST_EXTENSIONS = (".txt", ".csv", ".lst")


@dataclass(frozen=True)
class ImageItem:
    """One image: a file on disk, or (for the bundled digits) an in-memory picture."""

    key: str  # stable identifier: a path, or digits:<split>:<index>
    label: int | None
    path: Path | None = None
    image: Image.Image | None = field(default=None, compare=False, repr=False)

    def open(self) -> Image.Image:
        if self.image is not None:
            return self.image
        with Image.open(self.path) as img:
            img.load()
            return img


@dataclass(frozen=True)
class ImageSet:
    items: tuple[ImageItem, ...]
    origin: str  # what the user pointed at, for messages and the manifest
    kind: str  # imagefolder, flat, list or digits
    classes: tuple[str, ...] | None = None

    @property
    def labelled(self) -> bool:
        return bool(self.items) and all(item.label is not None for item in self.items)

    def sample(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A deterministic subset of ``n`` items (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self.items):
            return self
        if n <= 0:
            raise DataError(f"--calib-size must be positive, got {n}")
        chosen = sorted(random.Random(seed).sample(range(len(self.items)), n))
        return ImageSet(tuple(self.items[i] for i in chosen), self.origin, self.kind, self.classes)

    def fingerprint(self) -> str:
        """SHA-256 of the ordered list of image keys and labels: names the exact set used."""
        text = "\n".join(f"{item.key},{'' if item.label is None else item.label}" for item in self.items)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class LoadedImages:
    x: np.ndarray  # (N, C, H, W) float32, preprocessed
    labels: np.ndarray | None  # (N,) int64, or None when unlabelled
    keys: list[str]
    skipped: list[tuple[str, str]]  # (key, reason)


def open_images(spec: str | Path | None, split: str = "val", num_classes: int | None = None) -> ImageSet:
    """Resolve what the user gave (None: the bundled digits ``split``)."""
    if spec is None:
        return _digits(split)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give an image folder, an ImageFolder tree or a list file")
    if path.is_file():
        if path.suffix.lower() not in LIST_EXTENSIONS:
            raise DataError(f"{path} is a file but not an image list (.txt/.csv with lines 'path[,label]'); "
                            "give a folder or a list")
        return _from_list(path, num_classes)
    return _from_folder(path, num_classes)


def _digits(split: str) -> ImageSet:
    from edgesmlp.calibration import digits

    pairs = digits.load_split(split)
    items = tuple(ImageItem(f"digits:{split}:{i}", label, image=img) for i, (img, label) in enumerate(pairs))
    return ImageSet(items, f"bundled digits ({split} split)", "digits", digits.CLASS_NAMES)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _from_folder(root: Path, num_classes: int | None) -> ImageSet:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    with_images = [d for d in class_dirs if any(_is_image(p) for p in d.rglob("*"))]
    if with_images:
        classes = [d.name for d in with_images]
        mapping = _class_indices(root, classes, num_classes)
        items = tuple(
            ImageItem(str(p), mapping[d.name], path=p)
            for d in with_images
            for p in sorted(d.rglob("*"))
            if _is_image(p)
        )
        return ImageSet(items, str(root), "imagefolder", tuple(classes))
    flat = tuple(ImageItem(str(p), None, path=p) for p in sorted(root.iterdir()) if _is_image(p))
    if not flat:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...): point at a folder of "
                        "images or an ImageFolder tree (one sub-folder per class)")
    return ImageSet(flat, str(root), "flat")


def _class_indices(root: Path, classes: list[str], num_classes: int | None) -> dict[str, int]:
    """Integer folder names are class indices; otherwise sorted names map to 0..K-1 (torchvision's rule)."""
    if all(name.isdigit() for name in classes):
        indices = {name: int(name) for name in classes}
        if num_classes is not None and max(indices.values()) >= num_classes:
            raise DataError(f"{root} has class folder '{max(classes, key=int)}' but the model has only "
                            f"{num_classes} classes (0..{num_classes - 1})")
        return indices
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(
            f"{root} has {len(classes)} class folders but the model has {num_classes} classes: sorted folder names "
            f"map to class indices, so they must match one to one (or name the folders 0..{num_classes - 1})"
        )
    return {name: i for i, name in enumerate(classes)}


def _from_list(path: Path, num_classes: int | None) -> ImageSet:
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or (number == 1 and line.lower().startswith("path")):
            continue
        name, _, label_text = (part.strip() for part in line.partition(","))
        image_path = Path(name) if Path(name).is_absolute() else path.parent / name
        label = None
        if label_text:
            if not label_text.lstrip("-").isdigit():
                raise DataError(f"{path}:{number}: label {label_text!r} is not an integer class index")
            label = int(label_text)
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise DataError(f"{path}:{number}: label {label} is outside the model's classes 0..{num_classes - 1}")
        items.append(ImageItem(str(image_path), label, path=image_path))
    if not items:
        raise DataError(f"{path} lists no images: write one 'path[,label]' per line")
    return ImageSet(tuple(items), str(path), "list")


DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)  # what Pillow raises on bad files


def decode(item: ImageItem, preprocess: Callable[[Image.Image], np.ndarray], skipped: list) -> np.ndarray | None:
    """The preprocessed image, or None with ``(key, reason)`` appended to ``skipped`` when it cannot be read."""
    try:
        return preprocess(item.open())
    except DECODE_ERRORS as e:
        skipped.append((item.key, str(e).splitlines()[0] if str(e) else type(e).__name__))
        return None


def load_tensors(
    images: ImageSet, preprocess: Callable[[Image.Image], np.ndarray], description: str = "Loading images"
) -> LoadedImages:
    """Decode and preprocess every image; skip (and count) the unreadable ones."""
    from edgesmlp.progress import progress_bar

    tensors, labels, keys, skipped = [], [], [], []
    with progress_bar(description, total=len(images.items)) as advance:
        for item in images.items:
            x = decode(item, preprocess, skipped)
            if x is not None:
                tensors.append(x)
                labels.append(item.label)
                keys.append(item.key)
            advance()
    if not tensors:
        example = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{images.origin}: none of its {len(images.items)} images could be read{example}; "
                        "check the files are valid images")
    has_labels = all(label is not None for label in labels)
    return LoadedImages(
        x=np.stack(tensors),
        labels=np.array(labels, np.int64) if has_labels else None,
        keys=keys,
        skipped=skipped,
    )
