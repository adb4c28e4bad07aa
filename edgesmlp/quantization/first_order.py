"""A first-order ranking of the layers to keep in float: one forward and one backward pass score every layer,
where the exact ranking (``sensitivity.per_layer``) runs the whole model once per layer.

Quantizing one layer perturbs its output by ``e = f(Q(x), Q(W)) - f(x, W)``; to second order, the KL of the
logits from FP32's is ``1/2 (J e)^T F (J e)``, with ``F`` the softmax's Fisher information. Written with
classes ``y`` drawn from the model's own softmax, ``F = E_y[g_y g_y^T]`` for ``g_y`` the gradient of
``log p(y)``, so the layer's score is ``1/2 E_y[(g_y . e)^2]``, averaged over images: every layer's gradient
comes from the same backward pass (the Fisher form of ModelOpt's AutoQuantize score). Ranges are the Q/DQ
graph's own (``fakequant.QATDeploySMLPNet.calibrate``, the same histogram method), weights per channel.

Layers whose input alone is quantized (OpenVINO's INT8 quantizes the channel norms' and the global pool's inputs,
which the Q/DQ placement leaves in float) are scored the same way, with a symmetric per-tensor range from the
calibration images' largest value: ``channel_mix.3.norm``, ``pool``.

Scores are keyed by the module path the exported ONNX records (``quantize.layers.module_path``):
``channel_mix.3.fc2``, and ``token_mix.0.mix.along_w`` / ``.along_h`` for the axial MatMuls, in the order the
forward runs them (``openvino_partial.first_order_keys`` pairs OpenVINO's unnamed MatMuls with them by that order).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesmlp.deploy import AxialMix, ChannelLayerNorm, DeploySMLPNet
from edgesmlp.quantization.calibrate import weight_qmax
from edgesmlp.quantization.fakequant import ActQuant, QATDeploySMLPNet, quant_weight

SAMPLES = 1  # classes drawn per image for the Fisher expectation (averaged over the images)
BATCH = 8  # images per forward and backward
CALIBRATION = 16  # calibration images the ranges are taken from (a ranking, not the shipped ranges; at 224
# 16 images hold millions of values per tensor for the 99.99th percentile)


class _Scores:
    """Collects, per layer, the perturbation of each forward and its dot products with the gradients."""

    def __init__(self):
        self.producer: dict[int, ActQuant] = {}  # id of an activation -> the quantizer it came through
        self.keep: list[torch.Tensor] = []  # those activations, alive while their ids are in use
        self.sums: dict[str, float] = {}
        self.order: dict[str, int] = {}  # key -> when the forward first reached it
        self.calibrating = False  # input-only layers record their range instead of scoring

    def note(self, quantizer: ActQuant, out: torch.Tensor) -> None:
        self.producer[id(out)] = quantizer
        self.keep.append(out)

    def quantized(self, x: torch.Tensor) -> torch.Tensor:
        q = self.producer.get(id(x))
        return x if q is None else torch.fake_quantize_per_tensor_affine(x, q.scale(), 0, -128, 127)

    def layer(self, key: str, out: torch.Tensor, quantized) -> None:
        """``quantized()`` computes the layer's output from its quantized input and weight."""
        self.order.setdefault(key, len(self.order))
        with torch.no_grad():
            error = (quantized() - out).flatten(1)

        def grad(g: torch.Tensor) -> None:
            dot = (g.flatten(1) * error).sum(1)
            self.sums[key] = self.sums.get(key, 0.0) + 0.5 * float((dot.double() ** 2).sum())

        out.register_hook(grad)

    def input_only(self, key: str, x: torch.Tensor, out: torch.Tensor, run, ranges: dict[str, float]) -> None:
        """A layer whose input alone is quantized: ``run(x)`` recomputes it without hooks."""
        if self.calibrating:
            ranges[key] = max(ranges.get(key, 0.0), float(x.detach().abs().max()))
            return
        scale = (ranges.get(key) or 1.0) / 127
        self.layer(key, out, lambda: run(torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127)))


def first_order_scores(deploy: DeploySMLPNet, calibration: np.ndarray, x: np.ndarray, method: str = "percentile",
                       percentile: float = 99.99, weight_bits: int = 8, batch: int = BATCH, seed: int = 0,
                       progress=None, quantized_inputs: bool = False) -> dict[str, float]:
    """Each quantized layer's first-order score (the logit KL from FP32 it causes alone) on images ``x``, by module
    path; with ``quantized_inputs``, the norms' and the pool's too (a graph that quantizes their inputs, as
    OpenVINO's does). ``progress()`` is called after each batch."""
    qat = QATDeploySMLPNet(deploy, weight_bits=weight_bits)
    model = qat.model.eval()
    scores, ranges = _Scores(), {}
    if quantized_inputs:
        for name, m in model.named_modules():
            if isinstance(m, ChannelLayerNorm):
                m.register_forward_hook(lambda m, inp, out, name=name: scores.input_only(name, inp[0], out, m.forward,
                                                                                        ranges))
        pool = model.pool
        model.pool = lambda x: _scored(scores, "pool", x, pool, ranges)
    scores.calibrating = True
    qat.calibrate(torch.as_tensor(np.asarray(calibration[:CALIBRATION])), method, percentile, batch=batch)
    scores.calibrating = False
    for q in qat.quantizers():
        q.mode = "off"  # FP32 forward; each quantizer keeps its calibrated scale
    for w in qat.weight_quantizers:
        w.enabled = False
    qmax = weight_qmax(weight_bits)
    for q in qat.quantizers():
        q.register_forward_hook(lambda m, _, out: scores.note(m, out))
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda m, inp, out, name=name: scores.layer(
                name, out, lambda: m._conv_forward(scores.quantized(inp[0]), quant_weight(m.weight, 0, qmax), m.bias)))
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(lambda m, inp, out, name=name: scores.layer(
                name, out, lambda: F.linear(scores.quantized(inp[0]), quant_weight(m.weight, 0, qmax), m.bias)))
        elif isinstance(m, AxialMix):
            _patch_axial(m, name, scores, qmax)
    for p in model.parameters():
        p.requires_grad_(False)  # gradients are wanted at the layers' outputs only
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(np.asarray(x))
    for start in range(0, len(data), batch):  # hooks and patches live on qat.model, a copy dropped on return
        scores.producer.clear()
        scores.keep.clear()
        with _shared_concat_scale(scores):
            logits = model(data[start : start + batch].requires_grad_(True))
        log_p = F.log_softmax(logits.double(), dim=1)
        for s in range(SAMPLES):
            y = torch.multinomial(log_p.detach().exp(), 1, generator=generator)[:, 0]
            log_p.gather(1, y[:, None]).sum().backward(retain_graph=s + 1 < SAMPLES)
        if progress is not None:
            progress()
    ordered = sorted(scores.sums, key=scores.order.__getitem__)  # the forward's order, not the backward's
    return {key: scores.sums[key] / (len(data) * SAMPLES) for key in ordered}


def _scored(scores: _Scores, key: str, x: torch.Tensor, run, ranges: dict[str, float]) -> torch.Tensor:
    out = run(x)
    scores.input_only(key, x, out, run, ranges)
    return out


@contextlib.contextmanager
def _shared_concat_scale(scores: _Scores):
    """A Concat of tensors that share one quantizer (the Q/DQ placement gives a Concat's inputs one scale) is
    quantized with it: the fuse convolution reading it is scored with its input quantized."""
    cat = torch.cat

    def shared(tensors, dim=0):
        out = cat(tensors, dim=dim)
        owners = {scores.producer.get(id(t)) for t in tensors}
        if len(owners) == 1 and None not in owners:
            scores.note(owners.pop(), out)
        return out

    torch.cat = shared
    try:
        yield
    finally:
        torch.cat = cat


def _patch_axial(mix: AxialMix, name: str, scores: _Scores, qmax: int) -> None:
    """Score ``mix``'s two MatMuls (methods, not modules) as the layers the ONNX export names."""
    along_w, along_h = mix.along_w, mix.along_h

    def w(x: torch.Tensor) -> torch.Tensor:
        out = along_w(x)
        scores.layer(f"{name}.along_w", out,
                     lambda: torch.matmul(scores.quantized(x), quant_weight(mix.weight_w, -1, qmax)) + mix.bias_w)
        return out

    def h(x: torch.Tensor) -> torch.Tensor:
        out = along_h(x)
        scores.layer(f"{name}.along_h", out,
                     lambda: torch.matmul(quant_weight(mix.weight_h, 0, qmax), scores.quantized(x)) + mix.bias_h)
        return out

    mix.along_w, mix.along_h = w, h


def rank_by_first_order(layers, scores: dict[str, float], keys: dict[str, str] | None = None) -> list[str] | None:
    """The node names of ``layers`` (``quantize.layers.Layer``), highest score first; None when a layer has no
    score. ``keys`` maps a node name to its score's key (by default the layer's module path)."""
    key = {layer.name: (keys or {}).get(layer.name, layer.module) for layer in layers}
    if any(k not in scores for k in key.values()):
        return None
    return [layer.name for layer in sorted(layers, key=lambda layer: scores[key[layer.name]], reverse=True)]
