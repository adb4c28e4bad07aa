import json

import pytest
import torch

from edgesmlp import bundled
from edgesmlp.calibration import digits
from edgesmlp.checkpoint import load_checkpoint


def test_splits_are_fixed_and_disjoint():
    val, calib, train = (set(digits.split_indices(s).tolist()) for s in ("val", "calib", "train"))
    assert (len(val), len(calib), len(train)) == (500, 300, 997)
    assert not (val & calib or val & train or calib & train)
    assert digits.split_indices("val")[:5].tolist() == digits.split_indices("val")[:5].tolist()


def test_bundled_model_accuracy():
    ckpt = load_checkpoint()
    assert ckpt.bundled and ckpt.config == bundled.CONFIG
    assert ckpt.preprocess == bundled.PREPROCESS
    x, y = bundled.split_tensors("val")
    assert bundled.accuracy(ckpt.model, x, y) >= 97.0


@pytest.mark.slow
def test_training_script_reproduces_the_bundled_accuracy():
    recorded = json.loads(load_checkpoint().metadata["training"])["val_top1"]
    torch.set_num_threads(2)
    _, info = bundled.train(log=lambda _: None)
    assert info["val_top1"] >= 97.0
    assert abs(info["val_top1"] - recorded) <= 1.0
