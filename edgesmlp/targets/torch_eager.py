"""PyTorch eager FP32 on the CPU: the official graph as loaded, the reference every other row is compared to."""

from __future__ import annotations

import json
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
                     [f"PyTorch eager runs the official graph with {threads} threads."])


class EagerRunner(Runner):
    """The official graph in PyTorch eager on its own thread count, set for each call and given back after, so the
    process's other PyTorch work keeps its own (benchmarks/results/torch_threads.md measures the choices)."""

    def __init__(self, model, threads: int):
        self.model, self.threads = model, threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(before)


TARGET = TorchTarget()
