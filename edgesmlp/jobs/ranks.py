"""Jobs under torchrun: which rank this is, where a rank other than 0 writes, and tallies summed over ranks.

``torchrun --nproc-per-node N [--nnodes M ...] -m edgesmlp bench ...`` (or ``quantize``) starts one process per
rank; each evaluates its share of the validation images (every N-th image), the tallies are summed with
torch.distributed's all_reduce (gloo on CPU), and rank 0 alone takes the output folder, times the rows and
writes the report. One process (no WORLD_SIZE) is world size 1, and nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def world() -> tuple[int, int]:
    """(rank, world size): torchrun's, initialising torch.distributed on first use; (0, 1) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from edgesmlp.quantization.qat import distributed

    return distributed()


@contextmanager
def scratch(name: str) -> Iterator[tuple[Path, Path]]:
    """A throwaway output for ranks other than 0 (rank 0 ships), shaped as ``reserved_dir``'s (final, temporary)."""
    root = Path(tempfile.mkdtemp())
    try:
        (root / name).mkdir()
        yield root / name, root / name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shard(items: tuple, rank: int, size: int) -> tuple:
    """This rank's share: every ``size``-th item from the ``rank``-th, so shards differ by at most one item."""
    return items[rank::size]


def sum_over_ranks(values: list[float]) -> list[float]:
    """``values`` summed element-wise over every rank (float64, so counts stay exact)."""
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def gather(obj) -> list:
    """``obj`` from every rank, in rank order."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
