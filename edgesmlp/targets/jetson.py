"""NVIDIA Jetson (TensorRT): an explicitly quantized Q/DQ ONNX and an on-device bundle.

A TensorRT engine is tied to the GPU and TensorRT version that built it, so the engine for a Jetson
is built on the Jetson. Here we produce what it needs: the TensorRT-rule Q/DQ ONNX (checked by
``qdq_lint``), the FP32 ONNX, ``build_engine.sh`` with the trtexec lines for the TensorRT version it
finds, and a README. INT8 accuracy here is ONNX Runtime executing the Q/DQ graph on the CPU, labelled
"emulated"; engine numbers come from running ``edgesmlp bench --target jetson`` where TensorRT is.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgesmlp.errors import ExportError
from edgesmlp.targets.base import Build, Job, Variant, calibration_array, folder_size_mb

FP32_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8_qdq.onnx"
EMULATED = "emulated (ONNX Runtime CPU)"
MAX_ENGINE_BATCH = 32
ENGINE_DEVICE = "cuda"  # where engine buffers live (tests use host memory with the TensorRT stand-in)


def check(options: dict) -> None:
    """Nothing to refuse up front: ONNX Runtime and onnx are core dependencies, and QDQConfig validates itself."""


def build(job: Job, folder: Path, log) -> Build:
    from edgesmlp.export import export_onnx
    from edgesmlp.quantize.qdq import QDQConfig, quantize_qdq
    from edgesmlp.quantize.qdq_lint import lint_qdq
    from edgesmlp.targets.onnxruntime import OnnxRuntimeRunner

    config = job.options.get("qdq") or QDQConfig()
    size, chans = job.ckpt.config.image_size, job.ckpt.config.in_chans
    log(f"exporting FP32 ONNX ({job.form} form)")
    export_onnx(job.model, folder / FP32_ONNX, size, chans, dynamic_batch=True, reference=job.ckpt.model)
    log(f"calibrating Q/DQ ({config.method.value}, {len(job.images.calib.keys)} images)")
    start = time.perf_counter()
    qat = job.options.get("method") == "qat"
    ptq_path = folder / (".ptq_qdq.onnx" if qat else INT8_ONNX)
    summary = quantize_qdq(folder / FP32_ONNX, ptq_path, calibration_array(job), config)
    seconds = time.perf_counter() - start
    extra = {}
    if qat:
        start = time.perf_counter()
        extra["qat"] = quantize_aware_training(job, config, folder, log)
        seconds = time.perf_counter() - start
    findings = lint_qdq(folder / INT8_ONNX)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise ExportError(f"the Q/DQ model breaks TensorRT's rules ({len(errors)} errors), first: {errors[0]}")
    write_build_script(folder, chans, size)
    write_device_readme(folder, job)
    threads = job.options.get("threads", 0)

    def ort(path):
        return lambda batch, latency: OnnxRuntimeRunner(path, threads)

    variants = [Variant("fp32", "ONNX Runtime CPU", ort(folder / FP32_ONNX), folder_size_mb(folder / FP32_ONNX))]
    if qat:
        variants.append(Variant("int8-ptq", EMULATED, ort(ptq_path), folder_size_mb(ptq_path),
                                note="PTQ, for comparison"))
    variants.append(Variant("int8", EMULATED, ort(folder / INT8_ONNX), folder_size_mb(folder / INT8_ONNX), seconds,
                            note=("QAT; " if qat else "") + "Q/DQ graph executed by ONNX Runtime on the CPU: accuracy "
                            "proxy for the TensorRT INT8 engine"))
    notes = [
        "INT8 accuracy is emulated: ONNX Runtime executes the TensorRT-rule Q/DQ graph on this CPU. Its latency is "
        "this CPU's, not the Jetson's.",
        "TensorRT engine results (FP16, INT8 on the GPU) come from running `edgesmlp bench --target jetson` on the "
        "device itself, where TensorRT is installed; see README.md in this folder.",
    ]
    return Build(variants, notes, {
        **extra,
        "qdq": config.to_dict(),
        "qdq_summary": vars(summary),
        "lint": {"errors": 0, "warnings": len(findings)},
        "artifacts": {"int8_qdq_onnx": INT8_ONNX, "fp32_onnx": FP32_ONNX, "build_script": "build_engine.sh"},
        "engine_input": {"name": "input", "shape": [chans, size, size], "max_batch": MAX_ENGINE_BATCH},
    }, scratch=[folder / ".ptq_qdq.onnx", folder / ".qat_fp32.onnx"])


def quantize_aware_training(job: Job, config, folder: Path, log) -> dict:
    """Fine-tune with fake quantization where the Q/DQ ONNX quantizes, then export its Q/DQ form.

    Activation ranges are calibrated once (the PTQ quantizers) and held fixed while the weights train;
    the export calibrates the fine-tuned FP32 graph with the same method on the same images, which
    reproduces those ranges, and applies the same placement rules, so the result passes lint-qdq.
    """
    import torch

    from edgesmlp.export import export_onnx
    from edgesmlp.quantize.fakequant import QATDeploySMLPNet
    from edgesmlp.quantize.qdq import quantize_qdq
    from edgesmlp.targets.base import fine_tune_job

    student = QATDeploySMLPNet(job.model)
    student.calibrate(torch.from_numpy(calibration_array(job)), config.method, config.percentile)
    summary = fine_tune_job(job, student, log)
    c = job.ckpt.config
    tuned = student.model.eval()
    export_onnx(tuned, folder / ".qat_fp32.onnx", c.image_size, c.in_chans, dynamic_batch=True, reference=tuned)
    quantize_qdq(folder / ".qat_fp32.onnx", folder / INT8_ONNX, calibration_array(job), config)
    return summary


def write_build_script(folder: Path, chans: int, size: int) -> None:
    shape = f"{chans}x{size}x{size}"
    text = BUILD_SCRIPT.replace("@SHAPE@", shape).replace("@MAXB@", str(MAX_ENGINE_BATCH))
    script = folder / "build_engine.sh"
    script.write_text(text)
    script.chmod(0o755)


BUILD_SCRIPT = r"""#!/usr/bin/env bash
# Build TensorRT engines from this bundle ON THE DEVICE: an engine only runs on the GPU and the
# TensorRT version that built it (JetPack 6.x ships TensorRT 10.3).
#   ./build_engine.sh [path/to/trtexec] [--dla N]
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${1:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
shift || true
DLA=()
if [ "${1:-}" = "--dla" ]; then DLA=(--useDLACore="$2" --allowGPUFallback); fi
if [ ! -x "$TRTEXEC" ]; then
  echo "error: trtexec not found; pass its path (on Jetson: /usr/src/tensorrt/bin/trtexec)" >&2; exit 2
fi
# trtexec prints e.g. "[TensorRT v100300]" (10.3.0) or "[TensorRT v8601]" (8.6.1).
CODE=$("$TRTEXEC" --help 2>&1 | grep -oE 'TensorRT v[0-9]+' | head -1 | grep -oE '[0-9]+' || echo 0)
if [ "$CODE" -ge 100000 ]; then MAJOR=$((CODE / 10000)); MINOR=$(((CODE / 100) % 100));
else MAJOR=$((CODE / 1000)); MINOR=$(((CODE / 100) % 10)); fi
echo "TensorRT $MAJOR.$MINOR"
SHAPES=(--minShapes=input:1x@SHAPE@ --optShapes=input:1x@SHAPE@ --maxShapes=input:@MAXB@x@SHAPE@)
COMMON=(--timingCacheFile=timing.cache --memPoolSize=workspace:1024M "${SHAPES[@]}" "${DLA[@]}")
if [ "$MAJOR" -gt 10 ] || { [ "$MAJOR" -eq 10 ] && [ "$MINOR" -ge 12 ]; }; then
  # TensorRT >= 10.12: strongly typed networks; precision comes from the graph (the Q/DQ nodes make
  # the INT8 layers), and the --int8/--fp16 builder flags are deprecated or gone.
  "$TRTEXEC" --onnx=model_int8_qdq.onnx --stronglyTyped --saveEngine=model_int8.engine "${COMMON[@]}"
  "$TRTEXEC" --onnx=model_fp32.onnx --stronglyTyped --saveEngine=model_fp32.engine "${COMMON[@]}"
else
  # TensorRT 10.0-10.11 (and 8.6): precision flags; --fp16 lets the layers left in float run in FP16.
  "$TRTEXEC" --onnx=model_int8_qdq.onnx --int8 --fp16 --saveEngine=model_int8.engine "${COMMON[@]}"
  "$TRTEXEC" --onnx=model_fp32.onnx --fp16 --saveEngine=model_fp16.engine "${COMMON[@]}"
fi
echo "built: $(ls *.engine | tr '\n' ' ')"
"""


def write_device_readme(folder: Path, job: Job) -> None:
    c = job.ckpt.config
    (folder / "README.md").write_text(f"""# Jetson bundle

Built by `edgesmlp quantize --target jetson` for an sMLPNet ({c.variant or 'custom'}, {c.image_size}x{c.image_size},
{c.num_classes} classes). Input tensor `input`, shape N x {c.in_chans} x {c.image_size} x {c.image_size}, float32,
preprocessed as `manifest.json` says; output `logits`.

| file | what |
| --- | --- |
| `{INT8_ONNX}` | explicitly quantized INT8 (Q/DQ) ONNX, TensorRT placement rules, checked by `edgesmlp lint-qdq` |
| `{FP32_ONNX}` | the same network in FP32 (deploy form), for the FP16 engine and as the reference |
| `build_engine.sh` | trtexec lines for INT8 and FP16 engines, for the TensorRT version it finds |
| `report.json`, `report.md` | accuracy and latency measured where this bundle was made (INT8 emulated by ONNX Runtime) |
| `manifest.json` | versions, hashes of weights and calibration list, every option |

## On the Jetson

Engines are specific to the GPU and TensorRT version, so build them there:

```bash
./build_engine.sh                      # trtexec on PATH or /usr/src/tensorrt/bin/trtexec
./build_engine.sh "" --dla 0           # optional: DLA core 0 with GPU fallback (Orin)
```

Or let edgesmlp build (or load) the engines with TensorRT's Python API, measure FP16 against INT8
(latency p50/p90 at batch 1, throughput at batch {MAX_ENGINE_BATCH}) and check INT8 accuracy on your images,
writing the same report format there:

```bash
pip install edgesmlp            # beside JetPack's tensorrt and torch
edgesmlp bench --target jetson --bundle . --val /path/to/val/images
```
""")


# --- TensorRT engines, where TensorRT and a GPU are present (the device) ----------------------------------


def available() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return ("TensorRT is not installed here: engines are built and measured on the device (quantize --target "
                "jetson writes the bundle; run `edgesmlp bench --target jetson --from BUNDLE` there)")
    if not gpu_visible():
        return "no CUDA GPU is visible to torch: TensorRT engines need the device's GPU"
    return None


def gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def bench_build(job: Job, folder: Path, log) -> Build:
    folder.mkdir(parents=True, exist_ok=True)
    build(job, folder, log)  # the bundle: FP32 ONNX and the Q/DQ ONNX the engines are built from
    return engine_variants(folder, (job.ckpt.config.in_chans, job.ckpt.config.image_size, job.ckpt.config.image_size),
                           log, job.options.get("dla_core"))


def load(folder: Path, threads: int = 0, log=print, dla_core: int | None = None) -> Build:
    """Engines from a bundle folder: loaded if built already (by build_engine.sh or earlier), else built."""
    import json

    from edgesmlp.errors import InputError

    manifest = folder / "manifest.json"
    if manifest.is_file():
        shape = tuple(json.loads(manifest.read_text())["engine_input"]["shape"])
    elif (folder / FP32_ONNX).is_file():
        import onnx

        dims = onnx.load(str(folder / FP32_ONNX), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims[1:])
    else:
        raise InputError(f"{folder} is not a Jetson bundle (no manifest.json or {FP32_ONNX}): point --from at the "
                         "folder `quantize --target jetson` wrote")
    return engine_variants(folder, shape, log, dla_core)


def engine_variants(folder: Path, shape: tuple[int, int, int], log, dla_core: int | None = None) -> Build:
    from edgesmlp.artifacts import atomic_file
    from edgesmlp.targets.tensorrt import (EngineConfig, EngineRunner, build_engine, require_cuda, require_tensorrt,
                                           strongly_typed)

    trt = require_tensorrt()
    require_cuda()
    float_precision = "fp32" if strongly_typed(trt) else "fp16"
    variants = []
    for precision, source in (("int8", INT8_ONNX), (float_precision, FP32_ONNX)):
        engine_path = folder / f"model_{precision}.engine"
        seconds = None
        if engine_path.is_file():
            engine = engine_path.read_bytes()
        else:
            log(f"building TensorRT {precision.upper()} engine from {source} (TensorRT {trt.__version__})")
            start = time.perf_counter()
            engine = build_engine(folder / source, EngineConfig(precision, shape, max_batch=MAX_ENGINE_BATCH,
                                                                dla_core=dla_core,
                                                                timing_cache=folder / "timing.cache"), trt)
            seconds = time.perf_counter() - start
            with atomic_file(engine_path) as tmp:
                tmp.write_bytes(engine)
        variants.append(Variant(precision, "TensorRT GPU", lambda b, lat, e=engine: EngineRunner(e, trt, ENGINE_DEVICE),
                                len(engine) / 1e6, seconds, note=f"TensorRT {trt.__version__}"))
    return Build(variants, [f"TensorRT {trt.__version__} engines in {folder}; latency from CUDA events."])
