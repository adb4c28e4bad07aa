"""The Python API: the same jobs as the command line, typed results, the same errors, nothing printed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgesmlp
from edgesmlp.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_the_functions_survive_the_subpackages():
    code = ("import sys, edgesmlp; import edgesmlp.quantization.budget; "
            "assert callable(edgesmlp.quantize) and callable(edgesmlp.check), edgesmlp.quantize; "
            "assert 'torch' not in sys.modules and 'openvino' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_example_runs(tmp_path):
    """examples/python_api.py: quantize for both targets, bench, check, a refused option; exit 0 on PASS."""
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(tmp_path / "ex")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("jetson: PASS") for line in lines), result.stdout
    assert any(line.startswith("openvino: PASS") for line in lines), result.stdout
    assert any(line.startswith("gate: PASS") for line in lines), result.stdout
    assert "refused: --fuse is an option of openvino, not of jetson" in result.stdout
    report = edgesmlp.Report.read(tmp_path / "ex-bench")
    assert {(r.target, r.precision) for r in report.rows} >= {("openvino", "int8"), ("torch", "fp32")}
    assert edgesmlp.check(report, max_drop=100.0).ok
    strict = edgesmlp.check(report, min_agreement=100.0)  # every image the same as FP32: INT8 changed some
    assert not strict.ok and any("int8" in v for v in strict.violations)


@pytest.mark.parametrize("call, option", [
    (lambda: edgesmlp.quantize(target="jetson", fuse="conv"), ("quantize", "-t", "jetson", "--fuse", "conv")),
    (lambda: edgesmlp.quantize(max_drop=-1.0), ("quantize", "--max-drop", "-1")),
    (lambda: edgesmlp.quantize(calib="/nonexistent/images"), ("quantize", "--calib", "/nonexistent/images")),
])
def test_a_bad_argument_raises_what_the_command_line_prints(call, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(edgesmlp.InputError) as raised:
        call()
    result = CliRunner().invoke(app, list(option))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {raised.value}"


def test_images_in_memory_are_checked_before_work(tmp_path):
    with pytest.raises(edgesmlp.InputError, match=r"float \(N, C, H, W\)"):
        edgesmlp.quantize(calib=np.zeros((4, 32, 32), np.uint8), output=tmp_path / "a")
    with pytest.raises(edgesmlp.InputError, match="takes \\(3, 32, 32\\)"):
        edgesmlp.quantize(calib=np.zeros((4, 3, 16, 16), np.float32), output=tmp_path / "b")
    with pytest.raises(edgesmlp.InputError, match="item 0 is a int"):
        edgesmlp.quantize(val=[3], output=tmp_path / "c")
    with pytest.raises(edgesmlp.InputError, match="'colour' is not an option"):
        edgesmlp.quantize(colour="red")
    assert not any(tmp_path.iterdir())


def test_a_module_stands_in_for_weights():
    ckpt = edgesmlp.load()
    from edgesmlp.checkpoint import load_checkpoint

    again = load_checkpoint(ckpt.model)
    assert again.config == ckpt.config and again.model is not ckpt.model
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    import torch

    with torch.no_grad():
        assert torch.equal(again.model(torch.from_numpy(x)), ckpt.model(torch.from_numpy(x)))
    assert load_checkpoint(ckpt) is ckpt
