"""End to end with the real OpenVINO and NNCF on the bundled model and its data."""

import json
import re
import sys


import pytest
from dataclasses import replace
from typer.testing import CliRunner

from edgesmlp.cli import app
from edgesmlp.errors import ConfigError
from edgesmlp.jobs.quantize import run_quantize
from edgesmlp.jobs.spec import Calibration, QuantizeRequest
from edgesmlp.targets.base import RunSettings
from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig
from tests.conftest import compile_error_failing_once, nhwc_transpose_pairs

runner = CliRunner()
REQUIRED = ("target", "precision", "top1", "top5", "latency_ms_p50", "latency_ms_p90", "throughput_ips", "size_mb")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("q")
    outcome = run_quantize(QuantizeRequest(output=out, run=RunSettings(latency_seconds=0, latency_iters=10)), log=lambda _: None)
    return outcome


def results(report):
    return {r["precision"]: r for r in report["results"]}


def test_int8_accuracy_on_the_bundled_model(default_run):
    r = results(default_run.report)
    assert r["fp32"]["top1"] >= 97.0
    assert r["int8"]["top1"] >= r["fp32"]["top1"] - 0.3
    assert r["int8"]["agreement"] >= 99.0
    assert r["int8"]["cosine"] > 0.999
    assert r["int8"]["images"] == 500


def test_artifacts_and_report_schema(default_run):
    folder = default_run.directory
    assert folder.name == "openvino"
    for name in ("model.xml", "model.bin", "model_fp32.xml", "model_fp32.bin", "report.json", "report.md",
                 "manifest.json"):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "report.json").read_text())
    assert report["schema"] == "edgesmlp.report/1"
    for row in report["results"]:
        assert all(row[k] is not None for k in REQUIRED), row
    r = results(report)
    assert r["int8"]["size_mb"] < r["fp32"]["size_mb"] / 2.5  # int8 weights
    assert "| openvino | int8 | OpenVINO CPU | ok |" in (folder / "report.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["versions"]) >= {"edgesmlp", "torch", "openvino", "nncf"}
    assert len(manifest["weights"]["sha256"]) == 64 and len(manifest["calibration"]["list_sha256"]) == 64
    assert manifest["calibration"]["images"] == 300
    assert manifest["options"]["config"]["preset"] == "performance"


def test_int8_ir_is_really_quantized(default_run):
    import openvino as ov

    model = ov.Core().read_model(str(default_run.directory / "model.xml"))
    types = [op.get_type_name() for op in model.get_ops()]
    assert types.count("FakeQuantize") >= 20
    assert nhwc_transpose_pairs(default_run.directory / "model.xml") > 0  # token mixing channels-last
    assert nhwc_transpose_pairs(default_run.directory / "model.xml", ".norm/") > 0  # and the channel norms


def test_cli_no_arguments_and_real_imagefolder(digits_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["quantize", "--calib", str(digits_tree / "calib"), "--val", str(digits_tree / "val"),
                                 "--calib-size", "100", "--latency-seconds", "0"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^openvino +int8 +\d", result.stdout, re.M)
    assert max(map(len, result.stdout.splitlines())) <= 80  # fits an 80-column terminal
    assert (tmp_path / "edgesmlp-out" / "openvino" / "model.xml").is_file()
    report = json.loads((tmp_path / "edgesmlp-out" / "openvino" / "report.json").read_text())
    assert results(report)["int8"]["agreement"] >= 98.0
    assert report["data"]["calib_images"] == 100 and report["data"]["val"].endswith("val")
    # An explicit existing output is refused and left alone.
    before = (tmp_path / "edgesmlp-out" / "openvino" / "report.json").read_text()
    refused = runner.invoke(app, ["quantize", "-o", "edgesmlp-out"])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert (tmp_path / "edgesmlp-out" / "openvino" / "report.json").read_text() == before


def test_unlabelled_validation_folder(digits_tree, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted((digits_tree / "val" / "3").glob("*.png"))[:20]:
        (flat / p.name).write_bytes(p.read_bytes())
    outcome = run_quantize(QuantizeRequest(val=flat, output=tmp_path / "o", run=RunSettings(latency_seconds=0, latency_iters=5),
                                           calibration=Calibration(size=50)), log=lambda _: None)
    r = results(outcome.report)["int8"]
    assert r["top1"] is None and r["agreement"] is not None
    assert any("no labels" in n for n in outcome.report["notes"])


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    import edgesmlp.jobs.quantize as pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "write_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_quantize(QuantizeRequest(output=tmp_path / "o", run=RunSettings(latency_seconds=0, latency_iters=2),
                                     calibration=Calibration(size=20)), log=lambda _: None)
    assert not (tmp_path / "o" / "openvino").exists()
    assert not (tmp_path / "o").exists()  # the run created it, and took it away again: nothing hidden is left


# --- bad input: clear one-line errors, exit 2, nothing written --------------------------------------------


def invoke_error(args, pattern, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["quantize", "-o", str(out), *map(str, args)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (out / "openvino").exists()


def test_missing_calibration_folder(tmp_path):
    invoke_error(["--calib", tmp_path / "nope"], "no such file", tmp_path)


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    invoke_error(["--calib", tmp_path / "empty"], "holds no images", tmp_path)


def test_only_corrupt_calibration_images(tmp_path):
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(b"garbage")
    invoke_error(["--calib", tmp_path / "bad"], "none of its 3 images could be read", tmp_path)


def test_validation_classes_do_not_match(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "val" / cls / "a.png")
    invoke_error(["--val", tmp_path / "val"], "2 class folders but the model has 10", tmp_path)


def test_own_weights_need_their_own_images(tmp_path, small_model):
    import torch

    torch.save(small_model.state_dict(), tmp_path / "w.pth")
    invoke_error(["--weights", tmp_path / "w.pth"], "--calib is required", tmp_path)


def test_bias_correction_on_deploy_form_is_explained(tmp_path):
    invoke_error(["--bias-correction", "full"], "--form reference", tmp_path)


def test_unknown_ignored_node(tmp_path):
    invoke_error(["--ignore", "no_such_node", "--calib-size", "10"], "names no quantizable layer", tmp_path)


def test_bad_options(tmp_path):
    invoke_error(["--preset", "fastest"], "--preset", tmp_path)
    invoke_error(["--calib-size", "0"], "--calib-size", tmp_path)
    invoke_error(["--mean", "a,b,c"], "--mean", tmp_path)
    invoke_error(["--image-size", "64"], "does not match the weights", tmp_path)
    invoke_error(["--method", "sgd"], "--method 'sgd' unknown", tmp_path)
    invoke_error(["--bias-correction", "always"], "--bias-correction 'always' unknown", tmp_path)
    invoke_error(["--fuse", "gemm"], "--fuse 'gemm' unknown: use matmul, conv", tmp_path)
    invoke_error(["--fuse", "conv", "--form", "reference"], "the reference form has none: drop --fuse", tmp_path)
    invoke_error(["--token-mixing", "float", "--form", "reference"], "the reference form has none: drop --token-mixing",
                 tmp_path)
    invoke_error(["--token-mixing", "fp16"], "--token-mixing 'fp16' unknown: use int8, float", tmp_path)
    with pytest.raises(ConfigError, match="alpha"):
        OpenVINOPTQConfig(smooth_quant=2.0)
    with pytest.raises(ConfigError, match="--preset 'fast' unknown: use performance, mixed"):
        OpenVINOPTQConfig(preset="fast")  # the library refuses it too, not only the CLI
    invoke_error(["--calib-batch", "0"], "--calib-batch must be a whole number of images, 1 or more", tmp_path)
    invoke_error(["--calib-batch", "4", "--activation-range", "histogram"], "needs --activation-range minmax",
                 tmp_path)
    invoke_error(["--calib-batch", "2", "--smooth-quant", "0.5"], "cannot go with NNCF's SmoothQuant", tmp_path)
    invoke_error(["--calib-batch", "2", "--bias-correction", "fast", "--form", "reference"],
                 "cannot go with NNCF's bias correction", tmp_path)


def test_calibration_batches_give_the_same_int8_graph():
    """NNCF takes --calib-batch images an inference; with min-max ranges every FakeQuantize range is the same as
    with one image an inference, including a last, short batch (10 images in batches of 4)."""
    import numpy as np

    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_ptq import calibration_graph, quantize_openvino

    deploy = to_deploy(_small_model(32, randomize=True))
    calibration = np.random.default_rng(0).standard_normal((10, 3, 32, 32)).astype(np.float32)

    def ranges(batch: int) -> dict:
        int8 = quantize_openvino(calibration_graph(deploy, 3, 32), calibration, OpenVINOPTQConfig(calib_batch=batch))
        return {op.get_friendly_name(): [op.input(k).get_source_output().get_node().get_data() for k in range(1, 5)]
                for op in int8.get_ordered_ops() if op.get_type_name() == "FakeQuantize"}

    one, four = ranges(1), ranges(4)
    assert len(one) > 20 and one.keys() == four.keys()
    for name, constants in one.items():
        for a, b in zip(constants, four[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # A range that missed the last batch's images would differ: the test sees every image.
    fewer = quantize_openvino(calibration_graph(deploy, 3, 32), calibration[:8], OpenVINOPTQConfig(calib_batch=4))
    assert any(not np.array_equal(one[op.get_friendly_name()][k - 1], op.input(k).get_source_output().get_node().get_data())
               for op in fewer.get_ordered_ops() if op.get_type_name() == "FakeQuantize" for k in range(1, 5))


@pytest.mark.parametrize("module, package", [("openvino", "openvino"), ("nncf", "nncf")])
def test_missing_runtime_says_what_to_install(tmp_path, monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    invoke_error(["--calib-size", "10"], f"needs {package}, which is not installed: run `pip install", tmp_path)


def _small_model(size: int, randomize: bool = False, dim: int = 32, **design):
    """A 4-stage sMLPNet (one block a stage) with seeded weights; ``randomize`` also draws its norm statistics."""
    import torch

    from edgesmlp import ModelConfig
    from edgesmlp.model import sMLPNet
    from tests.conftest import randomize_norms

    torch.manual_seed(0)
    model = sMLPNet(ModelConfig(dim=dim, depths=(1, 1, 1, 1), alpha=2, num_classes=4, image_size=size, **design))
    return (randomize_norms(model, seed=0) if randomize else model).eval()


def _images(size: int):
    import numpy as np

    return np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)


def _executed(int8, size: int, kinds: tuple[str, ...]):
    import numpy as np
    import openvino as ov

    int8.reshape([1, 3, size, size])
    request = ov.Core().compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32",
                                                    "PERF_COUNT": True}).create_infer_request()
    request.infer({0: np.zeros((1, 3, size, size), np.float32)})
    return [(p.node_name, p.exec_type) for p in request.profiling_info
            if p.node_type in kinds and p.status.name == "EXECUTED"]


def test_channels_last_int8_has_no_reorders_and_int8_token_mixing():
    """The OpenVINO INT8 source (channels-last mixing, fused by a MatMul) keeps one layout through every block and
    runs both axial MatMuls in INT8; the NCHW deploy form needs Reorders around them and (but with AMX) leaves P @ x
    in float."""
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import to_openvino
    from edgesmlp.quantization.openvino_ptq import calibration_graph, quantize_openvino
    from edgesmlp.timing import cpu_flags

    deploy, calibration = to_deploy(_small_model(64, randomize=True)), _images(64)
    config = OpenVINOPTQConfig(fuse="matmul", token_mixing="int8")
    ours = quantize_openvino(calibration_graph(deploy, 3, 64, config), calibration, config)
    nchw = quantize_openvino(to_openvino(deploy, 3, 64, batch=-1), calibration, config)
    reorders = [name for name, _ in _executed(ours, 64, ("Reorder",))]
    assert reorders and all("stems.0" in name for name in reorders)  # only the input's, into the first conv
    # Each channel LayerNorm is one MVN node (its quantizer fused in), not ReduceMeans and elementwise passes.
    # The only ReduceMean left is the head's average pool ("aten::mean"); the NCHW form has two more a block.
    reduces = lambda int8: [name for name, _ in _executed(int8, 64, ("ReduceMean",)) if "aten::mean" not in name]
    assert len(_executed(ours, 64, ("MVN",))) == 4 and not reduces(ours)
    # The plugin runs the NCHW form's norms as ReduceMeans (two a norm, in every run but one of a full suite, which
    # executed 7 of the 8: the plugin's choice, not this test's subject), never as MVN.
    assert len(reduces(nchw)) >= 4 and not _executed(nchw, 64, ("MVN",))
    # The NCHW form reorders in every block (3 or 4 Reorders each, by CPU: AMD EPYC with VNNI 4, Xeon with AMX 3).
    in_blocks = {m.group(1) for n, _ in _executed(nchw, 64, ("Reorder",)) if (m := re.search(r"token_mix\.(\d+)", n))}
    assert len(in_blocks) == 4, in_blocks
    if cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        matmuls = _executed(ours, 64, ("MatMul",))
        assert len(matmuls) == 2 * 4 and all(kind.lower().endswith("_i8") for _, kind in matmuls), matmuls
        if "amx_int8" not in cpu_flags():  # with AMX the plugin has an INT8 kernel for the NCHW P @ x too
            assert any(kind.endswith("f32") for _, kind in _executed(nchw, 64, ("MatMul",)))


def test_conv_fuse_runs_the_fuse_as_an_int8_convolution(monkeypatch):
    """``fuse="conv"``: each channels-last Concat is fused by an INT8 1x1 Convolution, and the axial MatMuls stay
    INT8. Without the FakeQuantize requantize_transposed_concats puts after the Transpose, OpenVINO's CPU plugin
    runs that fuse (and the MatMuls) in f32: the pass is what keeps it INT8. The extra FakeQuantize repeats the
    Concat's unified range, so in float it changes nothing (checked on its own constants: quantizing twice on that
    grid gives the values once quantized), and the INT8 graph still computes the model's logits."""
    import numpy as np
    import openvino as ov

    import edgesmlp.quantization.openvino_ptq as ptq
    from edgesmlp.deploy import to_deploy

    deploy, calibration = to_deploy(_small_model(64, randomize=True)), _images(64)
    config = OpenVINOPTQConfig(fuse="conv", token_mixing="int8")
    graph = ptq.calibration_graph(deploy, 3, 64, config)
    fuses = lambda int8: [k for n, k in _executed(int8, 64, ("Convolution", "FullyConnected", "FullyConnectedCompressed",
                                                             "FullyConnectedQuantizedLegacy")) if ".fuse/" in n]
    ours = ptq.quantize_openvino(graph, calibration, config)
    assert len(fuses(ours)) == 4 and all(k.endswith("_I8") for k in fuses(ours)), fuses(ours)
    assert all(k.lower().endswith("_i8") for _, k in _executed(ours, 64, ("MatMul",)))
    inserted = [op for op in ours.get_ops() if op.get_friendly_name().endswith(".fuse/aten::_convolution/Convolution/fq_input_0")]
    assert len(inserted) == 4

    monkeypatch.setattr(ptq, "requantize_transposed_concats", lambda int8: 0)
    bare = ptq.quantize_openvino(graph, calibration, config)
    assert not any(k.endswith("_I8") for k in fuses(bare)), fuses(bare)  # the plugin's f32 fallback, as measured

    # The copy repeats the grid the Concat's values are already on: the same values, checked on its own constants.
    import openvino.opset13 as ops

    consts = [inserted[0].input(k).get_source_output() for k in range(1, 5)]
    x = ops.parameter([2, 5, 6, 7], np.float32)
    once = ops.transpose(ops.fake_quantize(x, *consts, inserted[0].get_levels()), ops.constant(np.array([0, 3, 1, 2])))
    twice = ops.fake_quantize(once, *consts, inserted[0].get_levels())
    high = 1.2 * float(np.abs(consts[1].get_node().get_data()).max())  # the whole grid, and a little clipping
    values = np.random.default_rng(3).uniform(-high, high, (2, 5, 6, 7))
    outs = ov.Core().compile_model(ov.Model([once, twice], [x]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(
        {0: values.astype(np.float32)})
    assert np.array_equal(outs[0], outs[1]) and len(np.unique(outs[0])) > 150

    # And the INT8 graph still computes the model: its logits agree with the float module's.
    import torch

    image = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = ov.Core().compile_model(ours, "CPU")({0: image})[0].ravel()
    with torch.no_grad():
        want = deploy(torch.from_numpy(image)).numpy().ravel()
    assert got @ want / np.linalg.norm(got) / np.linalg.norm(want) > 0.99


def test_conv_fuse_leaves_a_one_by_one_grid_stage_to_the_matmul():
    """The bundled model's last stage has a 1x1 token grid: there the fuse stays a MatMul (one row of GEMM either
    way), every token-mixing GEMM still runs INT8, and the block cosines ``sensitivity`` taps at each residual
    sum compile in f32 (a conv fuse there made OpenVINO fail with "Cannot get descriptor for edge")."""
    from edgesmlp import bundled
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_partial import block_cosines
    from edgesmlp.quantization.openvino_ptq import calibration_graph, quantize_openvino

    config = OpenVINOPTQConfig(fuse="conv", token_mixing="int8")
    fp32 = calibration_graph(to_deploy(load_checkpoint().model), 3, 32, config)
    int8 = quantize_openvino(fp32, bundled.split_tensors("calib")[0].numpy()[:32], config)
    gemms = _executed(int8, 32, ("Convolution", "MatMul", "FullyConnected", "FullyConnectedCompressed",
                                 "FullyConnectedQuantizedLegacy"))
    fuses = [name.split("/")[0] for name, _ in gemms if ".fuse/" in name or "MatMul_2" in name]
    assert fuses == [f"__module.token_mix.{i}.fuse" for i in range(4)] + ["__module.token_mix.4"], fuses
    mixing = [kind for name, kind in gemms if "token_mix" in name]
    assert len(mixing) == 15 and all(kind.lower().endswith("_i8") for kind in mixing), gemms
    x = bundled.split_tensors("val")[0].numpy()[:4]
    assert len(block_cosines(fp32, int8, x)) == 10


def test_requantize_leaves_concats_without_one_shared_range():
    """A Concat whose inputs are quantized with different ranges gets no FakeQuantize: one copy could not repeat
    both grids, and would change values."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from edgesmlp.quantization.openvino_ptq import requantize_transposed_concats

    def fq(x, high):
        c = lambda v: ops.constant(np.float32(v))
        return ops.fake_quantize(x, c(-high), c(high), c(-high), c(high), 256)

    def graph(highs):
        x = ops.parameter([1, 4, 4, 8], np.float32)
        cat = ops.concat([fq(x, highs[0]), fq(x, highs[1])], -1)
        weight = ops.multiply(ops.convert(ops.constant(np.ones((8, 16, 1, 1), np.int8)), "f32"), ops.constant(np.float32(0.1)))
        conv = ops.convolution(ops.transpose(cat, ops.constant(np.array([0, 3, 1, 2]))), weight, [1, 1], [0, 0], [0, 0], [1, 1])
        return ov.Model([conv], [x])

    assert requantize_transposed_concats(graph((2.0, 2.0))) == 1
    assert requantize_transposed_concats(graph((2.0, 3.0))) == 0


@pytest.mark.parametrize("fuse", ["conv", "matmul"])
def test_float_token_mixing_keeps_the_axial_matmuls_float_and_every_other_layer_int8(fuse):
    """``token_mixing="float"`` leaves exactly the two axial MatMuls a block out of NNCF's scope: the plugin runs
    them in float, every convolution and the fuse stay INT8, and the logits still agree with the float module."""
    import numpy as np
    import openvino as ov
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_partial import quantized_layers
    from edgesmlp.quantization.openvino_ptq import axial_matmuls, calibration_graph, quantize_openvino

    deploy, calibration = to_deploy(_small_model(64, randomize=True)), _images(64)
    config = OpenVINOPTQConfig(fuse=fuse, token_mixing="float")
    graph = calibration_graph(deploy, 3, 64, config)
    axial = set(axial_matmuls(graph))
    assert len(axial) == 2 * 4 and all("token_mix" in name for name in axial)
    int8 = quantize_openvino(graph, calibration, config)
    assert not axial & {layer.name for layer in quantized_layers(int8)}
    both = quantize_openvino(graph, calibration, replace(config, token_mixing="int8"))
    assert axial <= {layer.name for layer in quantized_layers(both)}
    assert len(quantized_layers(both)) - len(quantized_layers(int8)) == len(axial)
    matmuls = _executed(int8.clone(), 64, ("MatMul",))
    assert len(matmuls) == 2 * 4 and all(k.lower().endswith("f32") for _, k in matmuls), matmuls
    convs = _executed(int8.clone(), 64, ("Convolution",))
    assert convs and all(k.endswith("_I8") for _, k in convs), convs
    image = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = ov.Core().compile_model(int8, "CPU")({0: image})[0].ravel()
    with torch.no_grad():
        want = deploy(torch.from_numpy(image)).numpy().ravel()
    assert got @ want / np.linalg.norm(got) / np.linalg.norm(want) > 0.99


def test_token_mixing_follows_the_cpu_is_recorded_and_refused_on_the_reference_form(monkeypatch, tmp_path):
    import edgesmlp.timing
    from edgesmlp import api
    from edgesmlp.quantization.openvino_ptq import TokenMixing
    from edgesmlp.targets.base import TargetOptions
    from edgesmlp.targets.openvino import TARGET

    for without_vnni, mixing in ((True, TokenMixing.float), (False, TokenMixing.int8)):
        monkeypatch.setattr(edgesmlp.timing, "x86_without_vnni", lambda v=without_vnni: v)
        assert OpenVINOPTQConfig().token_mixing is mixing and TARGET.config_from(TargetOptions()).token_mixing is mixing
    config = TARGET.config_from(TargetOptions(token_mixing="int8"))
    assert config.to_dict()["token_mixing"] == "int8" and OpenVINOPTQConfig(**config.to_dict()) == config
    with pytest.raises(ConfigError, match="--token-mixing 'half' unknown: use int8, float"):
        OpenVINOPTQConfig(token_mixing="half")
    for flag, value in (("token_mixing", "float"), ("fuse", "conv")):
        with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} chooses how the deploy form"):
            api.quantize(form="reference", output=tmp_path, **{flag: value})


def test_fuse_follows_the_cpu_and_is_recorded(monkeypatch):
    """conv on x86 without VNNI, matmul elsewhere; given (library or --fuse), it wins, and to_dict records it."""
    import edgesmlp.timing
    from edgesmlp.quantization.openvino_ptq import Fuse
    from edgesmlp.targets.base import TargetOptions
    from edgesmlp.targets.openvino import TARGET

    for without_vnni, fuse in ((True, Fuse.conv), (False, Fuse.matmul)):
        monkeypatch.setattr(edgesmlp.timing, "x86_without_vnni", lambda v=without_vnni: v)
        assert OpenVINOPTQConfig().fuse is fuse and TARGET.config_from(TargetOptions()).fuse is fuse
        assert TARGET.config_from(TargetOptions(fuse="conv")).to_dict()["fuse"] == "conv"
    assert OpenVINOPTQConfig(**OpenVINOPTQConfig(fuse="conv").to_dict()) == OpenVINOPTQConfig(fuse="conv")
    with pytest.raises(ConfigError, match="--fuse 'gemm' unknown: use matmul, conv"):
        OpenVINOPTQConfig(fuse="gemm")


def test_channels_last_mixing_skips_blocks_openvino_cannot_compile():
    """A block whose mixing biases are zero keeps NCHW mixing (OpenVINO 2026.4 fails to compile it channels-last in
    INT8), and the INT8 graph compiles."""
    import torch

    from edgesmlp.deploy import channels_last_mixing, to_deploy
    from edgesmlp.quantization.openvino_ptq import calibration_graph, quantize_openvino
    from edgesmlp.runtimes.openvino import compile_error

    deploy = to_deploy(_small_model(32))
    with torch.no_grad():
        deploy.token_mix[0].mix.bias_w.zero_()
        deploy.token_mix[0].mix.bias_h.zero_()
    assert [tm.channels_last for tm in channels_last_mixing(deploy).token_mix] == [False, True, True, True]
    assert compile_error(quantize_openvino(calibration_graph(deploy, 3, 32), _images(32), OpenVINOPTQConfig())) is None


@pytest.mark.parametrize("branches", ["parallel", "sequential"])
@pytest.mark.parametrize("identity", [True, False])
@pytest.mark.parametrize("dwconv", [True, False])
def test_channels_last_int8_compiles_for_every_fc_design(branches, identity, dwconv):
    """Every fc-fused design the paper ablates quantizes channels-last, compiles, and keeps the float logits."""
    import numpy as np
    import openvino as ov
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_ptq import calibration_graph, quantize_openvino

    model = _small_model(32, randomize=True, dim=16, fusion="fc", dwconv=dwconv, branches=branches, identity=identity)
    calibration = _images(32)
    int8 = quantize_openvino(calibration_graph(to_deploy(model), 3, 32), calibration, OpenVINOPTQConfig())
    int8.reshape([1, 3, 32, 32])
    got = ov.Core().compile_model(int8, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(calibration[:1])[0].ravel()
    expected = model(torch.from_numpy(calibration[:1])).detach().numpy().ravel()
    assert got @ expected / np.linalg.norm(got) / np.linalg.norm(expected) > 0.99


def test_quantize_for_cpu_falls_back_to_nchw_when_openvino_cannot_compile(monkeypatch):
    """Should OpenVINO fail to compile the channels-last INT8 graph, the NCHW deploy form is calibrated instead, and
    the log says so. OpenVINO 2026.4 compiles every channels-last graph edgesmlp makes (the blocks it cannot are kept
    NCHW: test_channels_last_mixing_skips_blocks_openvino_cannot_compile), so here a stand-in for compile_error
    reports that failure once."""
    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_ptq import quantize_for_cpu
    from edgesmlp.runtimes import openvino as runtime

    real = runtime.compile_error
    monkeypatch.setattr(runtime, "compile_error", compile_error_failing_once(real))
    deploy, calibration = to_deploy(_small_model(32)), _images(32)
    lines = []
    graph, int8 = quantize_for_cpu(deploy, calibration, OpenVINOPTQConfig(), 3, 32, lines.append)
    fallback = [line for line in lines if "NCHW deploy form" in line]
    assert len(fallback) == 1 and "scale.size()" in fallback[0], lines
    assert "Transpose" not in {op.get_type_name() for op in graph.get_ops()} and real(int8) is None
    monkeypatch.undo()
    lines.clear()  # quantize_sums quantizes the mixing outputs too: still channels-last, and it compiles
    graph, int8 = quantize_for_cpu(deploy, calibration, OpenVINOPTQConfig(quantize_sums=True), 3, 32, lines.append)
    assert not any("NCHW" in line for line in lines) and "Transpose" in {op.get_type_name() for op in graph.get_ops()}
    assert real(int8) is None


def test_weight_bits_follow_the_cpu_and_halve_the_weight_range(monkeypatch):
    """7 bits on x86 without VNNI (NNCF's overflow fix on every layer: weights in half the INT8 range, which its
    u8 x s8 kernels cannot saturate), 8 elsewhere (NNCF's default: the fix on the first layer only); given, it wins."""
    import numpy as np

    import edgesmlp.timing
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import to_openvino
    from edgesmlp.quantization.openvino_ptq import quantize_openvino
    from edgesmlp.targets.base import TargetOptions
    from edgesmlp.targets.openvino import TARGET

    for without_vnni, bits in ((True, 7), (False, 8)):
        monkeypatch.setattr(edgesmlp.timing, "x86_without_vnni", lambda v=without_vnni: v)
        assert OpenVINOPTQConfig().weight_bits == bits and TARGET.config_from(TargetOptions()).weight_bits == bits
    assert TARGET.config_from(TargetOptions(weight_bits=7)).weight_bits == 7
    with pytest.raises(ConfigError, match="--weight-bits must be 7 or 8"):
        OpenVINOPTQConfig(weight_bits=6)
    fp32 = to_openvino(to_deploy(_small_model(32, randomize=True, dim=16)), 3, 32)
    halved = {}
    for bits in (7, 8):
        int8 = quantize_openvino(fp32, _images(32), OpenVINOPTQConfig(weight_bits=bits))
        weights = [op.get_data() for op in int8.get_ops() if op.get_type_name() == "Constant"
                   and op.get_element_type().get_type_name() == "i8" and op.get_data().size > 1]
        halved[bits] = np.mean([np.abs(w.astype(int)).max() <= 64 for w in weights])
    assert halved[7] > 0.8 and halved[8] < 0.2, halved


def test_the_manifest_replays_the_build(default_run, tmp_path, monkeypatch):
    """manifest.json is a job file: the same PTQ on the same images gives byte-identical INT8 artifacts. The run
    keeps OpenVINO's compiled models in the user's cache and records where its time went."""
    from edgesmlp.artifacts import sha256_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    manifest = default_run.directory / "manifest.json"
    assert json.loads(manifest.read_text())["job"]["target"] == "openvino"
    result = runner.invoke(app, ["quantize", "--config", str(manifest), "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    # the terminal: the table, a legend only for marks it uses, then what was written, the verdict and what next
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["target", "prec"] and not any(line.startswith("note:") for line in lines)
    assert any(line.startswith("PASS: openvino/int8 drop") for line in lines), result.stdout
    after = lines[next(i for i, line in enumerate(lines) if line.startswith("wrote")):]
    assert after[-1].startswith("      ") or after[-1].startswith("next: ")  # the next command ends it
    assert sum(line.startswith(("wrote", "PASS: ", "next: ")) for line in after) == 3, result.stdout
    for name in ("model.xml", "model.bin"):
        assert sha256_file(tmp_path / "again" / "openvino" / name) == sha256_file(default_run.directory / name)
    assert list((tmp_path / "cache" / "edgesmlp" / "openvino").glob("*.blob"))
    seconds = json.loads((tmp_path / "again" / "openvino" / "report.json").read_text())["seconds"]
    assert {"load", "build", "compile", "evaluate", "timing", "total"} <= set(seconds)
    assert set(seconds["evaluate_by_row"]) == {"images", "fp32", "int8"}
    assert sum(v for k, v in seconds.items() if k not in ("total", "evaluate_by_row")) <= seconds["total"]
