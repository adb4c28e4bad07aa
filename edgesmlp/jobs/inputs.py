"""Resolve a job's inputs from the checkpoint and the user's options: preprocessing, images, output folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgesmlp.artifacts import check_apart, check_replaceable, check_writable
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import ImageSet, LoadedImages, load_tensors, open_images
from edgesmlp.errors import ConfigError, DataError, OutputExistsError
from edgesmlp.jobs.spec import Calibration, JobSpec, PreprocessOverrides

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


def check_sources(ckpt: Checkpoint, calibration: Calibration, val: Path | None) -> None:
    """Refuse, before any image is opened, the bundled images for weights they do not fit."""
    check_default_fits(ckpt.bundled, calibration.images, "--calib", ckpt.path.name)
    check_default_fits(ckpt.bundled, val, "--val", ckpt.path.name)


def load_calibration(ckpt: Checkpoint, preprocess: Preprocess, calibration: Calibration) -> tuple[ImageSet, LoadedImages]:
    """The calibration sample, preprocessed in memory (hundreds of images); unreadable files skipped and counted."""
    check_default_fits(ckpt.bundled, calibration.images, "--calib", ckpt.path.name)
    images = open_images(calibration.images, "calib").sample(calibration.size, calibration.seed)
    return images, load_tensors(images, preprocess, "Loading calibration images")


def open_validation(ckpt: Checkpoint, val: Path | None) -> ImageSet:
    """The validation set, streamed at evaluation time (it may hold tens of thousands of images)."""
    check_default_fits(ckpt.bundled, val, "--val", ckpt.path.name)
    return open_images(val, "val", ckpt.config.num_classes)


@dataclass
class Inputs:
    """A job's prelude: the loaded checkpoint, its preprocessing, the validation set (streamed later) and the
    calibration sample (in memory)."""

    ckpt: Checkpoint
    preprocess: Preprocess
    val_set: ImageSet
    calib_set: ImageSet
    calib: LoadedImages


def open_inputs(spec: JobSpec, log: Callable[[str], None]) -> Inputs:
    """Load the weights, resolve their preprocessing, refuse images they do not fit, open the validation set and
    load the calibration sample: what quantize, bench and sensitivity all start with."""
    from edgesmlp.checkpoint import load_checkpoint

    ckpt = load_checkpoint(spec.weights, variant=spec.variant, ema=spec.ema)
    preprocess = resolve_preprocess(ckpt, spec.preprocess)
    check_sources(ckpt, spec.calibration, spec.val)
    val_set = open_validation(ckpt, spec.val)
    calib_set, calib = load_calibration(ckpt, preprocess, spec.calibration)
    if calib.skipped:
        key, reason = calib.skipped[0]
        log(f"warning: skipped {len(calib.skipped)} unreadable calibration image(s), e.g. {key}: {reason}")
    return Inputs(ckpt, preprocess, val_set, calib_set, calib)


def output_candidates(explicit: Path | None, default: Path, inside: str | None = None) -> Callable[[int], Path]:
    """The n-th folder a job may write: ``explicit`` (only that one), or ``default``, ``default-2``, ...
    With ``inside``, the folder is ``<root>/<inside>`` (quantize writes ``OUT/<target>``)."""

    def candidate(n: int) -> Path:
        root = explicit if explicit is not None else (default if n == 0 else Path(f"{default}-{n + 1}"))
        return root / inside if inside else root

    return candidate


def reads(spec: JobSpec) -> dict[str, Path | None]:
    """Every path a job reads, by the option that names it: an output may be none of them, nor hold or lie in one."""
    qat = getattr(spec, "qat", None)
    given = {"--weights": spec.weights, "--calib": spec.calibration.images, "--val": spec.val,
             "--train": qat.train if qat is not None else None, "--search": getattr(spec, "search", None)}
    return {option: path for option, path in given.items() if isinstance(path, (str, Path))}  # not images in memory


def origin(spec) -> str:
    """What a job's images are, for a report: the path given, the images in memory, or the bundled digits."""
    return getattr(spec, "origin", None) or str(spec or "bundled digits")


def check_output(path: Path, explicit: bool, force: bool, reads: Mapping[str, Path | None] | None = None) -> None:
    """Refuse, before any work, an output that cannot be written, is, holds or lies inside what the job reads
    (``reads``: option -> path), or exists (without --force; with it, unless edgesmlp wrote it)."""
    check_writable(path)
    check_apart(path, reads or {})
    if explicit and path.exists() and not force:
        raise OutputExistsError(f"{path} exists: pass --force to replace it, or choose another -o")
    if explicit and force:
        check_replaceable(path)
