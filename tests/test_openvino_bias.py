"""edgesmlp's bias correction for NNCF INT8 IRs (``quantization/openvino_bias.py``), on real NNCF and OpenVINO.

On a one-layer model the correction is exact: after it, the INT8 layer's per-channel output mean over the
calibration images equals the FP32 layer's. Each kind of weighted op of the deploy form is checked,
including the left-operand MatMul (``P @ x``) on which NNCF's own bias correction fails.
"""

import numpy as np
import pytest
import torch

from edgesmlp.quantization.openvino_bias import correct_biases
from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_openvino
from edgesmlp.runtimes.openvino import OpenVINORunner


class OneLayer(torch.nn.Module):
    """One weighted op with a bias, its weights with an outlier per output channel (a coarse INT8 grid)."""

    def __init__(self, kind: str, c: int = 8, h: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.kind = kind
        shapes = {"conv": (c, c, 3, 3), "dwconv": (c, 1, 3, 3), "right": (h, h), "left": (h, h)}
        w = torch.randn(shapes[kind], generator=g) * 0.3
        w.view(w.shape[0], -1)[:, 0] = 3.0  # one large weight per row sets the scale; the rest round coarsely
        self.weight = torch.nn.Parameter(w)
        self.bias = torch.nn.Parameter(torch.randn(c if "conv" in kind else h, generator=g) * 0.1)

    def forward(self, x):
        if self.kind == "conv":
            return torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
        if self.kind == "dwconv":
            return torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1, groups=x.shape[1])
        if self.kind == "right":
            return x @ self.weight + self.bias
        return self.weight @ x + self.bias.view(1, 1, -1, 1)


def _channel_means(model, x, axis):
    runner = OpenVINORunner(model, 1, 2, "f32")
    out = np.concatenate([runner(x[i : i + 1]) for i in range(len(x))])
    return out.mean(axis=tuple(a for a in range(out.ndim) if a != axis % out.ndim))


@pytest.mark.parametrize("kind", ["conv", "dwconv", "right", "left"])
def test_one_layer_int8_keeps_the_float_output_mean(kind):
    import openvino as ov

    torch.manual_seed(0)
    module = OneLayer(kind).eval()
    x = (torch.rand(40, 8, 6, 6) * 2.0 + 0.5).numpy()  # inputs with a mean far from zero
    fp32 = ov.convert_model(module, example_input=torch.from_numpy(x[:1]), input=[1, 8, 6, 6])
    int8 = quantize_openvino(fp32, x, OpenVINOPTQConfig())
    corrected, report = correct_biases(int8, fp32, x, threads=2)
    assert len(report) == 1
    axis = {"conv": 1, "dwconv": 1, "right": -1, "left": -2}[kind]
    want = _channel_means(fp32, x, axis)
    before = np.abs(_channel_means(int8, x, axis) - want).max()
    after = np.abs(_channel_means(corrected, x, axis) - want).max()
    scale = np.abs(want).max()
    assert after <= 2e-4 * scale, (before, after)
    if kind != "left":  # NNCF leaves P (left operand) in float: only the input's rounding shifts the mean there
        assert before > 10 * after


def test_deploy_form_quantize_with_fast_bias_correction(tmp_path):
    """`--bias-correction fast` on the deploy form runs end to end (NNCF's own crashes there)."""
    import json

    from typer.testing import CliRunner

    from edgesmlp.cli import app

    result = CliRunner().invoke(app, ["quantize", "--bias-correction", "fast", "-o", str(tmp_path / "q"),
                                      "--calib-size", "100", "--latency-seconds", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "q" / "openvino" / "report.json").read_text())
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    assert int8["agreement"] >= 99.0
    assert '"bias_correction": "fast"' in (tmp_path / "q" / "openvino" / "manifest.json").read_text()
