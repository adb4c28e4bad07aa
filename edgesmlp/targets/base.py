"""The seam every target implements: check options early, then build artifacts and return variants.

A target's ``build(job, folder, log)`` quantizes, writes its artifacts into ``folder`` (a temporary
folder the pipeline renames into place), and returns one :class:`Variant` per precision it can run
here. The pipeline evaluates and times every variant the same way, whatever the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgesmlp.calibration.options import JobImages
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.checkpoint import Checkpoint
from edgesmlp.evaluate import Runner



@dataclass
class Variant:
    precision: str  # fp32, fp16, int8
    runtime: str  # what executes it here, e.g. "OpenVINO CPU" or "emulated (ONNX Runtime CPU)"
    make_runner: Callable[[int, bool], Runner]  # (batch, latency_mode) -> runner
    size_mb: float | None = None
    quantize_seconds: float | None = None
    note: str = ""


@dataclass
class Job:
    """What every target gets: the loaded checkpoint, its deploy form, and the calibration images."""

    ckpt: Checkpoint
    model: torch.nn.Module  # the form being shipped (deploy by default)
    form: str
    preprocess: Preprocess
    images: JobImages
    options: dict = field(default_factory=dict)


@dataclass
class Build:
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)  # target-specific entries for manifest.json
    scratch: list[Path] = field(default_factory=list)  # files used for comparison rows, removed before shipping


def calibration_array(job: Job) -> np.ndarray:
    return job.images.calib.x.numpy()


def folder_size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


def fine_tune_job(job: Job, student, log) -> dict:
    """QAT for any target: distil the job's FP32 model into ``student`` on the job's training images."""
    from edgesmlp.quantize.qat import fine_tune

    opts = job.options
    return fine_tune(student, job.ckpt.model, opts["train"], job.preprocess, opts["qat"], opts["checkpoint"],
                     opts["identity"], opts.get("resume", False), log)
