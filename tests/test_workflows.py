"""The GitHub Actions workflows shipped as examples: valid against GitHub's workflow schema (check-jsonschema's
vendored copy, no network), and their shell steps run as written on the bundled model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parent.parent
WORKFLOWS = sorted([*ROOT.glob("examples/*.yml"), *ROOT.glob(".github/workflows/*.yml")])


def test_there_is_a_workflow_to_check():
    assert WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_matches_githubs_schema(path):
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_example_workflow_runs_on_the_bundled_model(tmp_path):
    """Every `run:` step of examples/github-actions.yml, in order, in bash with -e as GitHub runs them
    (the `uses:` steps are GitHub's own actions: checkout, Python, cache, upload). With the URLs left
    empty it gates the bundled model; a second run of the gate and its baseline steps then gates against
    the first run's baseline (the quantize and bench steps would only repeat themselves)."""
    workflow = YAML(typ="safe").load((ROOT / "examples" / "github-actions.yml").read_text())
    steps = [s for s in workflow["jobs"]["int8"]["steps"] if "run" in s and not s["run"].startswith("pip install")]
    gate_at = next(i for i, s in enumerate(steps) if s["name"].startswith("Gate"))
    env = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()}, "GITHUB_REF_NAME": "main"}
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    for attempt, todo in (("first", steps), ("second", steps[gate_at:])):
        outputs = []
        for step in todo:
            script = step["run"]  # the steps with an `if:` run on the default branch: here, always
            extra = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
            result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                                    env={**env, **extra, "GITHUB_ENV": str(github_env)}, timeout=600)
            assert result.returncode == 0, f"{step.get('name')}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            outputs.append(result)
        gate = outputs[len(todo) - len(steps) + gate_at]
        assert "check passed" in gate.stdout
        if attempt == "first":
            assert "no baseline yet" in gate.stdout
            assert (tmp_path / "out" / "openvino" / "model.xml").is_file() and (tmp_path / "bench").is_dir()
        else:  # the second run compared against the first one's report
            assert gate.stdout.count("check passed") == 2
        assert (tmp_path / "baseline" / "report.json").is_file()
