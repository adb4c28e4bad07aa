import json
import re

import pytest
from typer.testing import CliRunner

from edgesmlp import targets
from edgesmlp.jobs.bench import run_bench
from edgesmlp.jobs.spec import BenchRequest, Calibration
from edgesmlp.targets.base import RunSettings
from edgesmlp.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bench"
    result = runner.invoke(app, ["bench", "-o", str(out), "--latency-seconds", "0", "--latency-iters", "5", "--calib-size", "100"])
    assert result.exit_code == 0, result.output
    return out, result


def rows(report):
    return {f"{r['target']}/{r['precision']}": r for r in report["results"]}


def test_bench_prints_one_table_for_every_target(bench_dir):
    out, result = bench_dir
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "edgesmlp.report/1" and report["kind"] == "bench"
    r = rows(report)
    assert {"torch/fp32", "onnxruntime/fp32", "onnxruntime/int8", "openvino/fp32", "openvino/int8"} <= set(r)
    assert r["jetson/-"]["status"] == "skipped" and "device" in r["jetson/-"]["note"]
    for key in ("onnxruntime/int8", "openvino/int8"):
        assert r[key]["status"] == "ok" and r[key]["drop_top1"] <= 0.5 and r[key]["agreement"] >= 99.0
        assert r[key]["quantize_seconds"] > 0 and len(r[key]["latency_samples_ms"]) == 5
    assert r["torch/fp32"]["agreement"] == 100.0
    assert re.search(r"^openvino +int8 +\d", result.stdout, re.M)  # the compact table, one line per row
    assert "jetson: skipped" in result.stdout
    assert set(report["machine"]) >= {"cpu", "cores", "threads"} and "openvino" in report["versions"]
    assert isinstance(report["machine"]["threads"], int) and report["machine"]["threads"] >= 1
    assert report["data"]["val_images"] == 500 and report["data"]["val_skipped"] == 0 and report["data"]["labelled"]


def test_reports_are_written(bench_dir):
    out, _ = bench_dir
    assert "| torch | fp32 |" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count("<figure") == 3 and "<table>" in page and "skipped" in page


def test_the_bench_page_in_chromium(bench_dir, tmp_path):
    from tests import browser

    out, _ = bench_dir
    seen = browser.look((out / "report.html").read_text(), tmp_path)
    assert seen["verdict"]["text"].startswith("PASS") and "onnxruntime/int8" in seen["verdict"]["text"]
    assert seen["verdict"]["box"][3] <= seen["table"]["box"][1]
    browser.assert_readable(seen)
    assert "jetson" in seen["text"] and "skipped" in seen["text"]


def test_check_passes_on_the_bench_report(bench_dir):
    out, _ = bench_dir
    result = runner.invoke(app, ["check", str(out / "report.json")])
    assert result.exit_code == 0, result.output
    assert "check passed" in result.stdout


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """`edgesmlp quantize` on the bundled model (the OpenVINO target), for the benches that read it back."""
    out = tmp_path_factory.mktemp("quantized") / "q"
    result = runner.invoke(app, ["quantize", "-o", str(out), "--calib-size", "50", "--latency-seconds", "0"])
    assert result.exit_code == 0, result.output
    return out


def test_bench_from_an_existing_quantize_output(quantized, tmp_path):
    outcome = run_bench(BenchRequest(from_dir=quantized, targets=("torch", "openvino", "onnxruntime"),
                                     output=tmp_path / "b", run=RunSettings(latency_seconds=0, latency_iters=3)), log=lambda _: None)
    r = rows(outcome.report)
    assert r["openvino/int8"]["status"] == "ok" and r["openvino/int8"]["agreement"] >= 99.0
    assert r["onnxruntime/-"]["status"] == "skipped"  # no Jetson bundle in that output
    assert outcome.report["data"]["from"] == str(quantized)


def test_a_target_that_crashes_mid_run(tmp_path, monkeypatch):
    monkeypatch.setitem(targets.REGISTRY, "crashy", "tests.crashing_target")
    outcome = run_bench(BenchRequest(targets=("torch", "crashy", "onnxruntime"), output=tmp_path / "b",
                                     run=RunSettings(latency_seconds=0, latency_iters=3), calibration=Calibration(size=30)),
                        log=lambda _: None)
    r = rows(outcome.report)
    assert r["crashy/int8"]["status"] == "failed" and "device lost" in r["crashy/int8"]["note"]
    assert r["onnxruntime/int8"]["status"] == "ok" and r["torch/fp32"]["status"] == "ok"
    assert outcome.failed
    check = runner.invoke(app, ["check", str(tmp_path / "b")])
    assert check.exit_code == 1 and "crashy/int8 failed: RuntimeError: device lost" in check.stdout


def test_cli_exit_code_reflects_a_failed_target(tmp_path, monkeypatch):
    monkeypatch.setitem(targets.REGISTRY, "crashy", "tests.crashing_target")
    result = runner.invoke(app, ["bench", "-t", "torch", "-t", "crashy", "-o", str(tmp_path / "b"),
                                 "--latency-seconds", "0", "--latency-iters", "3"])
    assert result.exit_code == 3, result.output
    assert "crashy: failed" in result.stdout


def test_unknown_target_and_existing_output(tmp_path):
    result = runner.invoke(app, ["bench", "-t", "tpu", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "unknown target 'tpu'" in result.stderr
    (tmp_path / "b").mkdir()
    result = runner.invoke(app, ["bench", "-t", "torch", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--force" in result.stderr


@pytest.mark.parametrize("flag,value", [("--weight-bits", "8"), ("--fuse", "conv")])
def test_quantize_choices_with_from_are_refused(tmp_path, flag, value):
    """--from benches a model quantized already: a weight width or fuse given there would not be the one that runs."""
    result = runner.invoke(app, ["bench", "--from", str(tmp_path), flag, value, "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and f"{flag} cannot go with --from" in result.stderr
    assert not (tmp_path / "b").exists()


def test_jetson_bench_here_says_what_is_missing(tmp_path):
    result = runner.invoke(app, ["bench", "--target", "jetson", "-o", str(tmp_path / "b"), "--latency-seconds", "0", "--latency-iters", "3"])
    assert result.exit_code == 0, result.output
    assert "jetson: skipped - TensorRT is not installed here" in result.stdout


def test_a_jetson_bundle_here_is_benched_as_jetson_emulated(tmp_path):
    """Without TensorRT, `bench --from BUNDLE` runs the bundle's graphs on ONNX Runtime under the jetson target,
    labelled emulated, and the gate judges them as jetson's: no onnxruntime row stands in for the bundle."""
    quantized = runner.invoke(app, ["quantize", "--target", "jetson", "-o", str(tmp_path / "q"), "--calib-size", "50",
                                     "--latency-seconds", "0"])
    assert quantized.exit_code == 0, quantized.output
    result = runner.invoke(app, ["bench", "--from", str(tmp_path / "q"), "-t", "jetson,onnxruntime", "--json",
                                 "-o", str(tmp_path / "b"), "--latency-seconds", "0", "--latency-iters", "3"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    r = rows(verdict)
    assert r["jetson/int8"]["runtime"] == "emulated (ONNX Runtime CPU)" and r["jetson/int8"]["agreement"] >= 99.0
    assert {"jetson/fp32", "jetson/fp16", "jetson/int8-fp16"} <= set(r) and r["onnxruntime/-"]["status"] == "skipped"
    assert verdict["verdict"] == "PASS"


def test_bench_a_jetson_bundle_on_the_device(tmp_path, device_standins):
    """What `edgesmlp bench --target jetson --from BUNDLE` does on a Jetson, with the recording TensorRT
    stand-in and the CUDA runtime stand-in in place of the device: engines built from the bundle, saved, reported."""
    quantized = runner.invoke(app, ["quantize", "--target", "jetson", "-o", str(tmp_path / "q"), "--calib-size", "50",
                                     "--latency-seconds", "0"])
    assert quantized.exit_code == 0, quantized.output
    bundle = tmp_path / "q" / "jetson"
    result = runner.invoke(app, ["bench", "--target", "jetson", "-t", "onnxruntime", "--from", str(bundle),
                                 "-o", str(tmp_path / "b"), "--latency-seconds", "0", "--latency-iters", "3"])
    assert result.exit_code == 0, result.output
    r = rows(json.loads((tmp_path / "b" / "report.json").read_text()))
    assert r["jetson/int8"]["runtime"] == "TensorRT GPU" and r["jetson/int8"]["agreement"] >= 99.0
    assert r["jetson/fp16"]["status"] == "ok"
    assert r["onnxruntime/-"]["status"] == "skipped"  # a Jetson bundle is the jetson target's, never onnxruntime's
    assert (bundle / "model_int8.engine").is_file() and (bundle / "model_fp16.engine").is_file()


@pytest.mark.slow
def test_two_back_to_back_benches_pass_the_latency_gate(quantized, tmp_path):
    """The same artifacts on the same machine twice, timed with the default settings: the default gate
    (speedups within the run) must pass."""
    for name in ("first", "second"):
        result = runner.invoke(app, ["bench", "-t", "openvino", "--from", str(quantized), "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    check = runner.invoke(app, ["check", str(tmp_path / "second"), "--baseline", str(tmp_path / "first")])
    assert check.exit_code == 0, check.output
    assert "openvino/int8 speedup" in check.stdout


def test_bench_profile_says_where_time_goes_and_what_ran_int8(tmp_path):
    """OpenVINO's performance counters and ONNX Runtime's profiler, read back: the INT8 IR's weighted layers
    execute INT8 kernels and the f32 row's none; the report's tables and the terminal say so. The run also takes
    the weight width and the OpenVINO fuse this CPU would not choose (--weight-bits, --fuse), and the report records
    the configs it built."""
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig
    from edgesmlp.timing import weight_bits_for_this_cpu, x86_without_vnni

    bits = 15 - weight_bits_for_this_cpu()  # 8 where this CPU's default is 7, and 7 where it is 8
    fuse = {"conv": "matmul", "matmul": "conv"}[OpenVINOPTQConfig().fuse.value]
    result = runner.invoke(app, ["bench", "-t", "openvino,onnxruntime", "--profile", "--verbose", "-o", str(tmp_path / "b"),
                                 "--latency-seconds", "0", "--latency-iters", "3", "--calib-size", "50",
                                 "--weight-bits", str(bits), "--fuse", fuse,
                                 "--max-drop", "100"])  # 8 bits lose accuracy here
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: this CPU has no VNNI") == (bits == 8 and x86_without_vnni())  # said once
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["configs"]["openvino"]["weight_bits"] == bits == report["configs"]["onnxruntime"]["weight_bits"]
    assert report["configs"]["openvino"]["fuse"] == fuse
    # ONNX Runtime reads the width back off the INT8 file it built, and warns where this CPU saturates on 8 bits.
    assert f"{bits}-bit weights" in rows(report)["onnxruntime/int8"]["note"]
    assert any("saturate" in n for n in report["notes"]) == (bits == 8 and x86_without_vnni())
    profiles = {f"{p['target']}/{p['precision']}": p for p in report["profiles"]}
    assert set(profiles) == {f"{r['target']}/{r['precision']}" for r in report["results"] if r["status"] == "ok"}
    weighted = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "FullyConnectedQuantizedLegacy")
    ran = lambda key: {layer["precision"] for layer in profiles[key]["layers"] if layer["op"] in weighted}  # noqa: E731
    assert ran("openvino/fp32") == {"fp32"} and "int8" in ran("openvino/int8")
    from edgesmlp.runtimes.openvino import resolved_default_precision

    default = resolved_default_precision()  # its own row where the CPU's default is not f32 (bf16 here or there)
    assert (f"openvino/{default}" in profiles) == (default != "f32")
    assert default == "f32" or "int8" not in ran(f"openvino/{default}")
    int8 = profiles["openvino/int8"]
    assert abs(sum(r["share"] for r in int8["by_type"]) - 1) < 1e-6 and int8["total_ms"] > 0
    assert any(layer["op"] in ("QLinearConv", "ConvInteger", "DequantizeLinear")
               for layer in profiles["onnxruntime/int8"]["layers"])
    assert "## Where the time goes" in (tmp_path / "b" / "report.md").read_text()
    assert "Where the time goes" in (tmp_path / "b" / "report.html").read_text()
    assert "openvino/int8: " in result.stdout and "weighted layers ran" in result.stdout
