"""A toy target, defined outside the package, to prove the seam: one file, one registry line, one contract test.

It ships the FP32 deploy form as ONNX and runs it with ONNX Runtime; no INT8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner
from edgesmlp.targets.base import Build, Job, Log, RunSettings, Target, Variant, size_mb


@dataclass(frozen=True)
class ToyConfig:
    def to_dict(self) -> dict:
        return {}


class ToyTarget(Target):
    name = "toy"
    summary = "FP32 ONNX run by ONNX Runtime (a test target)"
    config_type = ToyConfig

    def available(self) -> str | None:
        return None

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        from edgesmlp.export import export_onnx

        c = job.ckpt.config
        export_onnx(job.model, folder / "toy.onnx", c.image_size, c.in_chans, dynamic_batch=True, reference=job.ckpt.model)
        return self.load(folder, job.config, job.run, log)

    def load(self, folder: Path, config: ToyConfig, run: RunSettings, log: Log) -> Build:
        path = folder / "toy.onnx"
        return Build([Variant("fp32", "toy runtime", lambda batch: OnnxRuntimeRunner(path, run.cpu_threads),
                              size_mb(path))], ["toy: FP32 only"])


TARGET = ToyTarget()
