"""PyTorch eager FP32 on the CPU: the official graph as loaded, the reference every other row is compared to."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesmlp.errors import InputError
from edgesmlp.precision import Precision
from edgesmlp.runtimes.base import Runner
from edgesmlp.targets.base import Build, Job, Log, RunSettings, Target, Variant

WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class TorchConfig:
    def to_dict(self) -> dict:
        return {}


def _recorded_path(path: Path, folder: Path) -> Path:
    """A manifest's weights path: as written if absolute; a relative one beside the manifest if it is there, else
    from the current folder, where quantize was run."""
    if path.is_absolute() or not (folder / path).is_file():
        return path
    return folder / path


class TorchTarget(Target):
    name = "torch"
    summary = "PyTorch eager FP32 of the official graph: the reference row"
    config_type = TorchConfig
    ships = False  # nothing to quantize: it is the reference
    reads = None  # any quantize output: its manifest names the weights

    def available(self) -> str | None:
        import importlib.util

        return None if importlib.util.find_spec("torch") else "torch is not installed: pip install 'edgesmlp[workstation]'"

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        """The official weights as loaded (prefixes cleaned, preprocessing recorded), in safetensors."""
        from edgesmlp.checkpoint import save_safetensors

        metadata = {"preprocess": json.dumps(job.preprocess.to_record())}
        save_safetensors(job.ckpt.model.state_dict(), folder / WEIGHTS, metadata)
        return self.load(folder, job.config, job.run, log)

    def load(self, folder: Path, config: TorchConfig, run: RunSettings, log: Log) -> Build:
        import torch

        from edgesmlp.checkpoint import load_checkpoint

        weights = folder / WEIGHTS
        if not weights.is_file():
            manifest = folder / "manifest.json"
            if not manifest.is_file():
                raise InputError(f"{folder} has neither {WEIGHTS} nor a manifest.json naming the weights")
            recorded = json.loads(manifest.read_text())["weights"]
            weights = None if recorded.get("bundled") else _recorded_path(Path(recorded["path"]), folder)
            ckpt = load_checkpoint(weights)
            if recorded.get("sha256") not in (None, ckpt.sha256):  # another file now lies at the recorded path
                raise InputError(f"{ckpt.path} is not the checkpoint {manifest} was quantized from (its SHA-256 "
                                 "differs): put those weights back there, or re-run quantize")
            model = ckpt.model.eval()
        else:
            model = load_checkpoint(weights).model.eval()
        size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
        threads = run.cpu_threads
        return Build([Variant(Precision.fp32, "PyTorch eager CPU", lambda batch: EagerRunner(model, threads), size)],
                     [f"PyTorch eager runs the official graph with {threads} threads (evaluation with fewer when "
                      "they are faster: another job holds a core)."])


class EagerRunner(Runner):
    """The official graph in PyTorch eager with its own thread count, set for each call and given back after, so
    the process's other PyTorch work keeps its own."""

    TRIALS = 2  # timed batches per thread count before evaluation picks one

    def __init__(self, model, threads: int):
        self.model, self.threads = model, threads
        self.evaluation_threads: int | None = None  # what run_all picked

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, self.threads)

    def _run(self, x: np.ndarray, threads: int) -> np.ndarray:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(before)

    def run_all(self, batches: list[np.ndarray], done: Callable[[], None] = lambda: None) -> list[np.ndarray]:
        """Evaluation: the first batches alternate between its threads and half of them, timed, and the rest run
        on whichever was faster. OpenMP's threads wait at every op for the slowest, so when another job holds a
        core, fewer threads finish sooner (benchmarks/results/torch_threads.md)."""
        outputs, pending = [], list(batches)
        candidates = (self.threads, self.threads // 2)
        if self.evaluation_threads is None and self.threads > 1 and len(pending) > 2 * self.TRIALS:
            seconds = dict.fromkeys(candidates, 0.0)
            outputs.append(self._run(pending.pop(0), self.threads))  # warm-up
            done()
            for i in range(2 * self.TRIALS):
                threads, start = candidates[i % 2], time.perf_counter()
                outputs.append(self._run(pending.pop(0), threads))
                seconds[threads] += time.perf_counter() - start
                done()
            self.evaluation_threads = min(candidates, key=seconds.get)
            if self.evaluation_threads < self.threads:
                self.note = (f"evaluated on {self.evaluation_threads} of its {self.threads} threads, which ran faster "
                             "here: other work holds a core")
        for x in pending:
            outputs.append(self._run(x, self.evaluation_threads or self.threads))
            done()
        return outputs


TARGET = TorchTarget()
