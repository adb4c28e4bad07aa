import numpy as np
import pytest

from edgesmlp import bundled
from edgesmlp.calibration.sources import open_images
from edgesmlp.jobs.evaluate import evaluate_runners, predict, score
from edgesmlp.runtimes.base import Runner


class FunctionRunner(Runner):
    """Any ``f(x) -> logits`` as a runner."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return np.asarray(self.fn(x))


def linear(seed):
    w = np.random.default_rng(seed).standard_normal((3 * 32 * 32, 10)).astype(np.float32)
    return FunctionRunner(lambda x: x.reshape(len(x), -1) @ w)


def test_streaming_matches_in_memory_scoring_with_a_padded_last_batch():
    images = open_images(None, "val")
    x, y = bundled.split_tensors("val")
    reference, other = linear(0), linear(1)
    evaluation = evaluate_runners({"ref": reference, "other": other}, images, bundled.PREPROCESS, batch=16)
    expected = score(predict(other, x.numpy(), 7), y.numpy(), reference(x.numpy()))  # 500 = 71 x 7 + 3
    got = evaluation.accuracy["other"]
    assert evaluation.images == 500 and evaluation.labelled
    assert got.top1 == pytest.approx(expected.top1) and got.top5 == pytest.approx(expected.top5)
    assert got.agreement == pytest.approx(expected.agreement) and got.cosine == pytest.approx(expected.cosine, rel=1e-6)
    assert evaluation.accuracy["ref"].agreement == 100.0


def test_a_failing_runner_is_recorded_and_the_reference_still_scores():
    def dies(x):
        raise RuntimeError("device lost")

    evaluation = evaluate_runners({"ref": linear(0), "dies": FunctionRunner(dies)}, open_images(None, "val"), bundled.PREPROCESS, 64)
    assert evaluation.failures == {"dies": "RuntimeError: device lost"} and evaluation.accuracy["dies"] is None
    assert evaluation.accuracy["ref"].count == 500


def test_each_runner_runs_a_whole_chunk_in_turn_and_memory_stays_at_a_chunk(monkeypatch):
    from edgesmlp.jobs import evaluate

    batch = 16
    monkeypatch.setattr(evaluate, "CHUNK_BYTES", 3 * batch * 3 * 32 * 32 * 4)  # three batches of 32x32 images
    calls = []

    def recording(name, run):
        return FunctionRunner(lambda x: calls.append(name) or run(x))

    runners = {"ref": recording("ref", linear(0)), "other": recording("other", linear(1))}
    chunked = evaluate_runners(runners, open_images(None, "val"), bundled.PREPROCESS, batch)
    assert "".join("r" if c == "ref" else "o" for c in calls) == "rrrooo" * 10 + "rroo"  # 32 batches: 10 x 3 + 2
    monkeypatch.setattr(evaluate, "CHUNK_BYTES", 1)  # one batch a chunk: every batch through every runner in turn
    one = evaluate_runners({"ref": linear(0), "other": linear(1)}, open_images(None, "val"), bundled.PREPROCESS, batch)
    assert chunked.accuracy == one.accuracy and chunked.images == one.images == 500
