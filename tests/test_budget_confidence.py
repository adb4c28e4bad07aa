"""The accuracy budget is met with confidence, on images the calibration did not use: the bound's arithmetic,
asks too fine for the search images refused before any work, and where the search images come from."""

import json
import random

import pytest
from typer.testing import CliRunner

from edgesmlp.cli import app
from edgesmlp.quantization.budget import Budget, Point, images_needed, meets, wilson_lower, wilson_upper


def _quantize(*args):
    return CliRunner().invoke(app, ["quantize", *map(str, args)])


def test_the_wilson_bound_matches_its_closed_form_and_covers_the_truth():
    z2 = 1.6448536269514722**2
    assert wilson_lower(300, 300) == pytest.approx(300 / (300 + z2))  # no flips: n / (n + z^2)
    assert wilson_upper(0, 300) == pytest.approx(z2 / (300 + z2))
    assert wilson_lower(0, 10) == 0.0 and wilson_lower(5, 0) == 0.0
    assert images_needed(0.994) == pytest.approx(448.2, abs=0.1) and images_needed(1.0) == float("inf")
    assert Budget(min_agreement=99.9).images_needed(labelled=False) == 2703
    assert Budget(max_drop=1.0).images_needed(labelled=True) == 268  # the default drop, with labels
    assert Budget(max_drop=0.0).images_needed(labelled=True) == float("inf")
    # One-sided 95%: over many samples of 1,000 images from a 99.5% population the bound is below the truth in
    # at least 95% of them (Wilson's interval holds its level at proportions this close to 1).
    rng = random.Random(0)
    covered = sum(wilson_lower(sum(rng.random() < 0.995 for _ in range(1000)), 1000) <= 0.995 for _ in range(2000))
    assert 0.95 <= covered / 2000 <= 0.99


def test_met_means_the_count_and_the_estimate_both_clear_the_ask():
    budget = Budget(max_drop=None, min_agreement=99.5)
    clean = Point(0, agreement=100.0, expected=99.9, kl=0.0, drop=None, images=1000, flips=0)
    assert meets(budget, clean) and clean.agreement_bound > 99.5
    few = Point(0, agreement=100.0, expected=99.9, kl=0.0, drop=None, images=300, flips=0)  # 300 cannot certify 99.5
    assert not meets(budget, few) and meets(budget, few, certify=False)
    counted = Point(0, agreement=99.3, expected=99.9, kl=0.0, drop=None, images=1000, flips=7)  # the count says no
    assert not meets(budget, counted)
    optimistic = Point(0, agreement=100.0, expected=99.7, kl=0.0, drop=None, images=2000, flips=0)
    assert meets(budget, optimistic) and not meets(budget, optimistic, overlap=True)  # half the allowance: 99.75
    labelled = Budget(max_drop=1.0)
    broke = Point(0, agreement=99.0, expected=99.5, kl=0.0, drop=0.3, images=1000, flips=10, broken=9)
    assert broke.drop_bound == pytest.approx(100 * wilson_upper(9, 1000)) and broke.drop_bound > 1.0
    assert not meets(labelled, broke)  # 0.3 points counted, but 9 broken images of 1,000 bound it only to 1.5


def test_an_ask_the_search_images_cannot_certify_is_refused_before_any_work(tmp_path):
    result = _quantize("-o", tmp_path / "o", "--min-agreement", 99.9)  # the bundled source: 300 images
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
    assert "needs at least 2,703 images" in result.output and "--search" in result.output
    assert "quantizing" not in result.output  # refused before calibration
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    few = _quantize("-o", tmp_path / "o", "--calib-size", 100, "--min-agreement", 99)
    assert few.exit_code == 2 and "on 200 search images" in few.output and "268" in few.output


def test_search_images_that_are_the_calibration_images_are_named_and_widen_the_margin(tmp_path):
    result = _quantize("-o", tmp_path / "o", "--latency-seconds", 0.05, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # --json: one object on stdout, the notes on stderr
    assert printed["verdict"] == "PASS" and [r["precision"] for r in printed["results"]] == ["fp32", "int8"]
    search = json.loads((tmp_path / "o" / "openvino" / "report.json").read_text())["budget"]["search"]
    assert search["overlap"] and search["images"] == 300 and search["certified"] and search["needed"] == 268
    assert "calibration images" in search["origin"] and search["agreement_bound"] >= 99.0
    text = " ".join(result.stderr.split())  # the notes wrap at 80 columns
    assert "the search images are the calibration images" in text and "half the allowance" in text


def test_search_images_leave_out_the_calibration_sample(fragile_digits, tmp_path):
    """--search naming the calibration folder itself: its 300 sampled images are left out, 900 remain, and the
    budget is certified on them."""
    weights, calib, val = fragile_digits
    result = _quantize("-t", "jetson", "-w", weights, "--calib", calib, "--val", val, "--search", calib,
                       "--min-agreement", 99.0, "--latency-seconds", 0.05, "-o", tmp_path / "o")
    assert "300 images of" in result.output and "900 remain" in result.output, result.output
    assert (tmp_path / "o" / "jetson" / "report.json").is_file(), result.output
    report = json.loads((tmp_path / "o" / "jetson" / "report.json").read_text())
    search = report["budget"]["search"]
    assert not search["overlap"] and search["images"] == 900 and search["certified"]
    assert search["agreement_bound"] >= 99.0 and search["reached"]["expected"] >= 99.0
    rows = {r["precision"]: r for r in report["results"]}
    # held out: 4,000 validation images neither calibration nor the search saw
    assert result.exit_code == (0 if rows["int8"]["agreement"] >= 99.0 else 1), result.output
    same = _quantize("-t", "jetson", "-w", weights, "--calib", calib, "--calib-size", 1200, "--val", val,
                     "--search", calib, "--min-agreement", 99.5, "-o", tmp_path / "same")
    assert same.exit_code == 2 and "is a calibration image" in same.output and not (tmp_path / "same").exists()
