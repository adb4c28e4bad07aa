"""NVIDIA Jetson (TensorRT): an explicitly quantized Q/DQ ONNX bundle here, TensorRT engines on the device.

A TensorRT engine is tied to the GPU and TensorRT version that built it, so the engine for a Jetson
is built on the Jetson. ``build`` writes what it needs: the TensorRT-rule Q/DQ ONNX (checked by
``qdq_lint``), the FP32 ONNX, ``build_engine.sh`` with the trtexec lines for the TensorRT version it
finds, and a README; its INT8 row here is ONNX Runtime executing the Q/DQ graph on the CPU, labelled
"emulated". ``load``, where TensorRT and a GPU are (the device), builds or loads the engines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgesmlp.errors import ConfigError, ExportError, InputError
from edgesmlp.quantize.qdq import QDQConfig
from edgesmlp.targets.base import (Build, Job, Log, RunSettings, Target, TargetOptions, Variant, choose_float_layers,
                                   searches, size_mb)

FP32_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8_qdq.onnx"
ALL_INT8_ONNX = ".all_int8_qdq.onnx"  # full INT8, beside a model.xml that keeps layers in float (comparison only)
EMULATED = "emulated (ONNX Runtime CPU)"
MAX_ENGINE_BATCH = 32


@dataclass(frozen=True)
class JetsonConfig:
    qdq: QDQConfig = QDQConfig()  # calibration method and Q/DQ placement
    dla_core: int | None = None  # on the device: build engines for this DLA core, with GPU fallback

    def __post_init__(self) -> None:
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core must be 0 or more, got {self.dla_core}")

    def to_dict(self) -> dict:
        return {**self.qdq.to_dict(), "dla_core": self.dla_core}


def _quantized_layers(path: Path) -> int:
    import onnx

    from edgesmlp.quantize.partial import quantized_nodes

    return len(quantized_nodes(onnx.load(str(path))))


def _ort(path: Path, run: RunSettings, emulated: bool = False):
    """ONNX Runtime on ``path``; ``emulated``: the Q/DQ graph's own math on this CPU
    (``runtimes.onnxruntime.emulation_runner``), TensorRT's accuracy proxy."""
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner, emulation_runner

    make = emulation_runner if emulated else OnnxRuntimeRunner
    return lambda batch: make(path, run.cpu_threads)


class JetsonTarget(Target):
    name = "jetson"
    summary = "NVIDIA Jetson (TensorRT): Q/DQ INT8 ONNX + on-device engine bundle"
    config_type = JetsonConfig
    reads = ("jetson",)

    def config_from(self, options: TargetOptions) -> JetsonConfig:
        return JetsonConfig(QDQConfig.chosen(options.calib_method, options.percentile, options.ignored),
                            dla_core=options.dla_core)

    def check(self, config: JetsonConfig, form: str, qat: bool = False) -> None:
        if qat and config.qdq.ignored:
            raise ConfigError("--ignore keeps layers out of post-training Q/DQ; --method qat trains every quantizer: "
                              "drop --ignore for QAT")

    def available(self) -> str | None:
        import importlib.util

        from edgesmlp.runtimes import cuda

        if importlib.util.find_spec("tensorrt") is None:
            return ("TensorRT is not installed here: engines are built and measured on the device (quantize --target "
                    "jetson writes the bundle; run `edgesmlp bench --target jetson --from BUNDLE` there)")
        if cuda.device_count() == 0:
            return "no CUDA GPU is visible (libcudart found no device): TensorRT engines need the device's GPU"
        return None

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        from edgesmlp.export import export_onnx
        from edgesmlp.quantize.qdq import quantize_qdq
        from edgesmlp.quantize.qdq_lint import lint_qdq

        config, c = job.config.qdq, job.ckpt.config
        log(f"exporting FP32 ONNX ({job.form} form)")
        export_onnx(job.model, folder / FP32_ONNX, c.image_size, c.in_chans, dynamic_batch=True, reference=job.ckpt.model)
        log(f"calibrating Q/DQ ({config.method.value}, {len(job.calibration)} images)")
        start = time.perf_counter()
        ptq_path = folder / (".ptq_qdq.onnx" if job.qat else INT8_ONNX)
        summary = quantize_qdq(folder / FP32_ONNX, ptq_path, job.calibration, config)
        extra, compare = {}, []
        if searches(job):
            config, summary, compare, extra["fallback"] = self._fit_budget(job, folder, config, summary, log)
        seconds = time.perf_counter() - start
        if job.qat is not None:
            from edgesmlp.quantize.qdq_qat import quantize_aware_training

            start = time.perf_counter()
            extra["qat"] = quantize_aware_training(job.model, job.ckpt.model, job.calibration, config, job.qat,
                                                   job.preprocess, folder / INT8_ONNX, folder / ".qat_fp32.onnx", log)
            seconds = time.perf_counter() - start
        findings = lint_qdq(folder / INT8_ONNX)
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            raise ExportError(f"the Q/DQ model breaks TensorRT's rules ({len(errors)} errors), first: {errors[0]}")
        write_build_script(folder, c.in_chans, c.image_size)
        write_device_readme(folder, c)
        variants = [Variant("fp32", "ONNX Runtime CPU", _ort(folder / FP32_ONNX, job.run), size_mb(folder / FP32_ONNX))]
        if job.qat is not None:
            variants.append(Variant("int8-ptq", EMULATED, _ort(ptq_path, job.run, emulated=True), size_mb(ptq_path),
                                    note="PTQ, for comparison"))
        variants += compare
        variants.append(Variant("int8", EMULATED, _ort(folder / INT8_ONNX, job.run, emulated=True), size_mb(folder / INT8_ONNX), seconds,
                                note=("QAT; " if job.qat else "") + "Q/DQ graph executed by ONNX Runtime on the CPU: "
                                "accuracy proxy for the TensorRT INT8 engine", kept_float=config.ignored,
                                quantized_layers=_quantized_layers(folder / INT8_ONNX)))
        notes = [
            "INT8 accuracy is emulated: ONNX Runtime executes the TensorRT-rule Q/DQ graph on this CPU. Its latency is "
            "this CPU's, not the Jetson's.",
            "TensorRT engine results (FP16, INT8 on the GPU) come from running `edgesmlp bench --target jetson` on the "
            "device itself, where TensorRT is installed; see README.md in this folder.",
        ]
        return Build(variants, notes, {
            **extra,
            "qdq": replace(job.config, qdq=config).to_dict(),
            "qdq_summary": vars(summary),
            "lint": {"errors": 0, "warnings": len(findings)},
            "artifacts": {"int8_qdq_onnx": INT8_ONNX, "fp32_onnx": FP32_ONNX, "build_script": "build_engine.sh"},
            "engine_input": {"name": "input", "shape": [c.in_chans, c.image_size, c.image_size],
                             "max_batch": MAX_ENGINE_BATCH},
        }, scratch=[folder / ".ptq_qdq.onnx", folder / ".qat_fp32.onnx", folder / ALL_INT8_ONNX])

    def _fit_budget(self, job: Job, folder: Path, config: QDQConfig, summary, log: Log):
        """Keep the fewest, most sensitive layers in float (their Q/DQ removed: FP16 on the device) until the
        Q/DQ graph meets the job's budget on the calibration images; the full-INT8 graph becomes a comparison row."""
        import onnx

        from edgesmlp.quantize.partial import QDQPartial
        from edgesmlp.quantize.qdq import quantize_qdq

        graph = QDQPartial(onnx.load(str(folder / FP32_ONNX)), onnx.load(str(folder / INT8_ONNX)), job.run.cpu_threads)
        choice = choose_float_layers(job, graph, log)
        compare = []
        if choice.kept_float:
            (folder / INT8_ONNX).replace(folder / ALL_INT8_ONNX)
            compare.append(Variant("int8-all", EMULATED, _ort(folder / ALL_INT8_ONNX, job.run, emulated=True),
                                   size_mb(folder / ALL_INT8_ONNX), kept_float=config.ignored,
                                   quantized_layers=len(graph.layers), compare_only=True,
                                   note="every layer INT8 (but --ignore), for comparison; not shipped"))
            config = replace(config, ignored=config.ignored + choice.kept_float)
            summary = quantize_qdq(folder / FP32_ONNX, folder / INT8_ONNX, job.calibration, config)
        return config, summary, compare, choice.to_dict()

    def load(self, folder: Path, config: JetsonConfig, run: RunSettings, log: Log) -> Build:
        """Engines from a bundle folder: loaded if built already (by build_engine.sh or earlier), else built."""
        from edgesmlp.artifacts import atomic_file
        from edgesmlp.runtimes import cuda
        from edgesmlp.runtimes.tensorrt import EngineConfig, EngineRunner, build_engine, require_tensorrt, strongly_typed

        trt = require_tensorrt()
        if cuda.device_count() == 0:
            raise InputError("TensorRT engines need an NVIDIA GPU, and the CUDA runtime sees none: run this on the "
                             "Jetson (or a GPU host)")
        shape = _engine_input_shape(folder)
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
                                                                    dla_core=config.dla_core,
                                                                    timing_cache=folder / "timing.cache"), trt)
                seconds = time.perf_counter() - start
                with atomic_file(engine_path) as tmp:
                    tmp.write_bytes(engine)
            variants.append(Variant(precision, "TensorRT GPU", lambda batch, e=engine: EngineRunner(e, trt),
                                    len(engine) / 1e6, seconds, note=f"TensorRT {trt.__version__}"))
        return Build(variants, [f"TensorRT {trt.__version__} engines, built on this device; latency from CUDA events."])


TARGET = JetsonTarget()


def _engine_input_shape(folder: Path) -> tuple[int, int, int]:
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return tuple(json.loads(manifest.read_text())["engine_input"]["shape"])
    if (folder / FP32_ONNX).is_file():
        import onnx

        dims = onnx.load(str(folder / FP32_ONNX), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return tuple(d.dim_value for d in dims[1:])
    raise InputError(f"{folder} is not a Jetson bundle (no manifest.json or {FP32_ONNX}): point --from at the "
                     "folder `quantize --target jetson` wrote")


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


def write_device_readme(folder: Path, c) -> None:
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

Or let edgesmlp build (or load) the engines with TensorRT's Python API, measure the float engine
against INT8 (latency p50/p90 at batch 1, throughput at batch 8) and check INT8 accuracy on your
images, writing the same report format there:

```bash
pip install edgesmlp      # the lean device side: numpy, onnx, Pillow and the CLI; no torch, OpenVINO or NNCF
edgesmlp bench --target jetson --from . --val /path/to/val/images
```

The plain install leaves JetPack's TensorRT, CUDA and torch as they are: it uses JetPack's
`tensorrt` Python module and its CUDA runtime (`libcudart`), and installs no torch. Do not install
`edgesmlp[workstation]` on the device: that is the quantization side (torch, OpenVINO, NNCF).
""")
