"""Resolve which preprocessing and which images a job uses, from the checkpoint and the user's options."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import ImageSet, LoadedImages, load_tensors, open_images
from edgesmlp.checkpoint import Checkpoint, check_image_size
from edgesmlp.errors import ConfigError, DataError


@dataclass(frozen=True)
class PreprocessOverrides:
    image_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def resolve_preprocess(ckpt: Checkpoint, overrides: PreprocessOverrides = PreprocessOverrides()) -> Preprocess:
    """The checkpoint's own preprocessing (ImageNet eval defaults unless it records others), overridden."""
    check_image_size(ckpt, overrides.image_size)
    changes = {k: v for k, v in vars(overrides).items() if v is not None}
    preprocess = replace(ckpt.preprocess, **changes)
    if len(preprocess.mean) != ckpt.config.in_chans:
        raise ConfigError(f"--mean/--std give {len(preprocess.mean)} values but the model takes "
                          f"{ckpt.config.in_chans} input channels")
    if ckpt.config.in_chans not in (1, 3):
        raise ConfigError(f"images can feed only 1- or 3-channel models; this one takes {ckpt.config.in_chans}")
    return preprocess


def _check_default_fits(ckpt: Checkpoint, spec: Path | None, option: str) -> None:
    if spec is None and not ckpt.bundled:
        raise DataError(f"{option} is required with your own weights ({ckpt.path.name}): the bundled digits images "
                        f"fit only the bundled model; give an image folder, ImageFolder tree or list file")


@dataclass
class JobImages:
    calib_set: ImageSet
    calib: LoadedImages  # preprocessed in memory (hundreds of images)
    val_set: ImageSet  # streamed at evaluation time (may be tens of thousands)


def load_job_images(ckpt: Checkpoint, preprocess: Preprocess, calib: Path | None, val: Path | None,
                    calib_size: int, seed: int) -> JobImages:
    """Calibration sample and validation set, preprocessed; unreadable files skipped and counted."""
    _check_default_fits(ckpt, calib, "--calib")
    _check_default_fits(ckpt, val, "--val")
    if calib_size <= 0:
        raise ConfigError(f"--calib-size must be positive, got {calib_size}")
    calib_set = open_images(calib, "calib").sample(calib_size, seed)
    val_set = open_images(val, "val", ckpt.config.num_classes)
    calib_images = load_tensors(calib_set, preprocess, "Loading calibration images")
    return JobImages(calib_set, calib_images, val_set)
