"""A bench target that crashes partway through evaluation, standing in for a runtime that dies mid-run."""

from dataclasses import dataclass

import numpy as np

from edgesmlp.runtimes.base import Runner
from edgesmlp.targets.base import Build, Target, Variant


@dataclass(frozen=True)
class CrashyConfig:
    def to_dict(self) -> dict:
        return {}


class DyingRunner(Runner):
    def __init__(self, calls: dict):
        self.calls = calls

    def __call__(self, x):
        self.calls["n"] += 1
        if self.calls["n"] > 2:
            raise RuntimeError("device lost")
        return np.zeros((len(x), 10), np.float32)


class CrashingTarget(Target):
    name, summary, config_type, ships = "crashy", "dies mid-run", CrashyConfig, False

    def available(self):
        return None

    def build(self, job, folder, log):
        return self.load(folder, job.config, job.run, log)

    def load(self, folder, config, run, log):
        calls = {"n": 0}
        return Build([Variant("int8", "crashing runtime", lambda batch: DyingRunner(calls), 1.0)])


TARGET = CrashingTarget()
