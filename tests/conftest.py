import argparse

import pytest
import torch

from edgesmlp.config import ModelConfig
from edgesmlp.model import sMLPNet

SMALL = ModelConfig(dim=8, depths=(1, 1, 2, 1), alpha=2, num_classes=5, in_chans=3, image_size=32)


def nhwc_transpose_pairs(xml, scope: str = "token_mix") -> int:
    """How many blocks of the OpenVINO IR ``xml`` run ``scope`` (a layer name part: "token_mix" for the token
    mixing, "norm" for the channel LayerNorms) on an NHWC view. The IR's only Transposes are the views', into and
    out of NHWC, one pair per block and scope (an assertion error if any other Transpose is there)."""
    import openvino as ov

    transposes = [op for op in ov.Core().read_model(str(xml)).get_ops() if op.get_type_name() == "Transpose"]
    orders = [tuple(op.input(1).get_source_output().get_node().get_data()) for op in transposes]
    assert orders.count((0, 2, 3, 1)) == orders.count((0, 3, 1, 2)) == len(orders) / 2, orders
    return sum(f"{scope}" in op.get_friendly_name() for op in transposes) // 2


def compile_error_failing_once(real):
    """A stand-in for ``runtimes.openvino.compile_error`` that reports OpenVINO 2026.4's channels-last failure on its
    first call and asks ``real`` after that, for testing the fallbacks (no graph edgesmlp makes fails on 2026.4)."""
    calls = []

    def compile_error(model):
        calls.append(model)
        return "Check 'any_of(scale.size(), OC, 1U)' failed" if len(calls) == 1 else real(model)

    compile_error.calls = calls
    return compile_error


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm/LayerNorm non-trivial statistics and affines, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


@pytest.fixture
def small_model() -> sMLPNet:
    torch.manual_seed(0)
    return randomize_norms(sMLPNet(SMALL))


@pytest.fixture
def training_checkpoint(small_model, tmp_path):
    """A checkpoint laid out as the official DeiT-style training script writes it."""
    ema = randomize_norms(sMLPNet(SMALL), seed=1)
    optimizer = torch.optim.AdamW(small_model.parameters())
    path = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "model": small_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"base_lrs": [1e-3], "last_epoch": 7},
            "epoch": 7,
            "model_ema": ema.state_dict(),
            "scaler": {"scale": 65536.0},
            "args": argparse.Namespace(model="smlpnet_t", lr=1e-3, input_size=32, drop_path=0.1),
        },
        path,
    )
    return path, small_model, ema


@pytest.fixture(scope="session")
def cudart_standin(tmp_path_factory):
    """The CUDA runtime stand-in (tests/cudart_standin.c) compiled once: host memory behind libcudart's calls."""
    import shutil
    import subprocess
    from pathlib import Path

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the CUDA runtime stand-in")
    library = tmp_path_factory.mktemp("cudart") / "libcudart_standin.so"
    source = Path(__file__).with_name("cudart_standin.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    return library


@pytest.fixture
def device_standins(cudart_standin, monkeypatch):
    """A device as the engine code sees it: the recording TensorRT stand-in and the CUDA runtime stand-in.
    Returns the stand-in ``tensorrt`` module, whose ``calls`` record every API call."""
    import sys

    from edgesmlp.runtimes import cuda
    from tests.tensorrt_standin import make_tensorrt

    trt = make_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setenv("EDGESMLP_CUDART", str(cudart_standin))
    cuda.library.cache_clear()
    yield trt
    cuda.library.cache_clear()


@pytest.fixture(scope="session")
def digits_tree(tmp_path_factory):
    """The bundled digits splits written as ImageFolder trees (train/, calib/, val/), as a user's data looks."""
    from edgesmlp.calibration.digits import write_imagefolders

    root = tmp_path_factory.mktemp("data") / "digits"
    write_imagefolders(root)
    return root


@pytest.fixture(scope="session")
def fragile_digits(tmp_path_factory):
    """A model whose INT8 loses agreement, and images that show it: the bundled design trained 4 epochs
    (scripts/train_digits.py --epochs 4, 3.5 s), with 1,200 augmented calibration and 4,000 augmented
    validation digits. Full INT8 agrees with FP32 on about 99.7% of them on both targets."""
    import torch

    from edgesmlp import bundled
    from edgesmlp.checkpoint import save_trained_digits

    root = tmp_path_factory.mktemp("fragile")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, info = bundled.train(seed=0, epochs=4, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    save_trained_digits(model, info, root / "digits_e4.safetensors")
    bundled.write_augmented_imagefolders(root / "data", {"calib": 4, "val": 8})
    return root / "digits_e4.safetensors", root / "data" / "calib", root / "data" / "val"
