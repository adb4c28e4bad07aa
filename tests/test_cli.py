import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgesmlp.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code, pattern):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0], lines[0]


def test_help_teaches():
    result = run("--help")
    assert result.exit_code == 0
    assert "inspect" in result.output and "export" in result.output
    assert "bundled" in result.output


def test_inspect_bundled_default():
    result = run("inspect")
    assert result.exit_code == 0, result.output
    assert "bundled digits model" in result.output
    assert "dim 32, depths [1, 1, 2, 1]" in result.output
    assert "foldable" in result.output


def test_inspect_json(training_checkpoint):
    path, _, _ = training_checkpoint
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["weights_taken"] == "model" and info["epoch"] == 7
    assert info["config"]["depths"] == [1, 1, 2, 1] and info["num_classes"] == 5
    assert info["macs"] > 0 and info["params"] > 0
    layers = {s["layer"] for s in info["foldable"]}
    assert "token_mix.0.1.BN" in layers and "batch_norm" in layers and "channel_mix.0.1" in layers
    assert {s["layer"] for s in info["not_foldable"]} == {f"token_mix.{k}.0.conv_merge.BN" for k in range(5)}
    assert info["metadata"]["args"]["drop_path"] == 0.1


def test_inspect_ema(training_checkpoint):
    path, _, _ = training_checkpoint
    info = json.loads(run("inspect", path, "--ema", "--json").stdout)
    assert info["weights_taken"] == "model_ema"


def test_export_default_model(tmp_path):
    out = tmp_path / "digits.onnx"
    result = run("export", "-o", out)
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]


def test_export_dynamic_batch(training_checkpoint, tmp_path):
    import numpy as np
    import onnxruntime as ort

    path, model, _ = training_checkpoint
    out = tmp_path / "dyn.onnx"
    result = run("export", "--weights", path, "-o", out, "--dynamic-batch")
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_export_refuses_to_overwrite(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    assert_one_line_error(run("export", "-o", out), 2, "--force")
    assert out.read_text() == "keep me"


def _write(path, data):
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        torch.save(data, path)
    return path


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda d: d / "missing.pth", "no such file"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "empty.pth", b""), "empty"),
        (lambda d: _write(d / "t.pth", b"not weights"), "not a PyTorch checkpoint"),
        (lambda d: _write(d / "r.pth", {"fc.weight": torch.ones(2, 2)}), "not an sMLPNet"),
    ],
)
def test_bad_weights_one_line_error_and_nothing_written(tmp_path, make, pattern):
    weights = make(tmp_path)
    out = tmp_path / "out.onnx"
    assert_one_line_error(run("export", "--weights", weights, "-o", out), 2, pattern)
    assert not out.exists()
    assert_one_line_error(run("inspect", weights), 2, pattern)


def test_truncated_and_nan_and_payload_via_cli(training_checkpoint, small_model, tmp_path):
    path, _, _ = training_checkpoint
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:3000])
    assert_one_line_error(run("inspect", cut), 2, "truncated")
    state = small_model.state_dict()
    state["mlp_head.0.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    assert_one_line_error(run("inspect", tmp_path / "nan.pth"), 2, "NaN")
    from tests.test_checkpoint import _Payload

    marker = tmp_path / "ran"
    torch.save({"model": state, "x": _Payload(marker)}, tmp_path / "evil.pth")
    assert_one_line_error(run("inspect", tmp_path / "evil.pth"), 2, "refused")
    assert not marker.exists()


def test_bad_image_size(tmp_path):
    out = tmp_path / "m.onnx"
    assert_one_line_error(run("export", "-o", out, "--image-size", 33), 2, "multiple of 32")
    assert_one_line_error(run("export", "-o", out, "--image-size", 64), 2, "trained at 32x32")
    assert not out.exists()


def test_variant_mismatch(tmp_path):
    assert_one_line_error(run("inspect", "--variant", "smlpnet_t"), 2, "is not smlpnet_t")
    assert_one_line_error(run("inspect", "--variant", "smlpnet_q"), 2, "unknown variant")


def test_data_digits_writes_imagefolder_trees(tmp_path):
    out = tmp_path / "digits"
    result = run("data", "digits", out)
    assert result.exit_code == 0, result.output
    assert "val 500 images, calib 300 images, train 997 images" in result.stdout
    assert sorted(p.name for p in (out / "val").iterdir()) == [str(d) for d in range(10)]
    assert len(list((out / "val").rglob("*.png"))) == 500
    assert_one_line_error(run("data", "digits", out), 2, "--force")


def test_version_short_help_choices_and_examples():
    from importlib.metadata import version

    assert run("--version").stdout.strip() == f"edgesmlp {version('edgesmlp')}"
    assert run("-h").exit_code == 0 and "quantize" in run("-h").stdout
    quantize = run("quantize", "-h").stdout
    for choices in ("[performance|mixed]", "[off|fast|full]", "[max|percentile|entropy|mse]", "[ptq|qat]",
                    "[bicubic|bilinear|nearest|lanczos]"):
        assert choices in quantize, choices
    for command in ("quantize", "bench", "check", "lint-qdq", "export", "inspect", "sensitivity"):
        assert "Examples:" in run(command, "-h").stdout, command
    assert "[speedup|absolute|off]" in run("check", "-h").stdout
