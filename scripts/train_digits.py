"""Reproduce the bundled model: python scripts/train_digits.py [--out PATH] [--seed 0] [--epochs 60].

Trains the small sMLPNet in edgesmlp.bundled.CONFIG on the digits train split (997 images),
reports top-1 on the 500-image validation split, and writes a safetensors file whose metadata
carries the architecture, the preprocessing and the training record. ``--epochs 4`` (3.5 s on two
cores) gives the lightly trained model whose INT8 the accuracy-budget tests and
benchmarks/accuracy_control.py push (full INT8 agrees with FP32 on about 99.7% of augmented digits).
"""

import argparse
import json

import torch

from edgesmlp import bundled
from edgesmlp.checkpoint import save_trained_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(bundled.weights_path()))
    parser.add_argument("--seed", type=int, default=bundled.TRAIN_SEED)
    parser.add_argument("--epochs", type=int, default=bundled.TRAIN_EPOCHS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, info = bundled.train(seed=args.seed, epochs=args.epochs)
    save_trained_digits(model, info, args.out)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
