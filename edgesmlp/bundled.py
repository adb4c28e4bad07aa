"""The bundled default: a small sMLPNet trained on scikit-learn's digits, shipped inside the package.

``scripts/train_digits.py`` reproduces ``assets/smlpnet_digits.safetensors`` with :func:`train`.
Every command that takes weights or images falls back to this model and its digits splits.
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgesmlp.calibration.digits import load_split
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.config import ModelConfig
from edgesmlp.model import sMLPNet

CONFIG = ModelConfig(dim=32, depths=(1, 1, 2, 1), alpha=3, num_classes=10, in_chans=3, image_size=32)
PREPROCESS = Preprocess(image_size=32, crop_pct=1.0, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
TRAIN_SEED = 0
TRAIN_EPOCHS = 60


def weights_path() -> Path:
    return Path(str(resources.files("edgesmlp") / "assets" / "smlpnet_digits.safetensors"))


def split_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A digits split preprocessed exactly as the model sees it: (N, 3, 32, 32) and (N,) labels."""
    pairs = load_split(split)
    return torch.from_numpy(np.stack([PREPROCESS(img) for img, _ in pairs])), torch.tensor([y for _, y in pairs])


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift (up to 3 px), scale (0.9-1.1) and rotation (up to 10 degrees)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (3 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Background is black, which is -1 after normalisation: pad with it, not with zeros.
    return F.grid_sample(x + 1.0, grid, align_corners=False, padding_mode="zeros") - 1.0


@torch.no_grad()
def accuracy(model: sMLPNet, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item() * 100.0


def train(seed: int = TRAIN_SEED, epochs: int = TRAIN_EPOCHS, log=print) -> tuple[sMLPNet, dict]:
    """Train the bundled model from scratch on the train split; deterministic for a given seed."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = split_tensors("train")
    x_val, y_val = split_tensors("val")
    model = sMLPNet(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    batch = 64
    steps = epochs * math.ceil(len(x_train) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(_augment(x_train[idx], generator)), y_train[idx], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"epoch {epoch + 1:3d}/{epochs}  loss {loss.item():.3f}  val top-1 {accuracy(model, x_val, y_val):.1f}%")
    model.eval()
    info = {
        "val_top1": round(accuracy(model, x_val, y_val), 2),
        "train_seconds": round(time.perf_counter() - start, 1),
        "seed": seed,
        "epochs": epochs,
    }
    return model, info


def write_augmented_imagefolders(root, copies: dict[str, int], seed: int = 1) -> dict[str, int]:
    """A harder held-out set from the same real digits: each image of a split shifted, scaled and rotated
    ``copies[split]`` times (as in training), written as ``root/<split>/<class>/<n>.png`` ImageFolder trees.

    On these, a lightly trained model has near-ties that INT8 flips (full INT8 of ``train(epochs=4)`` disagrees
    with FP32 on a few of every thousand augmented validation images: benchmarks/results/accuracy_control.md), which the 500 plain
    validation images are too few and too easy to show; ``benchmarks/accuracy_control.py`` uses them.
    """
    from PIL import Image

    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    written = {}
    for split, n in copies.items():
        x, y = split_tensors(split)
        images = torch.cat([_augment(x, generator) for _ in range(n)])
        labels = y.repeat(n)
        pixels = ((images[:, 0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        for i, (p, label) in enumerate(zip(pixels, labels.tolist())):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(p, "L").convert("RGB").save(folder / f"{i:05d}.png")
        written[split] = len(pixels)
    return written
