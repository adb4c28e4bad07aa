"""Evaluation sharded over torchrun's ranks (gloo on this CPU): the same accuracy as one process, one report."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from edgesmlp.cli import app

runner = CliRunner()


def bench(tmp_path, name, *launcher):
    command = [*launcher, "-m", "edgesmlp", "bench", "--from", str(tmp_path / "q"), "-t", "openvino", "-o",
               str(tmp_path / name), "--latency-seconds", "0", "--latency-iters", "3", "-q", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), json.loads((tmp_path / name / "report.json").read_text())


def test_two_gloo_ranks_give_the_single_process_accuracy(tmp_path):
    quantized = runner.invoke(app, ["quantize", "-o", str(tmp_path / "q"), "--calib-size", "64",
                                    "--latency-seconds", "0"])
    assert quantized.exit_code == 0, quantized.output
    alone, alone_report = bench(tmp_path, "one", sys.executable)
    shared, shared_report = bench(tmp_path, "two", sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                                  "2", "--master-port", "29517")
    assert alone_report["ranks"] == 1 and shared_report["ranks"] == 2
    assert alone["verdict"] == shared["verdict"] == "PASS"
    pairs = list(zip(alone_report["results"], shared_report["results"], strict=True))
    for one, two in pairs:
        assert (one["target"], one["precision"]) == (two["target"], two["precision"])
        for key in ("top1", "top5", "agreement", "images"):
            assert one[key] == two[key], (key, one, two)
        assert abs(one["cosine"] - two["cosine"]) < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["one", "q", "two"]
