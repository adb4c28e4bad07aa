"""OpenVINO on Intel (and other x86) CPUs: convert, save IR, compile, run.

FP32 is compiled with INFERENCE_PRECISION_HINT=f32: on CPUs with bf16 support OpenVINO's default is
bf16, which would make "FP32" numbers neither FP32 nor comparable across machines. INT8 models get the
same hint, so only the quantized layers differ from FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesmlp.errors import MissingDependencyError

INSTALL = "pip install 'openvino>=2024.4'"


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "the OpenVINO target", INSTALL) from None
    return openvino


def to_openvino(model: torch.nn.Module, in_chans: int, image_size: int):
    """Convert a PyTorch module to an ov.Model with a dynamic batch dimension."""
    ov = require_openvino()
    example = torch.zeros(1, in_chans, image_size, image_size)
    converted = ov.convert_model(model.eval(), example_input=example, input=[-1, in_chans, image_size, image_size])
    converted.inputs[0].get_tensor().set_names({"input"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


def save_ir(model, path: Path) -> None:
    """Write model.xml + model.bin; weights stay as they are (no FP16 compression of FP32 weights)."""
    ov = require_openvino()
    ov.save_model(model, str(path), compress_to_fp16=False)


class OpenVINORunner:
    """A compiled model at one static batch size: ``runner(x) -> logits``.

    Always one stream (the LATENCY hint): with NUM_STREAMS=2, OpenVINO 2026.4 gave INT8 logits that
    differ from its single-stream ones (cosine 0.991 vs 0.9999 on the bundled model), and accuracy
    must be measured in the configuration that is timed.
    """

    def __init__(self, model, batch: int, threads: int = 0):
        ov = require_openvino()
        shaped = model.clone()
        dims = shaped.inputs[0].get_partial_shape()
        shaped.reshape({shaped.inputs[0]: [batch, *(dims[i].get_length() for i in range(1, len(dims)))]})
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.batch = batch
        self.request = ov.Core().compile_model(shaped, "CPU", config).create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[0].copy()


def ir_size_mb(xml_path: Path) -> float:
    return (xml_path.stat().st_size + xml_path.with_suffix(".bin").stat().st_size) / 1e6


def check(options: dict) -> None:
    """Refuse, before any work, what this target cannot do."""
    from edgesmlp.quantize.openvino_ptq import check_request

    require_openvino()
    check_request(options["ptq"], deploy_form=options["form"] == "deploy")


def build(job, folder: Path, log):
    """NNCF INT8 of the job's model; writes model.xml/.bin (INT8) and model_fp32.xml/.bin."""
    import time

    from edgesmlp.quantize.openvino_ptq import check_ignored, quantize_openvino
    from edgesmlp.targets.base import Build, Variant, calibration_array

    config = job.options["ptq"]
    fp32 = to_openvino(job.model, job.ckpt.config.in_chans, job.ckpt.config.image_size)
    check_ignored(fp32, config)
    log(f"quantizing for OpenVINO ({job.form} form, {len(job.images.calib.keys)} calibration images, "
        f"preset {config.preset.value})")
    start = time.perf_counter()
    int8 = quantize_openvino(fp32, calibration_array(job), config, deploy_form=job.form == "deploy")
    seconds = time.perf_counter() - start
    threads = job.options.get("threads", 0)

    def runner(model):
        return lambda batch, latency: OpenVINORunner(model, batch, threads)

    variants = [Variant("fp32", "OpenVINO CPU", runner(fp32))]
    manifest = {}
    if job.options.get("method") == "qat":
        save_ir(int8, folder / ".ptq.xml")
        variants.append(Variant("int8-ptq", "OpenVINO CPU", runner(int8), ir_size_mb(folder / ".ptq.xml"), seconds,
                                note="PTQ, for comparison"))
        start = time.perf_counter()
        int8, manifest["qat"] = quantize_aware_training(job, config, log)
        seconds = time.perf_counter() - start
    save_ir(int8, folder / "model.xml")
    save_ir(fp32, folder / "model_fp32.xml")
    variants[0].size_mb = ir_size_mb(folder / "model_fp32.xml")
    variants.append(Variant("int8", "OpenVINO CPU", runner(int8), ir_size_mb(folder / "model.xml"), seconds,
                            note="QAT" if manifest else ""))
    return Build(
        variants=variants,
        scratch=[folder / ".ptq.xml", folder / ".ptq.bin"],
        notes=["OpenVINO compiles both precisions with INFERENCE_PRECISION_HINT=f32: layers NNCF left unquantized "
               "run in FP32 (OpenVINO's CPU default on bf16-capable CPUs is bf16)."],
        manifest={"ptq": config.to_dict(), "artifacts": {"int8": "model.xml", "fp32": "model_fp32.xml"}, **manifest},
    )


def quantize_aware_training(job, config, log):
    """NNCF's QAT: its PyTorch quantizers (trainable ranges) on the deploy form, fine-tuned, then converted."""
    import contextlib
    import copy
    import sys
    import warnings

    import torch

    from edgesmlp.errors import ConfigError
    from edgesmlp.quantize.openvino_ptq import require_nncf
    from edgesmlp.targets.base import calibration_array, fine_tune_job

    nncf = require_nncf()
    if config.ignored or config.smooth_quant is not None:
        raise ConfigError("--ignore and --smooth-quant name OpenVINO-graph settings; --method qat quantizes the "
                          "PyTorch graph: drop them for QAT")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    calib = torch.from_numpy(calibration_array(job))
    preset = nncf.QuantizationPreset.PERFORMANCE if config.preset.value == "performance" else nncf.QuantizationPreset.MIXED
    with contextlib.redirect_stdout(sys.stderr):
        student = nncf.quantize(copy.deepcopy(job.model), nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                                preset=preset, subset_size=len(calib),
                                advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    summary = fine_tune_job(job, student, log)
    c = job.ckpt.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = require_openvino().convert_model(student.eval(), example_input=torch.zeros(1, c.in_chans, c.image_size,
                                                c.image_size), input=[-1, c.in_chans, c.image_size, c.image_size])
    int8.inputs[0].get_tensor().set_names({"input"})
    int8.outputs[0].get_tensor().set_names({"logits"})
    return int8, summary


def available() -> str | None:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed: {INSTALL}"
    return None


def bench_build(job, folder: Path, log):
    folder.mkdir(parents=True, exist_ok=True)
    return build(job, folder, log)


def load(folder: Path, threads: int = 0):
    """Variants from an existing `quantize --target openvino` folder (model.xml, model_fp32.xml)."""
    from edgesmlp.errors import InputError
    from edgesmlp.targets.base import Build, Variant

    ov = require_openvino()
    core, variants = ov.Core(), []
    for precision, name in (("fp32", "model_fp32.xml"), ("int8", "model.xml")):
        xml = folder / name
        if not xml.is_file():
            raise InputError(f"{folder} has no {name}: point --from at a `quantize --target openvino` output")
        model = core.read_model(str(xml))
        variants.append(Variant(precision, "OpenVINO CPU", lambda b, lat, m=model: OpenVINORunner(m, b, threads),
                                ir_size_mb(xml)))
    return Build(variants, [f"OpenVINO IRs loaded from {folder}."])
