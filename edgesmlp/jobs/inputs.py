"""Resolve a job's inputs from the checkpoint and the user's options: preprocessing, images, output folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import ImageSet, LoadedImages, load_tensors, open_images
from edgesmlp.errors import ConfigError, DataError, OutputExistsError
from edgesmlp.jobs.spec import Calibration, PreprocessOverrides

if TYPE_CHECKING:
    from edgesmlp.checkpoint import Checkpoint


def resolve_preprocess(ckpt: Checkpoint, overrides: PreprocessOverrides = PreprocessOverrides()) -> Preprocess:
    """The checkpoint's own preprocessing (ImageNet eval defaults unless it records others), overridden."""
    from edgesmlp.checkpoint import check_image_size

    check_image_size(ckpt, overrides.image_size)
    changes = {k: v for k, v in vars(overrides).items() if v is not None}
    preprocess = replace(ckpt.preprocess, **changes)
    if len(preprocess.mean) != ckpt.config.in_chans:
        raise ConfigError(f"--mean/--std give {len(preprocess.mean)} values but the model takes "
                          f"{ckpt.config.in_chans} input channels")
    if ckpt.config.in_chans not in (1, 3):
        raise ConfigError(f"images can feed only 1- or 3-channel models; this one takes {ckpt.config.in_chans}")
    return preprocess


def check_default_fits(bundled: bool, spec: Path | None, option: str, weights_name: str) -> None:
    if spec is None and not bundled:
        raise DataError(f"{option} is required with your own weights ({weights_name}): the bundled digits images "
                        f"fit only the bundled model; give an image folder, ImageFolder tree or list file")


def load_calibration(ckpt: Checkpoint, preprocess: Preprocess, calibration: Calibration) -> tuple[ImageSet, LoadedImages]:
    """The calibration sample, preprocessed in memory (hundreds of images); unreadable files skipped and counted."""
    check_default_fits(ckpt.bundled, calibration.images, "--calib", ckpt.path.name)
    images = open_images(calibration.images, "calib").sample(calibration.size, calibration.seed)
    return images, load_tensors(images, preprocess, "Loading calibration images")


def open_validation(ckpt: Checkpoint, val: Path | None) -> ImageSet:
    """The validation set, streamed at evaluation time (it may hold tens of thousands of images)."""
    check_default_fits(ckpt.bundled, val, "--val", ckpt.path.name)
    return open_images(val, "val", ckpt.config.num_classes)


def output_folder(explicit: Path | None, default: Path, force: bool, inside: str | None = None) -> Path:
    """Where a job writes: ``explicit`` (refused if it exists, unless ``force``), or the first free
    ``default``, ``default-2``, ... With ``inside``, the folder is ``<root>/<inside>``."""

    def leaf(root: Path) -> Path:
        return root / inside if inside else root

    if explicit is not None:
        if leaf(explicit).exists() and not force:
            raise OutputExistsError(f"{leaf(explicit)} exists: pass --force to replace it, or choose another -o")
        return leaf(explicit)
    n, root = 1, default
    while leaf(root).exists():
        n += 1
        root = Path(f"{default}-{n}")
    return leaf(root)
