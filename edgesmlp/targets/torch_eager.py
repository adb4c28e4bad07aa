"""PyTorch eager FP32 on the CPU: the official graph as loaded, the reference every other row is compared to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesmlp.targets.base import Build, Job, Variant


def available() -> str | None:
    return None


def bench_build(job: Job, folder: Path, log) -> Build:
    model = job.ckpt.model.eval()

    def make_runner(batch: int, latency: bool):
        @torch.no_grad()
        def run(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x)).numpy()

        return run

    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    return Build([Variant("fp32", "PyTorch eager CPU", make_runner, size)],
                 [f"PyTorch eager runs the official graph with {torch.get_num_threads()} threads."])
