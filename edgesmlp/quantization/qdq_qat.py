"""Quantization-aware training for the TensorRT Q/DQ graph: fake quantization where the Q/DQ ONNX
quantizes, then the fine-tuned weights exported in the same Q/DQ form.

Activation ranges are calibrated once (the PTQ quantizers) and held fixed while the weights train;
the export calibrates the fine-tuned FP32 graph with the same method on the same images, which
reproduces those ranges, and applies the same placement rules, so the result passes lint-qdq.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesmlp.export import export_onnx
from edgesmlp.quantization.fakequant import QATDeploySMLPNet
from edgesmlp.quantization.qat import QATJob, fine_tune
from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq


def quantize_aware_training(model: torch.nn.Module, teacher: torch.nn.Module, calibration: np.ndarray,
                            config: QDQConfig, job: QATJob, preprocess, out_path: Path, scratch: Path, log) -> dict:
    """Fine-tune the deploy form ``model``; write its Q/DQ ONNX to ``out_path``; return the training summary."""
    student = QATDeploySMLPNet(model)
    student.calibrate(torch.from_numpy(np.asarray(calibration)), config.method, config.percentile)
    summary = fine_tune(student, teacher, job, preprocess, log)
    tuned = student.float_model()
    c = tuned.config
    export_onnx(tuned, scratch, c.image_size, c.in_chans, dynamic_batch=True, reference=tuned)
    quantize_qdq(scratch, out_path, calibration, config)
    return summary
