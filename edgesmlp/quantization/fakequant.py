"""The deploy form with fake quantization where the Q/DQ ONNX quantizes, for training (QAT).

Placement mirrors ``qdq.plan_qdq``: every Conv/MatMul/Gemm input, one shared range for each
Concat's inputs, the residual input of each Add, weights per channel on the output axis. Activation
ranges are calibrated once by the same histogram methods; weights train through straight-through
fake quantization. Ranges are then held fixed (the TensorRT export recalibrates and must reproduce
them), or, with ``learn_ranges``, trained too (LSQ's gradient on the log of each range), for targets
that take the fake-quantized graph itself (OpenVINO converts its fake-quantize ops to FakeQuantize).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgesmlp.deploy import AxialMix, DeploySMLPNet
from edgesmlp.quantization.calibrate import QMAX, CalibMethod, amax_from_histogram, weight_qmax


class ActQuant(nn.Module):
    """Per-tensor symmetric INT8 fake quantization; observes |x| while calibrating."""

    def __init__(self, bins: int = 2048):
        super().__init__()
        self.register_buffer("amax", torch.tensor(0.0))
        self.log_amax: nn.Parameter | None = None  # set by learn(): the trained range
        self.mode = "off"  # off, max, hist, quant
        self.bins = bins
        self.hist = torch.zeros(bins, dtype=torch.float64)
        self.seen = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            self.seen = max(self.seen, float(x.detach().abs().max()))
        elif self.mode == "hist" and self.seen > 0:
            self.hist += torch.histc(x.detach().abs().double(), self.bins, 0.0, self.seen)
        elif self.mode == "quant":
            if self.log_amax is not None and self.training:
                scale = self.log_amax.exp() / QMAX
                q = torch.clamp(x / scale, -QMAX - 1, QMAX)
                return (q + (q.round() - q).detach()) * scale  # straight through round; LSQ's gradient on scale
            return torch.fake_quantize_per_tensor_affine(x, self.scale(), 0, -QMAX - 1, QMAX)
        return x

    def scale(self) -> float:
        amax = float(self.log_amax.exp()) if self.log_amax is not None else float(self.amax.clamp_min(1e-8))
        return amax / QMAX

    def finish(self, method: CalibMethod, percentile: float, keep_full_range: bool = False) -> None:
        amax = self.seen if keep_full_range else amax_from_histogram(self.hist.numpy(), self.seen, method, percentile)
        self.amax.fill_(amax)

    def learn(self) -> None:
        """Train this range from here on, starting from the calibrated one."""
        self.log_amax = nn.Parameter(torch.tensor(math.log(max(float(self.amax), 1e-8))))


def quant_weight(w: torch.Tensor, axis: int, qmax: int = QMAX) -> torch.Tensor:
    """Per-channel symmetric INT8 fake quantization of a weight on its output-channel axis, in [-qmax, qmax]
    (63: 7-bit weights, for x86 CPUs without VNNI, whose integer kernels saturate on 8-bit ones)."""
    axis %= w.ndim
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    scale = (w.detach().abs().amax(dim=reduce) / qmax).clamp_min(1e-8).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, axis, -qmax, qmax)


class WeightQuant(nn.Module):
    """A parametrization: the weight, fake-quantized per channel on ``axis`` once ``enabled``."""

    def __init__(self, axis: int, qmax: int = QMAX):
        super().__init__()
        self.axis, self.qmax = axis, qmax
        self.enabled = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quant_weight(w, self.axis, self.qmax) if self.enabled else w


def _weights(deploy: DeploySMLPNet) -> list[tuple[nn.Module, str, int]]:
    """Every weight the Q/DQ graph quantizes: (module, parameter, output-channel axis)."""
    found = [(m, "weight", 0) for m in deploy.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in deploy.modules():
        if isinstance(m, AxialMix):  # x @ weight_w: output axis is the last; weight_h @ x: the first
            found += [(m, "weight_w", -1), (m, "weight_h", 0)]
    return found


def _place_quantizers(deploy: DeploySMLPNet) -> None:
    """Put an ActQuant at each QuantPoint the Q/DQ placement quantizes, sharing the Concat's one scale."""
    for i in range(len(deploy.stem_in)):
        deploy.stem_in[i] = ActQuant()
    deploy.head_in = ActQuant()
    for tm in deploy.token_mix:
        if tm.dwconv is not None:
            tm.dw_in = ActQuant()
        if tm.mix is not None:
            tm.mix_in = ActQuant()
            if tm.fusion.value == "weighted_sum" and tm.branches.value == "parallel":
                tm.mix_in_h = ActQuant()  # each mixing MatMul reads its own weighted input
            if hasattr(tm, "mid"):
                tm.mid = ActQuant()
            if tm.fuse is not None:  # one scale for every Concat input: the identity branch is mix_in itself
                tm.fuse_in = tm.mix_in if tm.identity else ActQuant()
        if tm.ends_in_conv:
            tm.residual = ActQuant()
    for cm in deploy.channel_mix:
        cm.fc1_in, cm.fc2_in, cm.residual = ActQuant(), ActQuant(), ActQuant()


class QATDeploySMLPNet(nn.Module):
    """A copy of a :class:`DeploySMLPNet` with fake quantization at its quantization points (``.model``).

    The forward is the deploy form's own, so every variant trains the graph it ships.
    """

    def __init__(self, deploy: DeploySMLPNet, learn_ranges: bool = False, weight_bits: int = 8):
        super().__init__()
        self.learn_ranges = learn_ranges
        self._template = [copy.deepcopy(deploy).eval()]  # a list: not a submodule, not in the state dict
        self.model = copy.deepcopy(deploy)
        _place_quantizers(self.model)
        self.weight_quantizers = []
        for module, name, axis in _weights(self.model):
            quantizer = WeightQuant(axis, weight_qmax(weight_bits))
            parametrize.register_parametrization(module, name, quantizer)
            self.weight_quantizers.append(quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def float_model(self) -> DeploySMLPNet:
        """The trained weights in a plain deploy form (no fake quantization), for export.

        (Copied by name into a float template: removing parametrizations from a deep copy would strip the
        weight property from the class the copy shares with the student.)
        """
        weights = {}
        for key, value in self.model.state_dict().items():
            if ".parametrizations." in key:
                owner, rest = key.split(".parametrizations.", 1)
                weights[f"{owner}.{rest.removesuffix('.original')}"] = value
            elif key.rsplit(".", 1)[-1] not in ("amax", "log_amax"):
                weights[key] = value
        plain = copy.deepcopy(self._template[0])
        plain.load_state_dict(weights, strict=True)
        return plain.eval()

    def quantizers(self) -> list[ActQuant]:
        return list(dict.fromkeys(m for m in self.modules() if isinstance(m, ActQuant)))

    @torch.no_grad()
    def calibrate(self, data: torch.Tensor, method: CalibMethod, percentile: float = 99.99, batch: int = 32) -> None:
        """Set every activation range from ``data`` with the same method the Q/DQ export uses."""
        self.eval()
        for mode in ("max",) if CalibMethod(method) is CalibMethod.max else ("max", "hist"):  # max needs no histogram
            for q in self.quantizers():
                q.mode = mode
            for start in range(0, len(data), batch):
                self(data[start : start + batch])
        for q in self.quantizers():
            q.finish(CalibMethod(method), percentile, keep_full_range=q is self.model.stem_in[0])  # the image input
            q.mode = "quant"
            if self.learn_ranges:
                q.learn()
        for w in self.weight_quantizers:
            w.enabled = True
