"""Evaluation sharded over torchrun's ranks (gloo on this CPU): the same accuracy as one process, one report. The
ranks are two nodes meeting at a c10d rendezvous endpoint, as docs/design.md's multi-node example launches them
(here both on this machine)."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from edgesmlp.cli import app

runner = CliRunner()


def bench(tmp_path, name, *launchers):
    """``bench --from`` under each launcher at once (one per node); the JSON rank 0 printed, and its report."""
    command = ["-m", "edgesmlp", "bench", "--from", str(tmp_path / "q"), "-t", "openvino", "-o",
               str(tmp_path / name), "--latency-seconds", "0", "--latency-iters", "3", "-q", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([*launcher, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp_path) for launcher in launchers]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    printed = [out for out, _ in outputs if out.strip()]
    assert len(printed) == 1  # rank 0's node alone prints
    return json.loads(printed[0]), json.loads((tmp_path / name / "report.json").read_text())


def node() -> list[str]:
    """One node's launcher: torchrun meeting the other at the endpoint, which decides the ranks."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29517", "--rdzv-id", "edgesmlp-test"]


def test_two_nodes_give_the_single_process_accuracy(tmp_path):
    quantized = runner.invoke(app, ["quantize", "-o", str(tmp_path / "q"), "--calib-size", "64",
                                    "--latency-seconds", "0"])
    assert quantized.exit_code == 0, quantized.output
    alone, alone_report = bench(tmp_path, "one", [sys.executable])
    shared, shared_report = bench(tmp_path, "two", node(), node())
    assert alone_report["ranks"] == 1 and shared_report["ranks"] == 2
    assert alone["verdict"] == shared["verdict"] == "PASS"
    pairs = list(zip(alone_report["results"], shared_report["results"], strict=True))
    for one, two in pairs:
        assert (one["target"], one["precision"]) == (two["target"], two["precision"])
        for key in ("top1", "top5", "agreement", "images"):
            assert one[key] == two[key], (key, one, two)
        assert abs(one["cosine"] - two["cosine"]) < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["one", "q", "two"]
