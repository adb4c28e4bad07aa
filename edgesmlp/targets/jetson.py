"""NVIDIA Jetson (TensorRT): an explicitly quantized Q/DQ ONNX bundle here, TensorRT engines on the device.

A TensorRT engine is tied to the GPU and TensorRT version that built it, so the engine for a Jetson
is built on the Jetson. ``build`` writes what it needs: the TensorRT-rule Q/DQ ONNX (checked by
``qdq_lint``), the FP32 ONNX, their FP16-typed twins for strongly typed TensorRT (10.12 and later,
``quantization/fp16.py``), ``build_engine.sh`` with the trtexec lines for the TensorRT version it finds, and a
README; its rows here are ONNX Runtime executing those graphs on the CPU, labelled "emulated". ``load``,
where TensorRT and a GPU are (the device), builds or loads the INT8 and FP16 engines from the graphs that
TensorRT version takes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgesmlp.errors import ConfigError, ExportError, InputError
from edgesmlp.precision import Precision
from edgesmlp.quantization.qdq import QDQConfig
from edgesmlp.targets.base import (Build, Job, Log, Option, RunSettings, Target, TargetOptions, Variant,
                                   choose_float_layers, first_order_ranker, qdq_options, searches, size_mb)

FP32_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8_qdq.onnx"
FP16_ONNX = "model_fp16.onnx"  # FP16-typed: the float engine on strongly typed TensorRT
INT8_FP16_ONNX = "model_int8_qdq_fp16.onnx"  # the INT8 graph with FP16 between its INT8 layers, likewise
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

    from edgesmlp.quantization.partial import quantized_nodes

    return len(quantized_nodes(onnx.load(str(path))))


def _ort(path: Path | bytes, run: RunSettings, emulated: bool = False):
    """ONNX Runtime on ``path`` (or a serialized graph); ``emulated``: the Q/DQ graph's own math on this CPU
    (``runtimes.onnxruntime.emulation_runner``), TensorRT's accuracy proxy."""
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner, emulation_runner

    make = emulation_runner if emulated else OnnxRuntimeRunner
    return lambda batch: make(path, run.cpu_threads)


def _fp16_ort(path: Path, run: RunSettings, quantized: bool):
    """ONNX Runtime on the FP16 emulation of the FP16-typed graph at ``path`` (``fp16.emulate_fp16``: every FP16
    tensor rounded to FP16, which ONNX Runtime's CPU provider skips when it runs the graph as written)."""
    import onnx

    from edgesmlp.quantization.fp16 import emulate_fp16

    return _ort(emulate_fp16(onnx.load(str(path))).SerializeToString(), run, emulated=quantized)


def _resolve_ignored(fp32: Path, config: QDQConfig) -> QDQConfig:
    """``config`` with its ``--ignore`` names (node names or module paths, ``quantize.layers``) as node names."""
    import onnx

    from edgesmlp.quantization.layers import onnx_layers, resolve
    from edgesmlp.quantization.qdq import WEIGHTED

    return replace(config, ignored=resolve(config.ignored, onnx_layers(onnx.load(str(fp32)), WEIGHTED)))


class JetsonTarget(Target):
    name = "jetson"
    summary = "NVIDIA Jetson (TensorRT): Q/DQ INT8 ONNX + on-device engine bundle"
    config_type = JetsonConfig
    next_step = ("copy {folder} to the Jetson; there, pip install edgesmlp, ./build_engine.sh and edgesmlp bench "
                 "--target jetson --from . (see {folder}/README.md)")
    title = "Jetson (TensorRT)"
    options = (*qdq_options(ignore="no Q/DQ (FP16 on the device)."),
               Option("dla_core", "dla_core", int, "build engines for this DLA core (GPU fallback).", "N"))

    def config_from(self, options: TargetOptions) -> JetsonConfig:
        return JetsonConfig(QDQConfig.chosen(options.calib_method, options.percentile, options.ignored),
                            dla_core=options.dla_core)

    def partial_int8(self, job: Job, folder: Path, log: Log):
        import onnx

        from edgesmlp.export import export_onnx
        from edgesmlp.quantization.partial import QDQPartial
        from edgesmlp.quantization.qdq import quantize_qdq
        from edgesmlp.quantization.sensitivity import block_cosines

        c, threads = job.ckpt.config, job.run.threads
        export_onnx(job.model, folder / "model_fp32.onnx", c.image_size, c.in_chans, dynamic_batch=True,
                    reference=job.ckpt.model)
        quantize_qdq(folder / "model_fp32.onnx", folder / "model_int8_qdq.onnx", job.calibration, job.config.qdq)
        fp32, qdq = onnx.load(str(folder / "model_fp32.onnx")), onnx.load(str(folder / "model_int8_qdq.onnx"))
        return QDQPartial(fp32, qdq, threads), lambda x: block_cosines(fp32, qdq, x, threads)

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
        from edgesmlp.quantization.qdq import quantize_qdq

        config, c = job.config.qdq, job.ckpt.config
        log(f"exporting FP32 ONNX ({job.form} form)")
        export_onnx(job.model, folder / FP32_ONNX, c.image_size, c.in_chans, dynamic_batch=True, reference=job.ckpt.model)
        config = _resolve_ignored(folder / FP32_ONNX, config)
        log(f"calibrating Q/DQ ({config.method.value}, {len(job.calibration)} images)")
        start = time.perf_counter()
        ptq_path = folder / (".ptq_qdq.onnx" if job.qat else INT8_ONNX)
        summary = quantize_qdq(folder / FP32_ONNX, ptq_path, job.calibration, config)
        extra, compare = {}, []
        if searches(job):
            config, summary, compare, extra["fallback"] = self._fit_budget(job, folder, config, summary, log)
        seconds = time.perf_counter() - start
        if job.qat is not None:
            from edgesmlp.quantization.qdq_qat import quantize_aware_training

            start = time.perf_counter()
            extra["qat"] = quantize_aware_training(job.model, job.ckpt.model, job.calibration, config, job.qat,
                                                   job.preprocess, folder / INT8_ONNX, folder / ".qat_fp32.onnx", log)
            seconds = time.perf_counter() - start
        findings = _lint(folder / INT8_ONNX)
        typing = _write_fp16_graphs(folder, job.calibration, log)
        _lint(folder / INT8_FP16_ONNX)
        write_build_script(folder, c.in_chans, c.image_size)
        write_device_readme(folder, c)
        floats, int8s = _emulated(folder, job.run, config.ignored, seconds, "QAT; " if job.qat else "")
        variants = floats
        if job.qat is not None:
            variants.append(Variant(Precision.int8_ptq, EMULATED, _ort(ptq_path, job.run, emulated=True), size_mb(ptq_path),
                                    note="PTQ, for comparison"))
        variants += compare + int8s
        notes = [*EMULATION_NOTES,
            f"int8-fp16 and fp16 are the FP16-typed graphs strongly typed TensorRT (10.12 and later) builds; "
            f"{len(typing['int8']['fp32_nodes'])} INT8-graph and {len(typing['fp16']['fp32_nodes'])} float-graph "
            "nodes stay FP32 (manifest.json says which and why).",
        ]
        return Build(variants, notes, {
            **extra,
            "qdq": replace(job.config, qdq=config).to_dict(),
            "qdq_summary": vars(summary),
            "lint": {"errors": 0, "warnings": len(findings)},
            "fp16_typing": typing,
            "artifacts": {"int8_qdq_onnx": INT8_ONNX, "fp32_onnx": FP32_ONNX, "int8_qdq_fp16_onnx": INT8_FP16_ONNX,
                          "fp16_onnx": FP16_ONNX, "build_script": "build_engine.sh"},
            "engine_input": {"name": "input", "shape": [c.in_chans, c.image_size, c.image_size],
                             "max_batch": MAX_ENGINE_BATCH},
        }, scratch=[folder / ".ptq_qdq.onnx", folder / ".qat_fp32.onnx", folder / ALL_INT8_ONNX])

    def _fit_budget(self, job: Job, folder: Path, config: QDQConfig, summary, log: Log):
        """Keep the fewest, most sensitive layers in float (their Q/DQ removed: FP16 on the device) until the
        Q/DQ graph meets the job's budget on the calibration images; the full-INT8 graph becomes a comparison row."""
        import onnx

        from edgesmlp.quantization.partial import QDQPartial
        from edgesmlp.quantization.qdq import quantize_qdq

        graph = QDQPartial(onnx.load(str(folder / FP32_ONNX)), onnx.load(str(folder / INT8_ONNX)), job.run.cpu_threads)
        rank = first_order_ranker(job, graph, log, config.method.value, config.percentile, config.weight_bits)
        choice = choose_float_layers(job, graph, log, rank)
        compare = []
        if choice.kept_float:
            (folder / INT8_ONNX).replace(folder / ALL_INT8_ONNX)
            compare.append(Variant(Precision.int8_all, EMULATED, _ort(folder / ALL_INT8_ONNX, job.run, emulated=True),
                                   size_mb(folder / ALL_INT8_ONNX), kept_float=config.ignored,
                                   quantized_layers=len(graph.layers), compare_only=True,
                                   note="every layer INT8 (but --ignore), for comparison; not shipped"))
            config = replace(config, ignored=config.ignored + choice.kept_float)
            summary = quantize_qdq(folder / FP32_ONNX, folder / INT8_ONNX, job.calibration, config)
        return config, summary, compare, choice.to_dict()

    def emulate(self, folder: Path, config: JetsonConfig, run: RunSettings, log: Log) -> Build | None:
        """Without TensorRT: the bundle's graphs executed by ONNX Runtime, as quantize reported them, under this
        target's name and labelled emulated (None where ONNX Runtime is missing too, as on a lean device install)."""
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            return None
        recorded = json.loads((folder / "manifest.json").read_text()).get("qdq") or {}
        floats, int8s = _emulated(folder, run, tuple(recorded.get("ignored") or ()))
        return Build(floats + int8s, list(EMULATION_NOTES))

    def load(self, folder: Path, config: JetsonConfig, run: RunSettings, log: Log) -> Build:
        """Engines from a bundle folder: loaded if built already (by build_engine.sh or earlier), else built."""
        from edgesmlp.artifacts import atomic_file
        from edgesmlp.quantization.qdq_lint import require_qdq
        from edgesmlp.runtimes import cuda
        from edgesmlp.runtimes.tensorrt import EngineConfig, EngineRunner, build_engine, require_tensorrt, strongly_typed

        trt = require_tensorrt()
        if cuda.device_count() == 0:
            raise InputError("TensorRT engines need an NVIDIA GPU, and the CUDA runtime sees none: run this on the "
                             "Jetson (or a GPU host)")
        shape = _engine_input_shape(folder)
        variants = []
        for precision, source in engine_sources(folder, strongly_typed(trt)):
            engine_path = folder / f"model_{precision}.engine"
            seconds = None
            if precision == Precision.int8:
                require_qdq(folder / source)
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


def _lint(path: Path) -> list:
    """``qdq_lint`` findings on ``path``; an ExportError on the first error."""
    from edgesmlp.quantization.qdq_lint import lint_qdq

    findings = lint_qdq(path)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise ExportError(f"{path.name} breaks TensorRT's rules ({len(errors)} errors), first: {errors[0]}")
    return findings


def _write_fp16_graphs(folder: Path, calibration, log: Log) -> dict:
    """The FP16-typed twins of the float and INT8 graphs, for strongly typed TensorRT; what each kept in FP32."""
    import onnx

    from edgesmlp.quantization.fp16 import float_ranges, write_fp16

    log("typing the FP16 graphs for strongly typed TensorRT (FP32 where a tensor passes 512)")
    amax = float_ranges(onnx.load(str(folder / FP32_ONNX)), calibration)  # one pass serves both graphs
    return {Precision.fp16.value: write_fp16(folder / FP32_ONNX, folder / FP16_ONNX, calibration, amax=amax).to_dict(),
            Precision.int8.value: write_fp16(folder / INT8_ONNX, folder / INT8_FP16_ONNX, calibration, amax=amax).to_dict()}


def engine_sources(folder: Path, typed: bool) -> list[tuple[str, str]]:
    """(precision, ONNX file) of each engine: strongly typed TensorRT builds the FP16-typed graphs (FP32-typed ones
    would build FP32 engines), older TensorRT the FP32-typed ones with its --int8/--fp16 flags. A bundle written
    before the FP16-typed graphs existed gets an FP32 float engine on strongly typed TensorRT."""
    if not typed:
        return [(Precision.int8, INT8_ONNX), (Precision.fp16, FP32_ONNX)]
    int8 = INT8_FP16_ONNX if (folder / INT8_FP16_ONNX).is_file() else INT8_ONNX
    return [(Precision.int8, int8), (Precision.fp16, FP16_ONNX) if (folder / FP16_ONNX).is_file() else (Precision.fp32, FP32_ONNX)]


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
  # TensorRT >= 10.12: strongly typed networks; each tensor runs in the type the graph gives it (the Q/DQ
  # nodes make the INT8 layers), and the --int8/--fp16 builder flags are deprecated or gone. The
  # FP16-typed graphs keep everything between the INT8 layers, and the float engine, in FP16.
  "$TRTEXEC" --onnx=model_int8_qdq_fp16.onnx --stronglyTyped --saveEngine=model_int8.engine "${COMMON[@]}"
  "$TRTEXEC" --onnx=model_fp16.onnx --stronglyTyped --saveEngine=model_fp16.engine "${COMMON[@]}"
else
  # TensorRT 10.0-10.11 (and 8.6): precision flags; --fp16 lets the layers left in float run in FP16.
  "$TRTEXEC" --onnx=model_int8_qdq.onnx --int8 --fp16 --saveEngine=model_int8.engine "${COMMON[@]}"
  "$TRTEXEC" --onnx=model_fp32.onnx --fp16 --saveEngine=model_fp16.engine "${COMMON[@]}"
fi
echo "built: $(ls *.engine | tr '\n' ' ')"
"""


EMULATION_NOTES = (
    "INT8 accuracy is emulated: ONNX Runtime executes the TensorRT-rule Q/DQ graph on this CPU. Its latency is this "
    "CPU's, not the Jetson's.",
    "TensorRT engine results (FP16, INT8 on the GPU) come from running `edgesmlp bench --target jetson` on the device "
    "itself, where TensorRT is installed; see README.md in the bundle.")


def _emulated(folder: Path, run: RunSettings, ignored: tuple[str, ...], seconds: float | None = None,
              prefix: str = "") -> tuple[list[Variant], list[Variant]]:
    """The bundle's float and INT8 graphs executed by ONNX Runtime on this CPU: the accuracy proxy for the engines."""
    floats = [Variant(Precision.fp32, "ONNX Runtime CPU", _ort(folder / FP32_ONNX, run), size_mb(folder / FP32_ONNX))]
    if (folder / FP16_ONNX).is_file():
        floats.append(Variant(Precision.fp16, EMULATED, _fp16_ort(folder / FP16_ONNX, run, False),
                              size_mb(folder / FP16_ONNX),
                              note=f"FP16-typed graph ({FP16_ONNX}) executed by ONNX Runtime on the CPU, every FP16 "
                              "tensor rounded to FP16: accuracy proxy for the strongly typed FP16 engine"))
    int8s = [Variant(Precision.int8, EMULATED, _ort(folder / INT8_ONNX, run, emulated=True), size_mb(folder / INT8_ONNX),
                     seconds, note=prefix + "Q/DQ graph executed by ONNX Runtime on the CPU: accuracy proxy for the "
                     "TensorRT INT8 engine", kept_float=ignored, quantized_layers=_quantized_layers(folder / INT8_ONNX))]
    if (folder / INT8_FP16_ONNX).is_file():
        int8s.append(Variant(Precision.int8_fp16, EMULATED, _fp16_ort(folder / INT8_FP16_ONNX, run, True),
                             size_mb(folder / INT8_FP16_ONNX),
                             note=f"the same INT8 graph typed FP16 between its INT8 layers ({INT8_FP16_ONNX}), what "
                             "strongly typed TensorRT (10.12 and later) builds; executed by ONNX Runtime on the CPU, "
                             "every FP16 tensor rounded to FP16", kept_float=ignored,
                             quantized_layers=_quantized_layers(folder / INT8_FP16_ONNX)))
    return floats, int8s


def write_device_readme(folder: Path, c) -> None:
    (folder / "README.md").write_text(f"""# Jetson bundle

Built by `edgesmlp quantize --target jetson` for an sMLPNet ({c.variant or 'custom'}, {c.image_size}x{c.image_size},
{c.num_classes} classes). Input tensor `input`, shape N x {c.in_chans} x {c.image_size} x {c.image_size}, float32,
preprocessed as `manifest.json` says; output `logits`.

| file | what |
| --- | --- |
| `{INT8_ONNX}` | explicitly quantized INT8 (Q/DQ) ONNX, TensorRT placement rules, checked by `edgesmlp lint-qdq`; FP32 between the INT8 layers: for TensorRT before 10.12 (`--int8 --fp16`) |
| `{INT8_FP16_ONNX}` | the same INT8 graph with FP16 between its INT8 layers: for strongly typed TensorRT, 10.12 and later |
| `{FP32_ONNX}` | the same network in FP32 (deploy form): the FP16 engine before TensorRT 10.12 (`--fp16`), and the reference |
| `{FP16_ONNX}` | the same network typed FP16: the FP16 engine on strongly typed TensorRT, 10.12 and later |
| `build_engine.sh` | trtexec lines for the INT8 and FP16 engines, from the graphs the TensorRT version it finds takes |
| `report.json`, `report.md` | accuracy and latency measured where this bundle was made (INT8 emulated by ONNX Runtime) |
| `manifest.json` | versions, hashes of weights and calibration list, every option |

## On the Jetson

Engines are specific to the GPU and TensorRT version, so build them there:

| engine | TensorRT before 10.12 (JetPack 6) | TensorRT 10.12 and later (JetPack 7, Thor) |
| --- | --- | --- |
| `model_int8.engine` | `{INT8_ONNX}` with `--int8 --fp16` | `{INT8_FP16_ONNX}` with `--stronglyTyped` |
| `model_fp16.engine` | `{FP32_ONNX}` with `--fp16` | `{FP16_ONNX}` with `--stronglyTyped` |

A few nodes of the FP16-typed graphs may stay FP32 where a tensor passed 512 on the calibration
images; `manifest.json` (`fp16_typing`) names them and why.

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
