"""A bench target that crashes partway through evaluation, standing in for a runtime that dies mid-run."""

import numpy as np

from edgesmlp.targets.base import Build, Variant


def available():
    return None


def bench_build(job, folder, log):
    calls = {"n": 0}

    def make_runner(batch, latency):
        def run(x):
            calls["n"] += 1
            if calls["n"] > 2:
                raise RuntimeError("device lost")
            return np.zeros((len(x), 10), np.float32)

        return run

    return Build([Variant("int8", "crashing runtime", make_runner, 1.0)])
