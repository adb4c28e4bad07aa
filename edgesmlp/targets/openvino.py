"""OpenVINO on Intel (and other x86) CPUs: NNCF INT8 of the shipped form, saved as OpenVINO IR."""

from __future__ import annotations

import time
from pathlib import Path

from edgesmlp.errors import ConfigError, InputError
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig
from edgesmlp.runtimes.openvino import OpenVINORunner, ir_size_mb, read_ir, require_openvino, save_ir
from edgesmlp.targets.base import Build, Job, Log, RunSettings, Target, TargetOptions, Variant, given

RUNTIME = "OpenVINO CPU"
ARTIFACTS = {"int8": "model.xml", "fp32": "model_fp32.xml"}
PRECISION_NOTE = ("OpenVINO compiles both precisions with INFERENCE_PRECISION_HINT=f32: layers NNCF left unquantized "
                  "run in FP32 (OpenVINO's CPU default on bf16-capable CPUs is bf16).")


def _runner(model, run: RunSettings):
    return lambda batch: OpenVINORunner(model, batch, run.cpu_threads)


class OpenVINOTarget(Target):
    name = "openvino"
    summary = "Intel/x86 CPUs: NNCF INT8 OpenVINO IR (model.xml/.bin)"
    config_type = OpenVINOPTQConfig
    reads = ("openvino",)

    def config_from(self, options: TargetOptions) -> OpenVINOPTQConfig:
        return OpenVINOPTQConfig(**given(options, "preset", "bias_correction", "smooth_quant", "ignored"))

    def check(self, config: OpenVINOPTQConfig, form: str, qat: bool = False) -> None:
        from edgesmlp.quantize.openvino_ptq import check_request

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
        from edgesmlp.quantize.openvino_ptq import check_ignored, quantize_openvino

        config, c = job.config, job.ckpt.config
        fp32 = to_openvino(job.model, c.in_chans, c.image_size)
        check_ignored(fp32, config)
        log(f"quantizing for OpenVINO ({job.form} form, {len(job.calibration)} calibration images, "
            f"preset {config.preset.value})")
        start = time.perf_counter()
        int8 = quantize_openvino(fp32, job.calibration, config, deploy_form=job.form == "deploy")
        seconds = time.perf_counter() - start
        variants = [Variant("fp32", RUNTIME, _runner(fp32, job.run))]
        manifest = {}
        if job.qat is not None:
            from edgesmlp.quantize.openvino_qat import quantize_aware_training

            save_ir(int8, folder / ".ptq.xml")
            variants.append(Variant("int8-ptq", RUNTIME, _runner(int8, job.run), ir_size_mb(folder / ".ptq.xml"),
                                    seconds, note="PTQ, for comparison"))
            start = time.perf_counter()
            int8, manifest["qat"] = quantize_aware_training(job.model, job.ckpt.model, job.calibration, job.qat,
                                                            job.preprocess, log)
            seconds = time.perf_counter() - start
        save_ir(int8, folder / ARTIFACTS["int8"])
        save_ir(fp32, folder / ARTIFACTS["fp32"])
        variants[0].size_mb = ir_size_mb(folder / ARTIFACTS["fp32"])
        variants.append(Variant("int8", RUNTIME, _runner(int8, job.run), ir_size_mb(folder / ARTIFACTS["int8"]),
                                seconds, note="QAT" if manifest else ""))
        return Build(variants, [PRECISION_NOTE], {"ptq": config.to_dict(), "artifacts": ARTIFACTS, **manifest},
                     scratch=[folder / ".ptq.xml", folder / ".ptq.bin"])

    def load(self, folder: Path, config: OpenVINOPTQConfig, run: RunSettings, log: Log) -> Build:
        """Variants from a `quantize --target openvino` folder (model.xml, model_fp32.xml)."""
        variants = []
        for precision in ("fp32", "int8"):
            xml = folder / ARTIFACTS[precision]
            if not xml.is_file():
                raise InputError(f"{folder} has no {xml.name}: point --from at a `quantize --target openvino` output")
            variants.append(Variant(precision, RUNTIME, _runner(read_ir(xml), run), ir_size_mb(xml)))
        return Build(variants, [PRECISION_NOTE])


TARGET = OpenVINOTarget()
