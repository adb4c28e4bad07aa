"""One contract every target meets; each target's test class subclasses it.

A target module exposes ``available() -> None | reason`` and ``bench_build(job, folder, log) -> Build``
whose variants run the bundled model and agree with the PyTorch reference.
"""

import importlib
import sys

import numpy as np
import pytest
import torch

from edgesmlp import bundled
from edgesmlp.bench import BENCH_TARGETS
from edgesmlp.calibration.options import load_job_images, resolve_preprocess
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.deploy import to_deploy
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig
from edgesmlp.targets.base import Build, Job


@pytest.fixture(scope="module")
def job():
    ckpt = load_checkpoint()
    preprocess = resolve_preprocess(ckpt)
    images = load_job_images(ckpt, preprocess, None, None, calib_size=100, seed=0)
    return Job(ckpt, to_deploy(ckpt.model), "deploy", preprocess, images,
               {"ptq": OpenVINOPTQConfig(calib_size=100), "qdq": None, "form": "deploy", "threads": 0})


@pytest.fixture(scope="module")
def inputs():
    x, y = bundled.split_tensors("val")
    return x[:64].numpy(), y[:64].numpy()


class TargetContract:
    name: str
    precisions: set

    @pytest.fixture
    def module(self):
        return importlib.import_module(BENCH_TARGETS[self.name])

    @pytest.fixture
    def build(self, module, job, tmp_path):
        assert module.available() is None, module.available()
        return module.bench_build(job, tmp_path / self.name, lambda _: None)

    def test_is_registered(self):
        assert self.name in BENCH_TARGETS

    def test_available_is_none_or_a_reason(self, module):
        reason = module.available()
        assert reason is None or (isinstance(reason, str) and reason)

    def test_variants(self, build):
        assert isinstance(build, Build)
        assert {v.precision for v in build.variants} == self.precisions
        for v in build.variants:
            assert v.runtime and (v.size_mb is None or v.size_mb > 0)

    def test_runners_agree_with_the_reference(self, build, job, inputs):
        x, y = inputs
        with torch.no_grad():
            reference = job.ckpt.model(torch.from_numpy(x)).numpy()
        for v in build.variants:
            for batch in (1, 16):
                run = v.make_runner(batch, batch == 1)
                logits = np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])
                assert logits.shape == reference.shape, (v.precision, batch)
                cosine = (logits * reference).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(reference, axis=1)
                assert cosine.min() > 0.99, (v.precision, cosine.min())
                assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.98


class TestTorchTarget(TargetContract):
    name, precisions = "torch", {"fp32"}


class TestOnnxRuntimeTarget(TargetContract):
    name, precisions = "onnxruntime", {"fp32", "int8"}


class TestOpenVINOTarget(TargetContract):
    name, precisions = "openvino", {"fp32", "int8"}


class TestTensorRTTarget(TargetContract):
    """Against the recording TensorRT stand-in (tests/tensorrt_standin.py) with host buffers: this checks
    edgesmlp's engine plumbing, not TensorRT's speed or accuracy."""

    name, precisions = "tensorrt", {"fp16", "int8"}

    @pytest.fixture(autouse=True)
    def standin(self, monkeypatch):
        from edgesmlp.targets import jetson, tensorrt
        from tests.tensorrt_standin import make_tensorrt

        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("10.3.0"))
        monkeypatch.setattr(tensorrt, "require_cuda", lambda: None)
        monkeypatch.setattr(jetson, "gpu_visible", lambda: True)
        monkeypatch.setattr(jetson, "ENGINE_DEVICE", "cpu")

    def test_unavailable_without_tensorrt(self, module, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", None)
        assert "engines are built and measured on the device" in module.available()

    def test_engines_are_saved_in_the_bundle_and_reused(self, build, module, tmp_path):
        folder = tmp_path / self.name
        assert (folder / "model_int8.engine").is_file() and (folder / "model_fp16.engine").is_file()
        again = module.load(folder, log=lambda _: None)
        assert all(v.quantize_seconds is None for v in again.variants)  # loaded, not rebuilt
