"""The device side: a fresh venv with only the plain `pip install edgesmlp` (plus the stand-ins for JetPack's
TensorRT and CUDA runtime) benches a Jetson bundle, gates it and lints it, and never has torch at all."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesmlp.cli import app

ROOT = Path(__file__).parent.parent
TRT_PACKAGE = """import sys
from ._standin import make_tensorrt
sys.modules[__name__] = make_tensorrt("10.3.0")
"""


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # onnxruntime is the TensorRT stand-in's own dependency (its "engine" runs the ONNX on the CPU), not ours.
    result = subprocess.run([*pip, str(ROOT), "onnxruntime"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_device_flow_on_the_lean_install(lean_venv, cudart_standin, tmp_path):
    runner = CliRunner()  # the bundle and the images come from the workstation side, as in real use
    assert runner.invoke(app, ["quantize", "--target", "jetson", "-o", str(tmp_path / "q"),
                               "--calib-size", "50", "--latency-seconds", "0"]).exit_code == 0
    assert runner.invoke(app, ["data", "digits", str(tmp_path / "digits")]).exit_code == 0
    standin = tmp_path / "standin" / "tensorrt"
    standin.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "tensorrt_standin.py", standin / "_standin.py")
    (standin / "__init__.py").write_text(TRT_PACKAGE)
    env = {**os.environ, "PYTHONPATH": str(standin.parent), "EDGESMLP_CUDART": str(cudart_standin)}
    python, edgesmlp = str(lean_venv / "bin" / "python"), str(lean_venv / "bin" / "edgesmlp")

    def run(*args):
        return subprocess.run([edgesmlp, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)

    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('torch', 'openvino', "
                             "'nncf', 'sklearn', 'matplotlib') if u.find_spec(m)])"], capture_output=True, text=True)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr
    bundle = tmp_path / "q" / "jetson"
    bench = run("bench", "--target", "jetson", "--from", bundle, "--val", tmp_path / "digits" / "val",
                "-o", tmp_path / "b", "--latency-seconds", "0", "--latency-iters", "3")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    rows = {f"{r['target']}/{r['precision']}": r for r in json.loads((tmp_path / "b" / "report.json").read_text())["results"]}
    assert rows["jetson/int8"]["runtime"] == "TensorRT GPU" and rows["jetson/int8"]["agreement"] >= 99.0
    assert set(rows) == {"jetson/int8", "jetson/fp16"}
    assert "matplotlib" in (tmp_path / "b" / "report.html").read_text()  # plots skipped, said so
    check = run("check", tmp_path / "b" / "report.json")
    assert check.returncode == 0 and "check passed" in check.stdout, check.stdout + check.stderr
    lint = run("lint-qdq", bundle / "model_int8_qdq.onnx")
    assert lint.returncode == 0 and "0 errors" in lint.stdout, lint.stdout + lint.stderr
    missing = run("quantize", "-o", tmp_path / "nope")
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "edgesmlp[workstation]" in lines[0], missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "nope").exists()
