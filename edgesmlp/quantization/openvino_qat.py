"""Quantization-aware training for OpenVINO, with no code compiled at run time.

The student is the deploy form with edgesmlp's own fake quantization (``QATDeploySMLPNet``): weights per
channel, activations per tensor at the Q/DQ placement, ranges calibrated on the calibration images
and then trained with the weights (``learn_ranges``). Its fake-quantize ops convert to OpenVINO
FakeQuantize nodes, which OpenVINO's CPU plugin executes in INT8, and ``save_model`` stores the
quantized weights as INT8. The trained student is exported with its token mixing channels-last, as
PTQ's graph is (``deploy.set_channels_last``: faster INT8, no Reorders; benchmarks/results/openvino_int8.md), unless
OpenVINO cannot compile it. (NNCF's PyTorch QAT compiles a C++ extension on first use, which can time
out on a loaded machine and then stays locked; this path needs none.)
"""

from __future__ import annotations

import numpy as np
import torch

from edgesmlp.deploy import set_channels_last
from edgesmlp.export import to_openvino
from edgesmlp.quantization.calibrate import CalibMethod
from edgesmlp.quantization.fakequant import QATDeploySMLPNet
from edgesmlp.quantization.openvino_ptq import requantize_transposed_concats
from edgesmlp.quantization.qat import QATJob, fine_tune
from edgesmlp.runtimes.openvino import compile_error, with_batch

INIT_METHOD, INIT_PERCENTILE = CalibMethod.percentile, 99.99  # where the trained ranges start


def quantize_aware_training(model: torch.nn.Module, teacher: torch.nn.Module, calibration: np.ndarray, job: QATJob,
                            preprocess, log, weight_bits: int = 8, conv_fuse: bool = False) -> tuple[object, dict]:
    """Return (the fine-tuned INT8 ov.Model, the training summary) for the deploy form ``model``, its weights
    trained and shipped in ``weight_bits`` (7 for x86 CPUs without VNNI: ``OpenVINOPTQConfig.weight_bits``) and its
    channels-last Concats fused by the 1x1 convolution where ``conv_fuse`` (``OpenVINOPTQConfig.fuse``)."""
    student = QATDeploySMLPNet(model, learn_ranges=True, weight_bits=weight_bits)
    student.calibrate(torch.from_numpy(np.asarray(calibration)), INIT_METHOD, INIT_PERCENTILE)
    summary = fine_tune(student, teacher, job, preprocess, log)
    c = student.model.config
    set_channels_last(student.eval().model, conv_fuse=conv_fuse)
    # Exported with a dynamic batch so the NHWC reshapes follow the batch (as PTQ's graph), then shipped at batch 1.
    int8 = with_batch(to_openvino(student, c.in_chans, c.image_size, batch=-1), 1)
    requantize_transposed_concats(int8)  # the Concat's inputs share one quantizer (fuse_in, with mix_in)
    if (error := compile_error(int8)) is not None:
        log(f"OpenVINO cannot compile the channels-last QAT graph ({error}): exporting the NCHW deploy form")
        set_channels_last(student.model, enabled=False)
        int8 = with_batch(to_openvino(student, c.in_chans, c.image_size, batch=-1), 1)
    return int8, summary
