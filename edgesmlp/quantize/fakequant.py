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
import torch.nn.functional as F
from torch import nn

from edgesmlp.deploy import DeploySMLPNet
from edgesmlp.quantize.calibrate import QMAX, CalibMethod, amax_from_histogram


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


def quant_weight(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric INT8 fake quantization of a weight on its output-channel axis."""
    axis %= w.ndim
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    scale = (w.detach().abs().amax(dim=reduce) / QMAX).clamp_min(1e-8).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, axis, -127, 127)


class BlockQuant(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw_in, self.concat, self.res_token = ActQuant(), ActQuant(), ActQuant()
        self.fc1_in, self.fc2_in, self.res_channel = ActQuant(), ActQuant(), ActQuant()


class QATDeploySMLPNet(nn.Module):
    """Wraps (a copy of) a :class:`DeploySMLPNet`; ``.model`` holds the weights being trained."""

    def __init__(self, deploy: DeploySMLPNet, learn_ranges: bool = False):
        super().__init__()
        self.learn_ranges = learn_ranges
        self.model = copy.deepcopy(deploy)
        self.stem_in = nn.ModuleList(ActQuant() for _ in deploy.stems)
        self.blocks = nn.ModuleList(BlockQuant() for _ in deploy.token_mix)
        self.head_in = ActQuant()
        self.quantize_weights = False

    def _w(self, w: torch.Tensor, axis: int = 0) -> torch.Tensor:
        return quant_weight(w, axis) if self.quantize_weights else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, block = self.model, 0
        for i, depth in enumerate(m.depths):
            stem = m.stems[i]
            x = F.conv2d(self.stem_in[i](x), self._w(stem.weight), None, stem.stride)
            for _ in range(depth):
                x = self._block(x, block)
                block += 1
        return F.linear(self.head_in(x.mean(dim=(2, 3))), self._w(m.head.weight), m.head.bias)

    def _block(self, x: torch.Tensor, k: int) -> torch.Tensor:
        tm, cm, q = self.model.token_mix[k], self.model.channel_mix[k], self.blocks[k]
        h = F.conv2d(q.dw_in(tm.act(tm.pre(x))), self._w(tm.dwconv.weight), tm.dwconv.bias, 1, 1, 1, tm.dwconv.groups)
        a = q.concat(tm.act(h))
        along_w = q.concat(torch.matmul(a, self._w(tm.mix.weight_w, -1)) + tm.mix.bias_w)
        along_h = q.concat(torch.matmul(self._w(tm.mix.weight_h, 0), a) + tm.mix.bias_h)
        x = q.res_token(x) + F.conv2d(torch.cat([a, along_w, along_h], 1), self._w(tm.fuse.weight))
        u = cm.act(F.conv2d(q.fc1_in(cm.norm(x)), self._w(cm.fc1.weight), cm.fc1.bias))
        return q.res_channel(x) + F.conv2d(q.fc2_in(u), self._w(cm.fc2.weight), cm.fc2.bias)

    def quantizers(self) -> list[ActQuant]:
        return [m for m in self.modules() if isinstance(m, ActQuant)]

    @torch.no_grad()
    def calibrate(self, data: torch.Tensor, method: CalibMethod, percentile: float = 99.99, batch: int = 32) -> None:
        """Set every activation range from ``data`` with the same method the Q/DQ export uses."""
        self.eval()
        for mode in ("max", "hist"):
            for q in self.quantizers():
                q.mode = mode
            for start in range(0, len(data), batch):
                self(data[start : start + batch])
        for q in self.quantizers():
            q.finish(CalibMethod(method), percentile, keep_full_range=q is self.stem_in[0])  # the image input
            q.mode = "quant"
            if self.learn_ranges:
                q.learn()
        self.quantize_weights = True
