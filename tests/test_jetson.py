"""`quantize --target jetson` on this CPU-only machine: the bundle, its checks, and build_engine.sh."""

import re
import json
import os
import subprocess

import pytest
from typer.testing import CliRunner

from edgesmlp.cli import app
from edgesmlp.jobs.quantize import run_quantize
from edgesmlp.jobs.spec import QuantizeRequest
from edgesmlp.targets.base import RunSettings
from edgesmlp.quantization.qdq_lint import lint_qdq

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("j")
    return run_quantize(QuantizeRequest(target="jetson", output=out, run=RunSettings(latency_seconds=0, latency_iters=10)), log=lambda _: None)


def test_bundle_contents(bundle):
    folder = bundle.directory
    assert folder.name == "jetson"
    for name in ("model_int8_qdq.onnx", "model_fp32.onnx", "model_int8_qdq_fp16.onnx", "model_fp16.onnx",
                 "build_engine.sh", "manifest.json", "report.json", "report.md", "README.md"):
        assert (folder / name).is_file(), name
    assert os.access(folder / "build_engine.sh", os.X_OK)
    assert "edgesmlp bench --target jetson" in (folder / "README.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qdq"]["method"] == "percentile" and manifest["lint"]["errors"] == 0
    assert manifest["qdq_summary"]["concat_groups"] == 5
    assert manifest["artifacts"]["int8_qdq_fp16_onnx"] == "model_int8_qdq_fp16.onnx"
    assert manifest["artifacts"]["fp16_onnx"] == "model_fp16.onnx"
    # The bundled model's tensors stay far below 512: nothing needs FP32, as in ModelOpt's graph of it.
    assert manifest["fp16_typing"]["int8"]["fp32_nodes"] == {} == manifest["fp16_typing"]["fp16"]["fp32_nodes"]
    readme = (folder / "README.md").read_text()
    assert "`model_int8_qdq_fp16.onnx` with `--stronglyTyped`" in readme and "`model_fp16.onnx` with `--stronglyTyped`" in readme


def test_lint_passes_on_the_bundle(bundle):
    assert lint_qdq(bundle.directory / "model_int8_qdq.onnx") == []
    assert lint_qdq(bundle.directory / "model_int8_qdq_fp16.onnx") == []
    result = runner.invoke(app, ["lint-qdq", str(bundle.directory / "model_int8_qdq.onnx")])
    assert result.exit_code == 0 and "0 errors, 0 warnings" in result.stdout
    assert re.search(r"float tensors: \d+ FLOAT \(", result.stdout)
    typed = runner.invoke(app, ["lint-qdq", str(bundle.directory / "model_int8_qdq_fp16.onnx")])
    assert typed.exit_code == 0 and "0 errors, 0 warnings" in typed.stdout
    assert re.search(r"float tensors: 2 FLOAT, \d+ FLOAT16 ", typed.stdout)  # the input and output alone stay FLOAT


def test_emulated_int8_accuracy_is_labelled_and_close(bundle):
    rows = {r["precision"]: r for r in bundle.report["results"]}
    assert rows["int8"]["runtime"] == "emulated (ONNX Runtime CPU)"
    assert rows["fp32"]["runtime"] == "ONNX Runtime CPU"
    assert rows["int8"]["top1"] >= rows["fp32"]["top1"] - 0.5
    assert rows["int8"]["agreement"] >= 99.0
    # The FP16-typed graphs strongly typed TensorRT builds, run by ONNX Runtime: gated like the FP32-typed INT8.
    assert rows["fp16"]["runtime"] == rows["int8-fp16"]["runtime"] == "emulated (ONNX Runtime CPU)"
    assert rows["fp16"]["agreement"] == 100.0 and rows["int8-fp16"]["agreement"] >= 99.0
    assert abs(rows["int8-fp16"]["top1"] - rows["int8"]["top1"]) <= 0.5 and not rows["int8-fp16"].get("compare_only")
    assert any("edgesmlp bench --target jetson" in n and "device" in n for n in bundle.report["notes"])
    assert "emulated" in (bundle.directory / "report.md").read_text()


def stand_in_trtexec(folder, code):
    """A stand-in trtexec: prints a TensorRT version banner and records its arguments."""
    script = folder / "trtexec"
    script.write_text(f"""#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec --help"; exit 0; fi
echo "$@" >> "{folder}/calls.txt"
for a in "$@"; do case "$a" in --saveEngine=*) touch "${{a#--saveEngine=}}";; esac; done
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("code, expected", [
    ("100300", [["--int8", "--fp16", "model_int8_qdq.onnx"], ["--fp16", "model_fp32.onnx", "model_fp16.engine"]]),
    ("101100", [["--int8", "--fp16", "model_int8_qdq.onnx"], ["--fp16", "model_fp32.onnx", "model_fp16.engine"]]),
    ("101200", [["--stronglyTyped", "model_int8_qdq_fp16.onnx", "model_int8.engine"],
                ["--stronglyTyped", "model_fp16.onnx", "model_fp16.engine"]]),
    ("110000", [["--stronglyTyped", "model_int8_qdq_fp16.onnx", "model_int8.engine"],
                ["--stronglyTyped", "model_fp16.onnx", "model_fp16.engine"]]),
])
def test_build_script_picks_flags_for_the_tensorrt_version(bundle, tmp_path, code, expected):
    work = tmp_path / "bundle"
    work.mkdir()
    for name in ("build_engine.sh", "model_int8_qdq.onnx", "model_fp32.onnx", "model_int8_qdq_fp16.onnx",
                 "model_fp16.onnx"):
        (work / name).write_bytes((bundle.directory / name).read_bytes())
    (work / "build_engine.sh").chmod(0o755)
    trtexec = stand_in_trtexec(tmp_path, code)
    result = subprocess.run([str(work / "build_engine.sh"), str(trtexec)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 2
    for call, words in zip(calls, expected):
        assert all(w in call for w in words), call
        assert "--minShapes=input:1x3x32x32" in call and "--maxShapes=input:32x3x32x32" in call
        assert "--timingCacheFile=timing.cache" in call
    if code >= "101200":
        assert "--int8" not in calls[0] and "--fp16" not in " ".join(calls)


def test_build_script_dla_and_missing_trtexec(bundle, tmp_path):
    trtexec = stand_in_trtexec(tmp_path, "100300")
    script = bundle.directory / "build_engine.sh"
    work = tmp_path / "b"
    work.mkdir()
    (work / "build_engine.sh").write_bytes(script.read_bytes())
    (work / "build_engine.sh").chmod(0o755)
    result = subprocess.run([str(work / "build_engine.sh"), str(trtexec), "--dla", "0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--useDLACore=0 --allowGPUFallback" in (tmp_path / "calls.txt").read_text()
    missing = subprocess.run([str(work / "build_engine.sh"), str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and "trtexec not found" in missing.stderr


def test_cli_jetson_with_max_calibration(tmp_path):
    result = runner.invoke(app, ["quantize", "--target", "jetson", "-o", str(tmp_path), "--calib-method", "max",
                                 "--calib-size", "64", "--latency-seconds", "0"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^jetson +int8 +\d", result.stdout, re.M) and "PASS: jetson/int8 drop" in result.stdout
    assert "next: copy" in result.stdout and "emulated" not in result.stdout  # the explanations wait for --verbose
    assert "| jetson | int8 | emulated (ONNX Runtime CPU) | ok |" in (tmp_path / "jetson" / "report.md").read_text()
    manifest = json.loads((tmp_path / "jetson" / "manifest.json").read_text())
    assert manifest["qdq"]["method"] == "max"


def test_bad_calibration_method(tmp_path):
    result = runner.invoke(app, ["quantize", "--target", "jetson", "-o", str(tmp_path), "--calib-method", "kl"])
    assert result.exit_code == 2 and "--calib-method" in result.stderr
    assert not (tmp_path / "jetson").exists()
