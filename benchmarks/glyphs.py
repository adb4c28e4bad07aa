"""A harder model than the digits, trained here: 62 classes (0-9, A-Z, a-z) rendered from the fonts matplotlib
ships, 32x32, with a validation set in font styles the model never saw in training.

    python benchmarks/glyphs.py OUT [--epochs 12]

Training renders 12 DejaVu faces (sans, serif, mono; regular, bold, oblique); the unseen styles are
the 4 STIX and 5 Computer Modern faces (cmr10, cmss10, cmtt10, cmti10, cmb10). Every glyph is drawn white on
black at a random size, offset and rotation. OUT gets ``glyphs.safetensors`` and ImageFolder trees:
``calib/`` (seen faces, new draws), ``search/`` and ``val/`` (unseen faces, split by draw: neither holds an
image of the other). Case pairs that are one shape at another size (c/C, o/O/0, s/S, ...) make it hard.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import string
import time
from pathlib import Path

import numpy as np

CLASSES = string.digits + string.ascii_uppercase + string.ascii_lowercase
SEEN = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
        "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
        "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique")
UNSEEN = ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
          "cmr10", "cmss10", "cmtt10", "cmti10", "cmb10")
SIZE = 32


def _font_path(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"


def draw(font_name: str, char: str, rng: random.Random) -> np.ndarray:
    """One glyph, white on black, (SIZE, SIZE) uint8: random size, offset and rotation."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(_font_path(font_name)), rng.randint(18, 28))
    canvas = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(canvas).text((32, 32), char, fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
    dx, dy = rng.randint(-4, 4), rng.randint(-4, 4)
    return np.asarray(canvas.crop((16 + dx, 16 + dy, 48 + dx, 48 + dy)))


def render(fonts: tuple[str, ...], copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    images, labels = [], []
    for _ in range(copies):
        for font in fonts:
            for label, char in enumerate(CLASSES):
                images.append(draw(font, char, rng))
                labels.append(label)
    return np.stack(images), np.array(labels)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = root / f"{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").convert("RGB").save(folder / f"{i:05d}.png")


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0, log=print):
    """The bundled design with 62 classes, trained as the bundled model is (AdamW, one-cycle, label smoothing)."""
    import torch
    import torch.nn.functional as F

    from edgesmlp.bundled import CONFIG
    from edgesmlp.model import sMLPNet

    torch.manual_seed(seed)
    config = dataclasses.replace(CONFIG, num_classes=len(CLASSES))
    model = sMLPNet(config)
    inputs = torch.from_numpy(x).float().div(127.5).sub(1.0)[:, None].expand(-1, 3, -1, -1).contiguous()
    targets = torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    batch = 128
    steps = epochs * math.ceil(len(inputs) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(inputs[idx]), targets[idx], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    return model.eval(), config


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        inputs = torch.from_numpy(x).float().div(127.5).sub(1.0)[:, None].expand(-1, 3, -1, -1).contiguous()
        top = torch.cat([model(inputs[i : i + 256]).argmax(1) for i in range(0, len(inputs), 256)])
    return float((top.numpy() == y).mean() * 100)


def build(out: Path, epochs: int = 12, train_copies: int = 24, seed: int = 0, log=print) -> dict:
    """Render, train and write everything into ``out``; returns the record (accuracies, seconds, counts)."""
    import torch

    from edgesmlp.bundled import PREPROCESS
    from edgesmlp.checkpoint import save_safetensors

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    x, y = render(SEEN, train_copies, seed)
    model, config = train(x, y, epochs, seed, log)
    seconds = time.perf_counter() - start
    calib = render(SEEN, 2, seed + 1)  # seen faces, new draws: what a user calibrates on (their training data)
    held = render(UNSEEN, 20, seed + 2)  # unseen faces: 11,160 draws, split 3,000 search / the rest val
    order = np.random.default_rng(seed).permutation(len(held[0]))
    search, val = order[:3000], order[3000:]
    write_folder(out / "calib", *calib)
    write_folder(out / "search", held[0][search], held[1][search])
    write_folder(out / "val", held[0][val], held[1][val])
    record = {"train_images": len(x), "epochs": epochs, "train_seconds": round(seconds, 1),
              "train_top1": round(accuracy(model, x, y), 2), "calib_top1": round(accuracy(model, *calib), 2),
              "unseen_top1": round(accuracy(model, *held), 2), "calib": len(calib[0]), "search": len(search),
              "val": len(val)}
    save_safetensors(model.state_dict(), out / "glyphs.safetensors", {
        "config": json.dumps(config.to_dict()), "preprocess": json.dumps(PREPROCESS.to_record()),
        "training": json.dumps({**record, "data": "glyphs rendered from matplotlib's DejaVu faces"})})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.epochs)))


if __name__ == "__main__":
    main()
