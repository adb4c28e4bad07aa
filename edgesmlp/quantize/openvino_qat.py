"""Quantization-aware training for OpenVINO: NNCF's PyTorch quantizers (trainable ranges) on the shipped
form, fine-tuned by distillation, then converted to an OpenVINO INT8 model."""

from __future__ import annotations

import contextlib
import copy
import sys

import numpy as np
import torch

from edgesmlp.export import to_openvino
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig, Preset, require_nncf
from edgesmlp.quantize.qat import QATJob, fine_tune


def quantize_aware_training(model: torch.nn.Module, teacher: torch.nn.Module, calibration: np.ndarray,
                            config: OpenVINOPTQConfig, job: QATJob, preprocess, in_chans: int, image_size: int,
                            log) -> tuple[object, dict]:
    """Return (the fine-tuned INT8 ov.Model, the training summary)."""
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    calib = torch.from_numpy(calibration)
    preset = nncf.QuantizationPreset.PERFORMANCE if config.preset is Preset.performance else nncf.QuantizationPreset.MIXED
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: keep stdout for results
        student = nncf.quantize(copy.deepcopy(model), nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                                preset=preset, subset_size=len(calib),
                                advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    summary = fine_tune(student, teacher, job, preprocess, log)
    return to_openvino(student.eval(), in_chans, image_size), summary
