"""The PyTorch row runs on its own thread count and gives the process's back."""

import numpy as np
import torch

from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.targets.torch_eager import EagerRunner


def test_each_call_runs_on_its_threads_and_gives_the_process_its_own_back():
    model = load_checkpoint().model.eval()
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = EagerRunner(model, 2)
        x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
        got = runner(x)
        assert seen == [2] and torch.get_num_threads() == 1
        with torch.no_grad():  # on one thread here, so equal to rounding
            np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    finally:
        torch.set_num_threads(before)
