"""Exports that prove themselves: ONNX (onnx.checker, then ONNX Runtime against PyTorch), and OpenVINO's model."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgesmlp.artifacts import atomic_file
from edgesmlp.errors import ExportError

OPSET = 18  # the dynamo exporter's native opset; asking for less triggers a lossy down-conversion
EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    opset: int
    batch: int | str


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool, opset: int) -> None:
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)  # the exporter logs pages of notes about absent torchvision ops
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, opset_version=opset, external_data=False,
                input_names=["input"], output_names=["logits"], **kwargs,
            )
    finally:
        torch_logger.setLevel(level)


@torch.no_grad()
def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    image_size: int,
    in_chans: int = 3,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = OPSET,
    tolerance: float = EXPORT_TOLERANCE,
    reference: torch.nn.Module | None = None,
) -> ExportResult:
    """Export ``model`` to ``path``; raise :class:`ExportError` unless ONNX Runtime matches PyTorch.

    ``reference`` (default: ``model``) is what the ONNX logits are compared against, so a deploy-form
    export is checked against the official graph as loaded.
    """
    reference = (model if reference is None else reference).eval()
    import onnx

    path = Path(path)
    model = model.eval()
    # torch.export specialises a size-1 dimension, so a dynamic batch is traced at batch 2.
    example_batch = max(batch, 2) if dynamic_batch else batch
    example = torch.randn(example_batch, in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with atomic_file(path) as tmp:
        try:
            _export(model, example, tmp, dynamic_batch, opset)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full disk, said as such by the CLI
            raise ExportError(f"torch.onnx.export failed: {str(e).splitlines()[0]}") from e
        except Exception as e:  # noqa: BLE001 - exporter errors are long; keep the first line
            raise ExportError(f"torch.onnx.export failed: {str(e).splitlines()[0]}") from e
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0]}") from None
        from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

        run = OnnxRuntimeRunner(tmp)  # one session for every probe
        # Check at a second batch size too when the batch is dynamic.
        probes = [example] + ([torch.cat([example, example.flip(0)] * 2)] if dynamic_batch else [])
        diff = 0.0
        for probe in probes:
            expected = reference(probe).numpy()
            got = run(probe.numpy())
            diff = max(diff, float(np.abs(expected - got).max()))
        if not diff <= tolerance:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch: max |logit difference| {diff:.3g} > {tolerance:g}; nothing written"
            )
    return ExportResult(path=path, max_abs_diff=diff, opset=opset, batch="dynamic" if dynamic_batch else batch)


def to_openvino(model: torch.nn.Module, in_chans: int, image_size: int, batch: int = 1):
    """Convert a PyTorch module to an ov.Model with input ``input`` and output ``logits``.

    The batch is static (1 unless asked; -1 makes it dynamic): a dynamic-batch IR compiled as it is runs
    batch 1 slower on the CPU than the same IR at a static batch (docs/design.md), and benchmark_app refuses it
    without -shape. A static IR is what ``compile_model("model.xml")`` runs at the speed edgesmlp reports.
    """
    from edgesmlp.runtimes.openvino import require_openvino

    ov = require_openvino()
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    example = torch.zeros(max(batch, 1), in_chans, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation notes from OpenVINO's frontend
        # OpenVINO's own tracing, less torch.jit.trace's check_trace (a second trace and run to compare, about
        # a second per model): sMLPNet has no data-dependent control flow for a second trace to catch.
        decoder = TorchScriptPythonDecoder(model.eval(), example_input=example, trace_kwargs={"check_trace": False})
        converted = ov.convert_model(decoder, example_input=example, input=[batch, in_chans, image_size, image_size])
    converted.inputs[0].get_tensor().set_names({"input"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted
