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


def check(options: dict) -> None:
    from edgesmlp.quantize.qdq import QDQConfig

    if options.get("qdq") is not None and not isinstance(options["qdq"], QDQConfig):
        raise TypeError("options['qdq'] must be a QDQConfig")


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
    summary = quantize_qdq(folder / FP32_ONNX, folder / INT8_ONNX, calibration_array(job), config)
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

    variants = [
        Variant("fp32", "ONNX Runtime CPU", ort(folder / FP32_ONNX), folder_size_mb(folder / FP32_ONNX)),
        Variant("int8", EMULATED, ort(folder / INT8_ONNX), folder_size_mb(folder / INT8_ONNX), seconds,
                note="Q/DQ graph executed by ONNX Runtime on the CPU: accuracy proxy for the TensorRT INT8 engine"),
    ]
    notes = [
        "INT8 accuracy is emulated: ONNX Runtime executes the TensorRT-rule Q/DQ graph on this CPU. Its latency is "
        "this CPU's, not the Jetson's.",
        "TensorRT engine results (FP16, INT8 on the GPU) come from running `edgesmlp bench --target jetson` on the "
        "device itself, where TensorRT is installed; see README.md in this folder.",
    ]
    return Build(variants, notes, {
        "qdq": config.to_dict(),
        "qdq_summary": vars(summary),
        "lint": {"errors": 0, "warnings": len(findings)},
        "artifacts": {"int8_qdq_onnx": INT8_ONNX, "fp32_onnx": FP32_ONNX, "build_script": "build_engine.sh"},
        "engine_input": {"name": "input", "shape": [chans, size, size], "max_batch": MAX_ENGINE_BATCH},
    })


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
