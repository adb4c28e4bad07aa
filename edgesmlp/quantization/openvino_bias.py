"""Bias correction for an NNCF INT8 OpenVINO model, on any layout of its weighted ops.

INT8 shifts the mean of each output channel: the weight's rounding error times the mean input, plus the
weight times the mean rounding error of the input's FakeQuantize. NNCF's fast bias correction measures that
shift per layer and adds it back to the bias, but NNCF 3.4 assumes every MatMul's output channel is the
last axis and crashes on the deploy form's left-operand MatMul (``P @ x``, whose bias runs along H). This
computes the same shift in closed form, per layer, from one pass of per-channel input means (of ``x`` and
of ``FakeQuantize(x)``), for Convolution, GroupConvolution and MatMul with the weight on either side:

    shift[o] = sum_i W[o, i] * mean(x)[i] - Wq[o, i] * mean(FQ(x))[i]

(over the kernel's taps too; exact for 1x1 convolutions and MatMuls, padding aside for the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesmlp.quantization.openvino_partial import _is_weight_chain, _source

WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


@dataclass(frozen=True)
class Corrected:
    layer: str
    shift: float  # the largest |shift| over channels, relative to the largest |bias|


def _value(node) -> np.ndarray:
    """The value of a constant subgraph (Constant -> Convert -> Subtract -> Multiply -> Reshape)."""
    kind = node.get_type_name()
    inputs = [_source(node, i) for i in range(node.get_input_size())]
    if kind == "Constant":
        return node.get_data().astype(np.float32)
    if kind == "Convert":
        return _value(inputs[0])
    if kind == "Subtract":
        return _value(inputs[0]) - _value(inputs[1])
    if kind == "Multiply":
        return _value(inputs[0]) * _value(inputs[1])
    if kind == "Reshape":
        return _value(inputs[0]).reshape(node.get_output_shape(0).to_shape())
    raise ValueError(f"not a constant subgraph: {kind}")


def _fake_quantize(x: np.ndarray, fq) -> np.ndarray:
    low, high, out_low, out_high = (_value(_source(fq, i)) for i in range(1, 5))
    levels = fq.get_attributes()["levels"]
    steps = np.round((np.clip(x, low, high) - low) / (high - low) * (levels - 1))
    return steps / (levels - 1) * (out_high - out_low) + out_low


def _fake_quantizers(op, index: int) -> list | None:
    """The FakeQuantize nodes an activation input reads, in channel order (several through a Concat)."""
    source = _source(op, index)
    if source.get_type_name() == "FakeQuantize":
        return [source]
    if source.get_type_name() == "Concat" and all(_source(source, j).get_type_name() == "FakeQuantize"
                                                  for j in range(source.get_input_size())):
        return [_source(source, j) for j in range(source.get_input_size())]
    return None


def _bias_of(op):
    """(the Add, the index of its constant input) right after ``op``, or None."""
    targets = list(op.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Add":
        return None
    add = targets[0].get_node()
    for j in range(2):
        node = _source(add, j)
        while node.get_type_name() == "Convert":
            node = _source(node, 0)
        if node.get_type_name() == "Constant":
            return add, j
    return None


@dataclass
class _Site:
    op: object
    act: int  # the activation input's index
    fqs: list
    weight: np.ndarray  # the float weight the layer approximates
    qweight: np.ndarray  # what INT8 computes with
    add: object
    bias_index: int


def _sites(int8, fp32_ops: dict) -> list[_Site]:
    sites = []
    for op in int8.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED or (bias := _bias_of(op)) is None:
            continue
        weights = [i for i in range(2) if _is_weight_chain(_source(op, i)) or _source(op, i).get_type_name() == "Constant"]
        if len(weights) != 1 or (fqs := _fake_quantizers(op, 1 - weights[0])) is None:
            continue
        w = weights[0]
        fp32_op = fp32_ops.get(op.get_friendly_name())
        if fp32_op is None:
            continue
        sites.append(_Site(op, 1 - w, fqs, _value(_source(fp32_op, w)), _value(_source(op, w)), *bias))
    return sites


def _apply(site: _Site, weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The layer (without its bias) applied to ``x`` (one image's worth, batch 1) in float64: a mean image
    goes through a linear layer exactly, padding included."""
    kind, attrs = site.op.get_type_name(), site.op.get_attributes()
    if kind == "MatMul":
        a, b = (x, weight) if site.act == 0 else (weight.reshape(weight.shape[-2:]), x)
        a = np.swapaxes(a, -1, -2) if attrs["transpose_a"] else a
        b = np.swapaxes(b, -1, -2) if attrs["transpose_b"] else b
        return a @ b
    import torch
    import torch.nn.functional as F

    w = torch.from_numpy(weight.astype(np.float64))
    groups = 1
    if kind == "GroupConvolution":  # [G, O/G, I/G, kh, kw] -> [O, I/G, kh, kw]
        groups = w.shape[0]
        w = w.reshape(-1, *w.shape[2:])
    (top, left), (bottom, right) = attrs["pads_begin"], attrs["pads_end"]
    padded = F.pad(torch.from_numpy(x.astype(np.float64)), (left, right, top, bottom))
    return F.conv2d(padded, w, stride=tuple(attrs["strides"]), dilation=tuple(attrs["dilations"]), groups=groups).numpy()


def correct_biases(int8, fp32, calibration: np.ndarray, threads: int = 0) -> tuple[object, list[Corrected]]:
    """A copy of the NNCF INT8 ov.Model ``int8`` with every weighted layer's bias corrected for its own INT8 mean
    shift, measured on ``calibration`` (N, C, H, W) through ``int8`` itself; ``fp32`` supplies the float weights."""
    import openvino.opset13 as ops

    from edgesmlp.runtimes.openvino import OpenVINORunner

    model = int8.clone()
    sites = _sites(model, {op.get_friendly_name(): op for op in fp32.get_ops()})
    fqs = list({fq.get_friendly_name(): fq for s in sites for fq in s.fqs}.values())
    probe = model.clone()
    probe_ops = {op.get_friendly_name(): op for op in probe.get_ops()}
    probe.add_outputs([probe_ops[fq.get_friendly_name()].input(0).get_source_output() for fq in fqs])
    runner = OpenVINORunner(probe, 1, threads, "f32")
    mean_x: dict[str, np.ndarray] = {}  # per element, over the images: what the float layer reads
    mean_q: dict[str, np.ndarray] = {}  # ... and what its INT8 twin reads
    for image in calibration:
        outputs = runner.request.infer({0: image[None]})
        for k, fq in enumerate(fqs):
            x, name = outputs[k + 1].astype(np.float64), fq.get_friendly_name()
            mean_x[name] = mean_x.get(name, 0) + x / len(calibration)
            mean_q[name] = mean_q.get(name, 0) + _fake_quantize(x, fq) / len(calibration)
    corrected = []
    for s in sites:
        concat = _source(s.op, s.act)
        axis = concat.get_attributes()["axis"] if concat.get_type_name() == "Concat" else 0
        gather = lambda means: np.concatenate([means[fq.get_friendly_name()] for fq in s.fqs], axis=axis)  # noqa: E731
        error = _apply(s, s.weight, gather(mean_x)) - _apply(s, s.qweight, gather(mean_q))
        bias = _value(_source(s.add, s.bias_index))
        if bias.ndim > error.ndim:
            continue
        shape = (1,) * (error.ndim - bias.ndim) + bias.shape  # the bias right-aligned on the output
        if any(b not in (1, e) for b, e in zip(shape, error.shape)):
            continue
        shift = error.mean(axis=tuple(d for d, b in enumerate(shape) if b == 1 and error.shape[d] != 1), keepdims=True)
        new = (bias + shift.reshape(bias.shape)).astype(np.float32)
        s.add.input(s.bias_index).replace_source_output(ops.constant(new).output(0))
        corrected.append(Corrected(s.op.get_friendly_name(), float(np.abs(shift).max() / max(np.abs(bias).max(), 1e-12))))
    model.validate_nodes_and_infer_types()
    return model, corrected
