import json

import pytest
from typer.testing import CliRunner

from edgesmlp.cli import app
from edgesmlp.errors import InputError
from edgesmlp.jobs.check import check_report, load_report

runner = CliRunner()


def row(target, precision, top1=99.0, p50=1.0, status="ok", **extra):
    return {"target": target, "precision": precision, "status": status, "top1": top1, "p50": p50,
            "latency_ms_p50": p50, "agreement": 100.0, "note": "", **extra}


def report(*rows):
    results = list(rows)
    for r in results:  # as quantize/bench fill it: the drop against the same target's FP32
        fp32 = next((f for f in results if f["target"] == r["target"] and f["precision"] == "fp32"), None)
        r.setdefault("drop_top1", fp32["top1"] - r["top1"] if fp32 and r["top1"] is not None else None)
    return {"schema": "edgesmlp.report/1", "results": results}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_within_budget_passes():
    assert check_report(report(row("openvino", "fp32"), row("openvino", "int8", 98.7))).passed


def test_drop_over_budget_fails_with_the_numbers():
    out = check_report(report(row("openvino", "fp32", 99.0), row("openvino", "int8", 98.0)), max_drop=0.5)
    assert not out.passed and "openvino/int8 top-1 98.00% is 1.00 points below its FP32 (allowed 0.5)" in out.violations


def test_failed_row_fails_the_gate():
    out = check_report(report(row("tensorrt", "int8", None, status="failed", note="engine build failed")))
    assert out.violations == ["tensorrt/int8 failed: engine build failed"]


def test_unlabelled_report_is_noted_not_failed():
    out = check_report(report(row("jetson", "fp32", None), row("jetson", "int8", None, agreement=99.2)))
    assert out.passed and any("no labels" in n for n in out.notes)


def test_baseline_with_different_targets_compares_the_common_ones():
    base = report(row("openvino", "fp32"), row("openvino", "int8", 98.9, 1.0), row("tensorrt", "int8"))
    now = report(row("openvino", "fp32"), row("openvino", "int8", 98.9, 1.1), row("onnxruntime", "int8"))
    out = check_report(now, base, max_latency_regression=0.15)
    assert out.passed
    assert "onnxruntime/int8: not in the baseline, not compared" in out.notes
    assert "tensorrt/int8: in the baseline only, not compared" in out.notes


def test_baseline_regressions():
    base = report(row("openvino", "fp32", 99.0), row("openvino", "int8", 99.0, 1.0))
    now = report(row("openvino", "fp32", 99.0), row("openvino", "int8", 98.6, 1.3))
    out = check_report(now, base, max_drop=0.3, max_latency_regression=0.15, latency="absolute")
    assert any("below the baseline's 99.00%" in v for v in out.violations)
    assert any("latency p50 1.3 ms is 30% above the baseline's 1 ms (allowed 15%)" in v for v in out.violations)


@pytest.mark.parametrize("content, pattern", [
    ({"schema": "edgesmlp.report/0", "results": []}, "schema 'edgesmlp.report/0'"),
    ({"results": []}, "schema None"),
    ("not json", "not valid JSON"),
])
def test_bad_reports_are_usage_errors(tmp_path, content, pattern):
    path = tmp_path / "r.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InputError, match=pattern):
        load_report(path)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2 and pattern.split("'")[0] in result.stderr


def test_cli_exit_codes(tmp_path):
    good = write(tmp_path, "good.json", report(row("openvino", "fp32"), row("openvino", "int8", 98.9)))
    bad = write(tmp_path, "bad.json", report(row("openvino", "fp32"), row("openvino", "int8", 90.0)))
    assert runner.invoke(app, ["check", str(good)]).exit_code == 0
    result = runner.invoke(app, ["check", str(bad), "--max-drop", "0.5"])
    assert result.exit_code == 1 and "FAIL: openvino/int8" in result.stdout
    assert runner.invoke(app, ["check", str(tmp_path / "missing.json")]).exit_code == 2
    assert runner.invoke(app, ["check", str(good), "--baseline", str(bad)]).exit_code == 0


@pytest.mark.parametrize("target", ["openvino", "jetson"])
def test_gate_fails_on_calibration_with_blank_images(tmp_path, target):
    """A deliberately broken quantization: calibrating on all-black images wrecks the INT8 ranges."""
    from PIL import Image

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(20):
        Image.new("RGB", (32, 32)).save(blank / f"{i}.png")
    result = runner.invoke(app, ["quantize", "--target", target, "--calib", str(blank), "-o", str(tmp_path / "q"),
                                 "--latency-seconds", "0"])
    assert result.exit_code == 1 and f"FAIL: {target}/int8 top-1" in result.stdout, result.output  # its own floor
    check = runner.invoke(app, ["check", str(tmp_path / "q" / target), "--max-drop", "0.5"])
    assert check.exit_code == 1, check.output
    assert f"FAIL: {target}/int8 top-1" in check.stdout


def test_latency_gate_compares_speedups_by_default_and_absolute_beyond_noise():
    def with_speed(r, speedup, p50, iqr):
        return {**r, "speedup": speedup, "latency_ms_p50": p50, "latency_ms_iqr": iqr, "latency_unstable": False}

    base = report(row("openvino", "fp32"), row("openvino", "int8", 98.9))
    now = report(row("openvino", "fp32"), row("openvino", "int8", 98.9))
    base["results"][1] = with_speed(base["results"][1], 2.0, 10.0, 0.5)
    now["results"][1] = with_speed(now["results"][1], 1.9, 30.0, 0.5)  # a 3x slower runner, same speedup
    assert check_report(now, base, max_latency_regression=0.2).passed
    slower = check_report(now, base, max_latency_regression=0.2, latency="absolute")
    assert any("latency p50 30 ms is 200% above" in v for v in slower.violations)
    now["results"][1] = with_speed(now["results"][1], 1.2, 10.0, 0.5)  # INT8 lost its edge
    lost = check_report(now, base, max_latency_regression=0.2)
    assert any("speedup over float 1.20x is 40% below the baseline's 2.00x" in v for v in lost.violations)
    now["results"][1] = with_speed(now["results"][1], 2.0, 10.4, 3.0)  # +4%, inside a 3 ms noise
    assert check_report(now, base, max_latency_regression=0.01, latency="absolute").passed
    now["results"][1] = with_speed(now["results"][1], 1.5, 1.0, 0.2)  # -25% speedup on a row with 20%+5% noise
    assert check_report(now, base, max_latency_regression=0.2).passed
    now["results"][1] = with_speed(now["results"][1], 1.2, 1.0, 0.2)  # -40%: beyond the noise as well
    assert not check_report(now, base, max_latency_regression=0.2).passed


def test_check_json_prints_one_object_with_the_verdict(tmp_path):
    ok = write(tmp_path, "ok.json", report(row("openvino", "fp32"), row("openvino", "int8", 98.7)))
    result = runner.invoke(app, ["check", str(ok), "--json"])
    out = json.loads(result.stdout)  # nothing else on stdout
    assert result.exit_code == 0 and out["verdict"] == "PASS" and out["violations"] == []
    assert [r["precision"] for r in out["results"]] == ["fp32", "int8"]
    bad = write(tmp_path, "bad.json", report(row("openvino", "fp32"), row("openvino", "int8", 97.0)))
    failed = runner.invoke(app, ["check", str(bad), "--json"])
    out = json.loads(failed.stdout)
    assert failed.exit_code == 1 and out["verdict"] == "FAIL" and "2.00 points below its FP32" in out["violations"][0]


def test_one_drop_budget_default_everywhere():
    """quantize, bench, check and sensitivity default to the same --max-drop, which the library shares."""
    import typer.main

    from edgesmlp.jobs.check import check_report as gate
    from edgesmlp.quantization.budget import DEFAULT_MAX_DROP

    command = typer.main.get_command(app)
    defaults = {name: next(p.default for p in command.commands[name].params if p.name == "max_drop")
                for name in ("quantize", "bench", "check", "sensitivity")}
    assert set(defaults.values()) == {DEFAULT_MAX_DROP}
    near = report(row("openvino", "fp32", 99.0), row("openvino", "int8", 99.0 - DEFAULT_MAX_DROP + 0.01))
    assert gate(near).passed


def test_help_groups_options_in_panels_common_first():
    text = runner.invoke(app, ["quantize", "--help"]).stdout
    panels = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert panels[:3] == ["Input", "Accuracy budget", "Preprocessing"] and "QAT" in panels
    budget = text[text.index("Accuracy budget:"):text.index("Preprocessing:")]
    assert "--search" in budget and "--min-agreement" in budget and "--preset" not in budget


def test_target_options_come_from_the_targets_declarations():
    """Each option a target declares (Target.options) is a flag of quantize, in that target's panel when it alone
    takes it, with its declared help; bench and sensitivity take the ones they name."""
    from edgesmlp import targets
    from edgesmlp.targets.base import option_flag

    text = runner.invoke(app, ["quantize", "--help"], terminal_width=200).stdout
    panels = {}
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("--"):
            panels[line.split()[0]] = (current, line)
    for field, pairs in targets.declared_options().items():
        if field == "dla_core":  # an engine-build option: bench --target jetson on the device
            continue
        target, option = pairs[0]
        panel, line = panels[option_flag(field)]
        assert panel == (target.title if len(pairs) == 1 else "Target options"), (field, panel)
        assert option.help.split(".")[0][:40] in " ".join(text.split()), field
    bench = runner.invoke(app, ["bench", "--help"], terminal_width=200).stdout
    assert "--dla-core N" in bench and "Jetson (TensorRT):" in bench and "--preset" not in bench


def test_only_the_targets_a_run_was_asked_for_are_gated():
    data = report(row("openvino", "fp32", 99.0), row("openvino", "int8", 98.8),
                  row("onnxruntime", "fp32", 99.0), row("onnxruntime", "int8", 90.0))
    assert not check_report(data).passed  # an older report, without "targets": every row is judged
    data["targets"] = ["openvino"]
    outcome = check_report(data)
    assert outcome.passed and outcome.checked == 1
    assert any("onnxruntime: not asked for" in note for note in outcome.notes)


def test_a_busy_machine_is_named_in_the_report():
    from edgesmlp.jobs.report import Result, build_report

    quiet = Result("openvino", "fp32", latency_ms_p50=10.0, throughput_ips=110.0)
    spread = Result("openvino", "int8", latency_ms_p50=5.0, latency_unstable=True, throughput_ips=210.0)
    starved = Result("torch", "fp32", latency_ms_p50=10.0, throughput_ips=30.0)  # under half its batch-1 rate
    notes = build_report([quiet, spread, starved], {}, {}, {}, {}, ["other"])["notes"]
    assert notes[0].startswith("The machine was busy") and "openvino/int8, torch/fp32" in notes[0]
    assert "openvino/fp32" not in notes[0] and notes[1] == "other"
    assert build_report([quiet], {}, {}, {}, {}, [])["notes"] == []
