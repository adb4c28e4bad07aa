"""OpenVINO on Intel (and other x86) CPUs: NNCF INT8 of the shipped form, saved as OpenVINO IR."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from edgesmlp.errors import ConfigError, InputError
from edgesmlp.precision import Precision
from edgesmlp.quantization.openvino_ptq import Fuse, OpenVINOPTQConfig
from edgesmlp.runtimes.openvino import OpenVINORunner, ir_size_mb, read_ir, require_openvino, save_ir, with_batch
from edgesmlp.targets.base import (IGNORE_ABOUT, WEIGHT_BITS_ABOUT, Build, Job, Log, Option, RunSettings, Target,
                                   Variant, choose_float_layers, first_order_ranker, searches)

RUNTIME = "OpenVINO CPU"
DEFAULT_RUNTIME = "OpenVINO CPU, default precision"
ARTIFACTS = {Precision.int8: "model.xml", Precision.fp32: "model_fp32.xml"}
PRECISION_NOTE = ("The fp32 row is model_fp32.xml compiled with INFERENCE_PRECISION_HINT=f32; the {default} row is the "
                  "same file with no hint, what a user gets without edgesmlp on this CPU, and every speedup is over "
                  "it. INT8 is compiled as shipped, with no hint: the layers NNCF left in float run at the CPU's "
                  "default precision, as in a user's compile_model(\"model.xml\").")
SHAPE_NOTE = ("model.xml and model_fp32.xml have a static batch of 1, so compile_model and benchmark_app run them as "
              "shipped and as timed here; for batch N, reshape first (model.reshape([N, C, H, W])), as the "
              "throughput column does. That column runs one batch in flight per stream OpenVINO's THROUGHPUT hint "
              "picks, each stream a separately compiled single-stream model: OpenVINO 2026.4's own multi-stream "
              "compilation computes wrong INT8 logits on sMLPNet's NCHW deploy form; the channels-last model.xml "
              "shipped here computed right ones on every 2-stream compilation tried "
              "(edgesmlp's docs/design.md, OpenVINO section).")


def _runner(model, run: RunSettings, precision: str | None = "f32"):
    from edgesmlp.runtimes.openvino import model_cache_dir

    cache = model_cache_dir() if run.model_cache else None
    return lambda batch: OpenVINORunner(model, batch, run.cpu_threads, precision, cache)


def _float_variants(fp32, size: float, run: RunSettings) -> tuple[list[Variant], list[str]]:
    """The f32 row and, where the CPU's default precision is not f32, the default-precision row."""
    from edgesmlp.runtimes.openvino import resolved_default_precision

    default = resolved_default_precision()
    variants = [Variant(Precision.fp32, RUNTIME, _runner(fp32, run), size, speed_reference=default == "f32")]
    if default != "f32":
        variants.append(Variant(default, DEFAULT_RUNTIME, _runner(fp32, run, None), size, speed_reference=True,
                                note="model_fp32.xml, no precision hint"))
        return variants, [PRECISION_NOTE.format(default=default), SHAPE_NOTE]
    return variants, ["OpenVINO's CPU default precision is f32 here: the fp32 row is what users get without "
                      "edgesmlp, and INT8 is compiled as shipped (no hint).", SHAPE_NOTE]


class OpenVINOTarget(Target):
    name = "openvino"
    summary = "Intel/x86 CPUs: NNCF INT8 OpenVINO IR (model.xml/.bin)"
    config_type = OpenVINOPTQConfig
    title = "OpenVINO"
    options = (
        Option("preset", "preset", str, "NNCF preset, performance (symmetric) or mixed (asymmetric activations).",
               "[performance|mixed]", "performance"),
        Option("bias_correction", "bias_correction", str, "off, fast or full. On the deploy form fast is edgesmlp's "
               "own per-layer correction (NNCF's fails on its left-operand MatMul) and full needs --form reference.",
               "[off|fast|full]", "off"),
        Option("smooth_quant", "smooth_quant", float, "SmoothQuant alpha (0-1). Switches NNCF to its transformer "
               "placement, which lost accuracy on sMLPNet: measure before shipping.", "ALPHA"),
        Option("activation_range", "activation_range", str, "how activation ranges are estimated: min and max over "
               "the calibration images, NNCF's histogram fit (slower PTQ), or NNCF's own default.",
               "[minmax|histogram|nncf]", "minmax"),
        Option("calib_batch", "calib_batch", int, "calibration images per NNCF inference. The INT8 model is the "
               "same for any N (min-max ranges; refused with NNCF's bias correction or SmoothQuant); a larger N is "
               "faster and holds more memory (benchmarks/results/openvino_ptq_batch.md).", "N", 1),
        Option("ignored", "ignored", tuple, "NNCF's ignored scope (the CPU's float precision).", "NODE",
               about=IGNORE_ABOUT),
        Option("weight_bits", "weight_bits", int, "7 is NNCF's overflow fix on every layer.", "[7|8]",
               about=WEIGHT_BITS_ABOUT),
        Option("fuse", "fuse", str, "what fuses each token-mixing block's Concat: a MatMul (the CPU plugin's INT8 "
               "FullyConnected) or the 1x1 convolution (its INT8 Convolution). Default: conv on x86 CPUs without "
               "VNNI, else matmul, whichever was faster there (docs/measurements.md). Set it for the CPU you deploy "
               "to.", "[matmul|conv]", deploy_only=True),
        Option("token_mixing", "token_mixing", str, "the precision of each block's two axial token-mixing MatMuls "
               "(post-training quantization of the deploy form). Default: float on x86 CPUs without VNNI, where the "
               "plugin's INT8 MatMul was the slower, else int8 (docs/measurements.md). Set it for the CPU you "
               "deploy to. QAT trains them in INT8.", "[int8|float]", deploy_only=True),
    )

    def partial_int8(self, job: Job, folder: Path, log: Log):
        from edgesmlp.quantization.openvino_partial import OpenVINOPartial, block_cosines
        from edgesmlp.quantization.openvino_ptq import quantize_for_cpu

        c, threads = job.ckpt.config, job.run.threads
        fp32, int8 = quantize_for_cpu(job.model, job.calibration, job.config, c.in_chans, c.image_size, log)
        return OpenVINOPartial(fp32, int8, threads), lambda x: block_cosines(fp32, int8, x, threads)

    def check(self, config: OpenVINOPTQConfig, form: str, qat: bool = False) -> None:
        from edgesmlp.quantization.openvino_ptq import check_request

        require_openvino()
        check_request(config, deploy_form=form == "deploy")
        if qat and (config.ignored or config.smooth_quant is not None or config.preset.value != "performance"):
            raise ConfigError("--ignore, --smooth-quant and --preset are NNCF post-training settings; --method qat "
                              "trains edgesmlp's own symmetric quantizers: drop them for QAT")

    def available(self) -> str | None:
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as e:
            return f"{e.name} is not installed: pip install 'edgesmlp[workstation]'"
        return None

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        """NNCF INT8 of the job's model; writes model.xml/.bin (INT8) and model_fp32.xml/.bin."""
        from edgesmlp.export import to_openvino
        from edgesmlp.quantization.openvino_partial import quantized_layers
        from edgesmlp.quantization.openvino_ptq import quantize_for_cpu, resolve_ignored

        config, c = job.config, job.ckpt.config
        # NNCF calibrates the dynamic-batch graph (a static one took more memory in PTQ: openvino_ptq_batch.md);
        # what ships, and is timed, is reshaped to a static batch of 1. The deploy form's INT8 source mixes
        # tokens channels-last, which is slower in float: model_fp32.xml is exported from the NCHW form below.
        start = time.perf_counter()
        graph, int8 = quantize_for_cpu(job.model, job.calibration, config, c.in_chans, c.image_size, log)
        config = resolve_ignored(graph, config)  # module paths given to --ignore, as node names
        manifest, compare = {}, []
        if searches(job):
            int8, config, compare, manifest["fallback"] = self._fit_budget(job, folder, graph, int8, config, log)
        int8 = with_batch(int8, 1)
        seconds = time.perf_counter() - start
        fp32 = to_openvino(job.model, c.in_chans, c.image_size) if job.form == "deploy" else with_batch(graph, 1)
        del graph
        save_ir(fp32, folder / ARTIFACTS[Precision.fp32])
        variants, notes = _float_variants(fp32, ir_size_mb(folder / ARTIFACTS[Precision.fp32]), job.run)
        variants += compare
        if job.qat is not None:
            from edgesmlp.quantization.openvino_qat import quantize_aware_training

            save_ir(int8, folder / ".ptq.xml")
            variants.append(Variant(Precision.int8_ptq, RUNTIME, _runner(int8, job.run, None), ir_size_mb(folder / ".ptq.xml"),
                                    seconds, note="PTQ, for comparison"))
            start = time.perf_counter()
            int8, manifest["qat"] = quantize_aware_training(job.model, job.ckpt.model, job.calibration, job.qat,
                                                            job.preprocess, log, config.weight_bits,
                                                            config.fuse is Fuse.conv)
            seconds = time.perf_counter() - start
        save_ir(int8, folder / ARTIFACTS[Precision.int8])
        variants.append(Variant(Precision.int8, RUNTIME, _runner(int8, job.run, None), ir_size_mb(folder / ARTIFACTS[Precision.int8]),
                                seconds, note="QAT" if "qat" in manifest else "", kept_float=config.ignored,
                                quantized_layers=len(quantized_layers(int8))))
        return Build(variants, notes, {"ptq": config.to_dict(), "artifacts": ARTIFACTS, **manifest},
                     scratch=[folder / ".ptq.xml", folder / ".ptq.bin", folder / ".all_int8.xml", folder / ".all_int8.bin"])

    def _fit_budget(self, job: Job, folder: Path, fp32, int8, config: OpenVINOPTQConfig, log: Log):
        """Keep the fewest, most sensitive layers in float (NNCF's ignored scope: the CPU's float precision) until
        the INT8 IR meets the job's budget on the calibration images; the full-INT8 IR becomes a comparison row."""
        from edgesmlp.quantization.openvino_partial import OpenVINOPartial, first_order_keys
        from edgesmlp.quantization.openvino_ptq import ActivationRange, quantize_openvino

        graph = OpenVINOPartial(fp32, int8, job.run.cpu_threads)
        method = "max" if config.activation_range is ActivationRange.minmax else "percentile"  # like NNCF's ranges
        rank = first_order_ranker(job, graph, log, method, weight_bits=config.weight_bits, keys=first_order_keys)
        choice = choose_float_layers(job, graph, log, rank)
        compare = []
        if choice.kept_float:
            full = with_batch(int8, 1)
            save_ir(full, folder / ".all_int8.xml")
            compare.append(Variant(Precision.int8_all, RUNTIME, _runner(full, job.run, None), ir_size_mb(folder / ".all_int8.xml"),
                                   kept_float=config.ignored, quantized_layers=len(graph.layers), compare_only=True,
                                   note="every layer INT8 (but --ignore), for comparison; not shipped"))
            config = replace(config, ignored=config.ignored + choice.kept_float)
            log(f"quantizing again with {len(config.ignored)} layers in NNCF's ignored scope")
            int8 = quantize_openvino(fp32, job.calibration, config, deploy_form=job.form == "deploy")
        return int8, config, compare, choice.to_dict()

    def load(self, folder: Path, config: OpenVINOPTQConfig, run: RunSettings, log: Log) -> Build:
        """Variants from a `quantize --target openvino` folder (model.xml, model_fp32.xml)."""
        for xml in (folder / name for name in ARTIFACTS.values()):
            if not xml.is_file():
                raise InputError(f"{folder} has no {xml.name}: point --from at a `quantize --target openvino` output")
        fp32, int8 = folder / ARTIFACTS[Precision.fp32], folder / ARTIFACTS[Precision.int8]
        if b"FakeQuantize" not in int8.read_bytes():
            raise InputError(f"{int8} holds no FakeQuantize, so it is no INT8 model: re-run `edgesmlp quantize`, or "
                             "restore the file")
        variants, notes = _float_variants(read_ir(fp32), ir_size_mb(fp32), run)
        variants.append(Variant(Precision.int8, RUNTIME, _runner(read_ir(int8), run, None), ir_size_mb(int8)))
        return Build(variants, notes)


TARGET = OpenVINOTarget()
