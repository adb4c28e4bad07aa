"""Where images come from: an ImageFolder tree, a flat folder, a path[,label] list, or the bundled digits.

Decoding is Pillow's. Unreadable files are skipped and counted, never fatal, unless none is left; so
are decompression bombs and images over MAX_PIXELS (their memory would dwarf the model's). Large JPEGs
are decoded at a reduced size (``Image.draft``) no smaller than the resize needs. File names and list
files may hold any bytes: paths keep them (surrogate escapes), messages show them readably.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgesmlp.calibration.preprocess import MAX_PIXELS, Images, Preprocess
from edgesmlp.errors import DataError, ImageTooLarge

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
LIST_EXTENSIONS = (".txt", ".csv", ".lst")


@dataclass(frozen=True)
class ImageItem:
    """One image: a file on disk, or (for the bundled digits) an in-memory picture."""

    key: str  # stable identifier: a path, digits:<split>:<index>, or memory:<index>
    label: int | None
    path: Path | None = None
    image: Image.Image | None = field(default=None, compare=False, repr=False)
    array: np.ndarray | None = field(default=None, compare=False, repr=False)  # (C, H, W) preprocessed already

    def open(self, min_side: int | None = None) -> Image.Image:
        """The decoded image; a JPEG at the smallest reduced size whose sides are at least ``min_side``."""
        if self.image is not None:
            return self.image
        if not self.path.is_file():  # a FIFO would block the open until killed; a device could stream forever
            raise OSError("not a regular file (a FIFO, device, socket or folder): skipped unopened")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            with Image.open(self.path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageTooLarge(f"{img.width}x{img.height} pixels, over the {MAX_PIXELS // 10**6}-megapixel "
                                        "cap: downscale it")
                if min_side and img.format == "JPEG":
                    img.draft(img.mode, (min_side, min_side))
                img.load()
                return img


def display(text: str) -> str:
    """A path or name as it can be printed, whatever bytes it holds (undecodable ones as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class LoadedImages:
    x: Images | np.ndarray  # (N, C, H, W) preprocessed: uint8 pixels, float32 when indexed (arrays as given)
    labels: np.ndarray | None  # (N,) int64, or None when unlabelled
    keys: list[str]
    skipped: list[tuple[str, str]]  # (key, reason)


def open_images(spec: str | Path | ImageSet | None, split: str = "val", num_classes: int | None = None) -> ImageSet:
    """Resolve what the user gave (None: the bundled digits ``split``; an ImageSet: itself)."""
    if spec is None:
        return _digits(split)
    if isinstance(spec, ImageSet):
        return spec
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give an image folder, an ImageFolder tree or a list file")
    if path.is_file():
        if path.suffix.lower() not in LIST_EXTENSIONS:
            raise DataError(f"{path} is a file but not an image list (.txt/.csv with lines 'path[,label]'); "
                            "give a folder or a list")
        return _from_list(path, num_classes)
    return _from_folder(path, num_classes)


def in_memory(data, name: str) -> ImageSet:
    """Images given in memory, as the Python API takes them: a preprocessed (N, C, H, W) array (or an
    ``(array, labels)`` pair), or a sequence of paths, PIL images, or ``(path or image, label)`` pairs."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        data, labels = data[0], [int(v) for v in np.asarray(data[1]).reshape(-1)]
    else:
        labels = None
    if isinstance(data, np.ndarray):
        if data.ndim != 4 or not np.issubdtype(data.dtype, np.floating):
            raise DataError(f"{name}: an array of images must be float (N, C, H, W), preprocessed as the model "
                            f"expects; got {data.dtype} {tuple(data.shape)}")
        if labels is not None and len(labels) != len(data):
            raise DataError(f"{name}: {len(labels)} labels for {len(data)} images; give one label per image")
        items = tuple(ImageItem(f"memory:{i}", None if labels is None else labels[i],
                                array=np.ascontiguousarray(data[i], np.float32)) for i in range(len(data)))
        return ImageSet(items, f"{name}: an array of {len(items)} preprocessed images", "array")
    items = []
    for i, entry in enumerate(data):
        entry, label = entry if isinstance(entry, tuple) and len(entry) == 2 else (entry, None)
        if isinstance(entry, Image.Image):
            items.append(ImageItem(f"memory:{i}", label, image=entry))
        elif isinstance(entry, (str, Path)):
            items.append(ImageItem(display(str(entry)), label, path=Path(entry)))
        else:
            raise DataError(f"{name}: item {i} is a {type(entry).__name__}; give paths, PIL images, (image, label) "
                            "pairs, or one (N, C, H, W) array")
    if not items:
        raise DataError(f"{name} holds no images: give at least one")
    return ImageSet(tuple(items), f"{name}: {len(items)} images given in memory", "memory")


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
            ImageItem(display(str(p)), mapping[d.name], path=p)
            for d in with_images
            for p in sorted(d.rglob("*"))
            if _is_image(p)
        )
        return ImageSet(items, display(str(root)), "imagefolder", tuple(display(c) for c in classes))
    flat = tuple(ImageItem(display(str(p)), None, path=p) for p in sorted(root.iterdir()) if _is_image(p))
    if not flat:
        raise DataError(f"{display(str(root))} holds no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...): point at a "
                        "folder of images or an ImageFolder tree (one sub-folder per class)")
    return ImageSet(flat, display(str(root)), "flat")


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
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")  # names in any bytes, as the file system has them
    except OSError as e:
        raise DataError(f"{path}: cannot read the list ({e.strerror or type(e).__name__}); check its permissions") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or (number == 1 and line.lower().startswith("path")):
            continue
        name, _, label_text = (part.strip() for part in line.partition(","))
        image_path = Path(name) if Path(name).is_absolute() else path.parent / name
        label = None
        if label_text:
            if not label_text.lstrip("-").isdigit():
                raise DataError(f"{path}:{number}: label {display(label_text)!r} is not an integer class index")
            label = int(label_text)
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise DataError(f"{path}:{number}: label {label} is outside the model's classes 0..{num_classes - 1}")
        items.append(ImageItem(display(str(image_path)), label, path=image_path))
    if not items:
        raise DataError(f"{path} lists no images: write one 'path[,label]' per line")
    if not any(item.path.is_file() for item in items):
        raise DataError(f"{path}: none of its {len(items)} listed files exists (the first is {items[0].key}); "
                        "relative paths are read from the list's own folder")
    return ImageSet(tuple(items), str(path), "list")


# What Pillow raises on bad files (and our own cap, ImageTooLarge, a ValueError).
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode(item: ImageItem, preprocess: Preprocess, skipped: list, pixels: bool = False) -> np.ndarray | None:
    """The preprocessed image (``pixels``: its uint8 pixels, not yet normalised), or None with
    ``(key, reason)`` appended to ``skipped`` when it cannot be read."""
    if item.array is not None:
        want = (len(preprocess.mean), preprocess.image_size, preprocess.image_size)
        if item.array.shape != want:
            raise DataError(f"the array's images are {item.array.shape}, but the model takes {want}: preprocess them "
                            "as the model was trained (or give PIL images or paths)")
        return item.array
    try:
        return (preprocess.pixels if pixels else preprocess)(item.open(preprocess.resize_side))
    except DECODE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        skipped.append((item.key, display(reason)[:160]))
        return None


def load_tensors(images: ImageSet, preprocess: Preprocess, description: str = "Loading images") -> LoadedImages:
    """Decode and preprocess every image; skip (and count) the unreadable ones. The images are kept as their
    uint8 pixels (:class:`Images`), normalised when used."""
    from edgesmlp.progress import progress_bar

    tensors, labels, keys, skipped = [], [], [], []
    with progress_bar(description, total=len(images.items)) as advance:
        for item in images.items:
            x = decode(item, preprocess, skipped, pixels=True)
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
        x=np.stack(tensors) if images.kind == "array" else Images(np.stack(tensors), preprocess.mean, preprocess.std),
        labels=np.array(labels, np.int64) if has_labels else None,
        keys=keys,
        skipped=skipped,
    )
