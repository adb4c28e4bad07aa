"""One contract every target meets; each target's test class subclasses it.

A target is a :class:`~edgesmlp.targets.base.Target` in the registry. Its ``build`` writes artifacts and
returns variants that run the bundled model here and agree with the PyTorch reference; its ``load``
reads those artifacts back into variants that run and agree too.
"""

import re
from pathlib import Path
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgesmlp import bundled, targets
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.cli import app
from edgesmlp.deploy import to_deploy
from edgesmlp.jobs.inputs import load_calibration, resolve_preprocess
from edgesmlp.jobs.spec import Calibration
from edgesmlp.targets.base import Build, Job, RunSettings, Target, TargetOptions

QUIET = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def loaded():
    ckpt = load_checkpoint()
    preprocess = resolve_preprocess(ckpt)
    _, calib = load_calibration(ckpt, preprocess, Calibration(size=100))
    return ckpt, to_deploy(ckpt.model), preprocess, calib.x


@pytest.fixture(scope="module")
def inputs():
    x, y = bundled.split_tensors("val")
    return x[:64].numpy(), y[:64].numpy()


def agree_with_reference(build: Build, reference: np.ndarray, x: np.ndarray) -> None:
    for v in build.variants:
        for batch in (1, 16):
            run = v.make_runner(batch)
            logits = np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])
            assert logits.shape == reference.shape, (v.precision, batch)
            cosine = (logits * reference).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(reference, axis=1)
            assert cosine.min() > 0.99, (v.precision, cosine.min())
            assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.98
        assert len(v.make_runner(1).time_ms(x[:1], iters=2, warmup=1)) == 2


class TargetContract:
    name: str
    built: set  # precisions build() returns (runnable here)
    loaded: set  # precisions load() returns

    @pytest.fixture
    def target(self) -> Target:
        return targets.get(self.name)

    @pytest.fixture(scope="class")
    @classmethod
    def built_once(cls, loaded, tmp_path_factory):
        """One build per target for the whole class (a build quantizes: seconds to tens of seconds)."""
        ckpt, deploy, preprocess, calib = loaded
        with pytest.MonkeyPatch.context() as patch:
            cls.register(patch)
            target = targets.get(cls.name)
            job = Job(ckpt, deploy, "deploy", preprocess, calib, target.config_type(), RunSettings())
            folder = tmp_path_factory.mktemp(cls.name)
            return folder, target.build(job, folder, QUIET)

    @pytest.fixture
    def folder(self, built_once, tmp_path):
        """A copy of the build's folder for each test, which may write there (load saves engines)."""
        import shutil

        pristine, build = built_once
        return shutil.copytree(pristine, tmp_path / self.name), build

    @staticmethod
    def register(patch: pytest.MonkeyPatch) -> None:
        """Put the target in the registry (the built-in ones are there already)."""

    @pytest.fixture
    def reference(self, loaded, inputs):
        with torch.no_grad():
            return loaded[0].model(torch.from_numpy(inputs[0])).numpy()

    def test_is_registered(self, target):
        assert self.name in targets.names() and isinstance(target, Target) and target.name == self.name
        assert target.summary and target.config_type().to_dict() is not None

    def test_config_from_options_defaults(self, target):
        assert target.config_from(TargetOptions()) == target.config_type()

    def test_available_is_none_or_a_reason(self, target):
        reason = target.available()
        assert reason is None or (isinstance(reason, str) and reason)

    def test_build_returns_variants_that_agree(self, folder, reference, inputs):
        _, build = folder
        assert isinstance(build, Build)
        assert {v.precision for v in build.variants} == self.built
        for v in build.variants:
            assert v.runtime and (v.size_mb is None or v.size_mb > 0)
        agree_with_reference(build, reference, inputs[0])

    def test_load_reads_the_build_back(self, target, folder, reference, inputs):
        path, _ = folder
        assert target.available() is None, target.available()
        build = target.load(path, target.config_type(), RunSettings(), QUIET)
        assert {v.precision for v in build.variants} == self.loaded
        agree_with_reference(build, reference, inputs[0])


class TestTorchTarget(TargetContract):
    name, built, loaded = "torch", {"fp32"}, {"fp32"}


class TestOnnxRuntimeTarget(TargetContract):
    name, built, loaded = "onnxruntime", {"fp32", "int8"}, {"fp32", "int8"}


def _openvino_default() -> set[str]:
    """The CPU's default-precision row, where it is not f32 (bf16 on bf16 CPUs)."""
    from edgesmlp.runtimes.openvino import resolved_default_precision

    default = resolved_default_precision()
    return set() if default == "f32" else {default}


class TestOpenVINOTarget(TargetContract):
    name = "openvino"
    built = loaded = {"fp32", "int8"} | _openvino_default()

    def test_ships_static_batch_irs_and_times_against_the_default_precision(self, folder):
        from edgesmlp.runtimes.openvino import read_ir, static_batch

        path, build = folder
        assert static_batch(read_ir(path / "model.xml")) == 1 and static_batch(read_ir(path / "model_fp32.xml")) == 1
        references = [v for v in build.variants if v.speed_reference]
        assert len(references) == 1  # the default precision's row, or fp32 where that is the default
        assert references[0].precision == (next(iter(_openvino_default())) if _openvino_default() else "fp32")
        runner = references[0].make_runner(1)
        assert runner.inference_precision == references[0].precision.replace("fp32", "f32")

    def test_throughput_streams_compute_what_one_stream_does(self, folder):
        """Throughput runs one separately compiled single-stream model per stream OpenVINO's THROUGHPUT hint
        picks (its own multi-stream compilation computes wrong INT8 logits on sMLPNet): each of them gives the
        one-stream runner's INT8 logits exactly, and the pool's img/s is a real measurement."""
        import numpy as np

        _, build = folder
        runner = next(v for v in build.variants if v.precision == "int8").make_runner(4)
        x = np.random.default_rng(0).standard_normal((4, *runner.model.inputs[0].get_shape()[1:])).astype(np.float32)
        want = runner(x)
        for request in runner.stream_pool(2):
            assert np.array_equal(request.infer({0: x})[0], want)
        assert runner.throughput_streams >= 1
        assert 0 < runner.images_per_second(x, 0.0) < 1e7

    def test_evaluation_runs_on_the_stream_pool_and_gives_one_streams_logits(self, folder):
        """Evaluation (``run_all``) keeps a batch in flight per throughput stream, for every precision, and
        each batch's logits are the one-stream runner's, exactly."""
        import numpy as np

        _, build = folder
        for variant in build.variants:
            runner = variant.make_runner(4)
            runner.__dict__["throughput_streams"] = 2  # the pool, whatever this CPU's hint picks
            shape = runner.model.inputs[0].get_shape()[1:]
            batches = [np.random.default_rng(i).standard_normal((4, *shape)).astype(np.float32) for i in range(5)]
            got = runner.run_all(batches)
            assert len(got) == 5 and all(np.array_equal(g, runner(x)) for g, x in zip(got, batches)), variant.precision

    @pytest.mark.parametrize("streams", [1, 2])
    def test_a_row_compiles_once_for_evaluation_and_throughput_and_once_at_batch_1(self, folder, monkeypatch, streams):
        """The runner evaluation ran gives the throughput column too: timing compiles each row's batch-1 model
        alone, and evaluation compiles only what it runs (the pool, or the one stream when the hint picks one)."""
        from edgesmlp.jobs.evaluate import Accuracy, measure_target
        from edgesmlp.runtimes.openvino import OpenVINORunner

        compiled, real = [], OpenVINORunner._core

        class Counting:
            def __init__(self, runner):
                self.runner, self.core = runner, real(runner)

            def compile_model(self, model, device, config):
                compiled.append((self.runner.batch, config.get("PERFORMANCE_HINT"), config.get("NUM_STREAMS")))
                return self.core.compile_model(model, device, config)

        monkeypatch.setattr(OpenVINORunner, "_core", lambda runner: Counting(runner))
        monkeypatch.setattr(OpenVINORunner, "throughput_streams", streams)
        _, build = folder
        runners = {v.precision: v.make_runner(4).prepare() for v in build.variants}
        shape = runners["int8"].model.inputs[0].get_shape()[1:]
        x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
        for runner in runners.values():
            runner.run_all([x, x])
        evaluation = list(compiled)
        per_row = [(4, "LATENCY", 1)] * streams if streams > 1 else [(4, "LATENCY", None)]
        assert sorted(evaluation) == sorted(per_row * len(runners))
        accuracy = {p: Accuracy(None, None, 100.0, 1.0, 4) for p in runners}
        rows, failures = measure_target("openvino", build.variants, accuracy, x,
                                        RunSettings(throughput_batch=4, latency_seconds=0, latency_iters=3), QUIET,
                                        runners)
        assert not failures and all(r.throughput_ips > 0 for r in rows)
        assert compiled[len(evaluation):] == [(1, "LATENCY", None)] * len(runners)


class TestJetsonTarget(TargetContract):
    """Build runs for real (the emulated rows); load builds engines with the recording TensorRT stand-in and the
    CUDA runtime stand-in: this checks edgesmlp's engine plumbing, not TensorRT's speed or accuracy."""

    name, built, loaded = "jetson", {"fp32", "fp16", "int8", "int8-fp16"}, {"fp16", "int8"}

    @pytest.fixture(autouse=True)
    def device(self, device_standins):
        return device_standins

    def test_unavailable_without_tensorrt(self, target, monkeypatch):
        import sys

        monkeypatch.setitem(sys.modules, "tensorrt", None)
        assert "engines are built and measured on the device" in target.available()

    def test_engines_are_saved_in_the_bundle_and_reused(self, target, folder):
        path, _ = folder
        first = target.load(path, target.config_type(), RunSettings(), QUIET)
        assert (path / "model_int8.engine").is_file() and (path / "model_fp16.engine").is_file()
        assert all(v.quantize_seconds is not None for v in first.variants)  # built now
        again = target.load(path, target.config_type(), RunSettings(), QUIET)
        assert all(v.quantize_seconds is None for v in again.variants)  # loaded, not rebuilt

    @pytest.mark.parametrize("version, sources", [
        ("10.3.0", ["model_int8_qdq.onnx", "model_fp32.onnx"]),
        ("10.12.0", ["model_int8_qdq_fp16.onnx", "model_fp16.onnx"]),
        ("11.0.0", ["model_int8_qdq_fp16.onnx", "model_fp16.onnx"]),
    ])
    def test_engines_come_from_the_graphs_the_tensorrt_version_takes(self, target, folder, monkeypatch, version,
                                                                       sources):
        """INT8 against FP16 on every TensorRT: strongly typed ones build the FP16-typed graphs."""
        import sys

        from tests.tensorrt_standin import make_tensorrt

        trt = make_tensorrt(version)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        path, _ = folder
        build = target.load(path, target.config_type(), RunSettings(), QUIET)
        assert [v.precision for v in build.variants] == ["int8", "fp16"]
        assert [Path(c[1]).name for c in trt.calls if c[0] == "parse_from_file"] == sources

    @pytest.mark.parametrize("version, graph", [("10.3.0", "model_int8_qdq.onnx"), ("10.12.0", "model_int8_qdq_fp16.onnx")])
    def test_a_float_graph_in_place_of_the_int8_one_is_refused(self, target, folder, monkeypatch, version, graph):
        """On the device: an INT8 engine is built only from a graph that has Q/DQ nodes."""
        import sys

        from edgesmlp.errors import InputError
        from tests.tensorrt_standin import make_tensorrt

        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version))
        path, _ = folder
        (path / graph).write_bytes((path / ("model_fp16.onnx" if "fp16" in graph else "model_fp32.onnx")).read_bytes())
        with pytest.raises(InputError, match=f"{graph} holds no QuantizeLinear/DequantizeLinear"):
            target.load(path, target.config_type(), RunSettings(), QUIET)

    def test_a_bundle_without_fp16_graphs_builds_fp32_on_strongly_typed_tensorrt(self, target, folder, monkeypatch):
        """A bundle written before the FP16-typed graphs: INT8 and FP32 engines, as such a bundle always got."""
        import sys

        from tests.tensorrt_standin import make_tensorrt

        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("10.12.0"))
        path, _ = folder
        (path / "model_fp16.onnx").unlink()
        (path / "model_int8_qdq_fp16.onnx").unlink()
        build = target.load(path, target.config_type(), RunSettings(), QUIET)
        assert [v.precision for v in build.variants] == ["int8", "fp32"]


class TestToyTarget(TargetContract):
    """A target defined in tests/, registered with one line: the seam needs nothing else."""

    name, built, loaded = "toy", {"fp32"}, {"fp32"}

    @staticmethod
    def register(patch: pytest.MonkeyPatch) -> None:
        patch.setitem(targets.REGISTRY, "toy", "tests.toy_target")

    @pytest.fixture(autouse=True)
    def registered(self, monkeypatch):
        self.register(monkeypatch)

    def test_quantize_and_bench_through_the_cli(self, tmp_path):
        runner = CliRunner()
        quantized = runner.invoke(app, ["quantize", "--target", "toy", "-o", str(tmp_path / "q"), "--calib-size", "20"])
        assert quantized.exit_code == 0, quantized.output
        assert (tmp_path / "q" / "toy" / "toy.onnx").is_file() and re.search(r"^toy +fp32 +\d", quantized.stdout, re.M)
        assert "| toy | fp32 | toy runtime | ok |" in (tmp_path / "q" / "toy" / "report.md").read_text()
        bench = runner.invoke(app, ["bench", "-t", "torch,toy", "-o", str(tmp_path / "b"), "--latency-seconds", "0", "--latency-iters", "3",
                                    "--calib-size", "20"])
        assert bench.exit_code == 0, bench.output
        assert re.search(r"^toy +fp32 +\d", bench.stdout, re.M) and re.search(r"^torch +fp32 +\d", bench.stdout, re.M)
        assert "| toy | fp32 | toy runtime | ok |" in (tmp_path / "b" / "report.md").read_text()
        again = runner.invoke(app, ["bench", "-t", "toy", "--from", str(tmp_path / "q"), "-o", str(tmp_path / "c"),
                                    "--latency-seconds", "0", "--latency-iters", "3"])
        assert again.exit_code == 0, again.output
        assert "| toy | fp32 | toy runtime | ok |" in (tmp_path / "c" / "report.md").read_text()
