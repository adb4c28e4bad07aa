"""The PyTorch row runs with its own thread count and, in evaluation, on the faster of it and half of it."""

import time

import numpy as np
import torch

from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.targets.torch_eager import EagerRunner


def batches(n):
    return [np.random.default_rng(i).random((4, 3, 32, 32), dtype=np.float32) for i in range(n)]


def test_each_call_runs_on_its_threads_and_gives_the_process_its_own_back():
    model = load_checkpoint().model.eval()
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = EagerRunner(model, 2)
        x = batches(1)[0]
        got = runner(x)
        assert seen == [2] and torch.get_num_threads() == 1
        with torch.no_grad():  # on one thread here, so equal to rounding
            np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    finally:
        torch.set_num_threads(before)


class Slow(EagerRunner):
    """An eager runner whose two-thread runs take longer, as when another job holds one of the two cores."""

    def __init__(self, slow_threads):
        super().__init__(load_checkpoint().model.eval(), 2)
        self.slow_threads, self.ran = slow_threads, []

    def _run(self, x, threads):
        self.ran.append(threads)
        time.sleep(0.02 if threads == self.slow_threads else 0.0)
        return super()._run(x, threads)


def test_evaluation_picks_the_faster_thread_count_after_timing_both():
    for slow, picked in ((2, 1), (1, 2)):
        runner, xs, steps = Slow(slow), batches(8), []
        outputs = runner.run_all(xs, lambda: steps.append(1))
        assert runner.ran == [2, 2, 1, 2, 1] + [picked] * 3 and runner.evaluation_threads == picked
        assert (runner.note is not None) == (picked == 1)  # fewer threads than asked is said
        assert len(outputs) == len(steps) == 8
        for got, x in zip(outputs, xs):  # any thread count computes the same logits, to rounding
            np.testing.assert_allclose(got, runner(x), rtol=1e-4, atol=1e-5)
        runner.ran.clear()
        runner.run_all(xs[:2])  # picked once: later chunks run on it without timing again
        assert runner.ran == [picked, picked]
