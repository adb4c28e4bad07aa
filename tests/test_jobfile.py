"""Job files (--config) and options that belong to their target: refused before any work, in one line."""

import json

import pytest
from typer.testing import CliRunner

from edgesmlp import targets
from edgesmlp.cli import app
from tests.test_cli import assert_one_line_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args, flag, taker", [
    (("quantize", "-t", "jetson", "--fuse", "conv", "--weight-bits", "7", "--preset", "mixed"), "--preset", "openvino"),
    (("quantize", "-t", "openvino", "--calib-method", "entropy"), "--calib-method", "onnxruntime, jetson"),
    (("quantize", "-t", "onnxruntime", "--ignore", "head"), "--ignore", "openvino, jetson"),
    (("bench", "-t", "jetson,torch", "--fuse", "conv"), "--fuse", "openvino"),
    (("sensitivity", "-t", "jetson", "--preset", "mixed"), "--preset", "openvino"),
])
def test_an_option_of_another_target_is_refused(tmp_path, args, flag, taker):
    result = run(*args, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, f"{flag} is an option of {taker}")
    assert not (tmp_path / "out").exists()


def test_every_target_declares_options_its_config_records():
    for name in targets.names():
        target = targets.get(name)
        recorded = target.config_type().to_dict()
        assert {o.key for o in target.options} <= set(recorded), name


def test_a_job_file_feeds_the_options(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('calib-size = 10\n[quantize]\ntarget = "jetson"\nfuse = "conv"\n')
    assert_one_line_error(run("quantize", "--config", job), 2, "--fuse is an option of openvino, not of jetson")
    # the command line wins over the file: -t openvino takes --fuse, so the job runs (stopped here by a bad --calib)
    result = run("quantize", "--config", job, "-t", "openvino", "--calib", tmp_path / "missing")
    assert_one_line_error(result, 2, "missing: no such file or folder")


def test_relative_paths_are_read_from_the_job_file_folder(tmp_path):
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "job.toml"
    job.write_text('calib = "imgs"\n')
    result = run("quantize", "--config", job)
    assert_one_line_error(result, 2, str(tmp_path / "jobs" / "imgs"))


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "'bogus' is not an option of edgesmlp quantize"),
    ("[quantise]\ncalib-size = 3\n", "[quantise] is not an edgesmlp command"),
    ("calib-size = \n", "is not valid TOML"),
])
def test_a_bad_job_file_is_one_line(tmp_path, text, message):
    job = tmp_path / "job.toml"
    job.write_text(text)
    assert_one_line_error(run("quantize", "--config", job), 2, message)


def test_a_missing_job_file_or_a_json_that_is_no_manifest(tmp_path):
    assert_one_line_error(run("check", "r.json", "--config", tmp_path / "none.toml"), 2, "no such job file")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"a": 1}))
    assert_one_line_error(run("check", "r.json", "--config", other), 2, "is not an edgesmlp manifest.json")
    old = tmp_path / "manifest.json"
    old.write_text(json.dumps({"edgesmlp_manifest": 1, "files": {}}))
    assert_one_line_error(run("quantize", "--config", old), 2, "did not record its job")


def test_a_reference_form_manifest_leaves_out_the_deploy_form_options():
    """A reference-form build took no --fuse or --token-mixing (refused with it), so its manifest's job, replayed
    with --config, must not give them; a deploy-form build records them."""
    from edgesmlp.jobs.jobfile import entries
    from edgesmlp.jobs.spec import QuantizeRequest

    target = targets.get("openvino")
    config = target.config_type()
    for form, recorded in (("reference", False), ("deploy", True)):
        job = entries(QuantizeRequest(form=form, config=config), target, config, None)
        assert ("fuse" in job and "token_mixing" in job) is recorded and ("preset" in job), (form, job)
