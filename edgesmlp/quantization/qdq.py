"""Explicitly quantized (Q/DQ) ONNX that follows TensorRT's placement rules.

Rules (TensorRT's "explicit quantization" guide, and the checks in ``qdq_lint``):
* signed INT8, zero point 0, scale = amax / 127;
* weights per channel on the output-channel axis: axis 0 for Conv, the output axis of each MatMul
  weight (1 for ``x @ W``, 0 for the left operand in ``P @ x``), and per ``transB`` for Gemm;
* activations per tensor, on every input of Conv / MatMul / Gemm;
* one scale for all inputs (and the output) of a Concat that feeds a quantized op;
* the residual input of an Add whose other input comes from a Conv is quantized, so TensorRT can
  fuse the Add into that Conv;
* LayerNorm, GELU and the mean pool read float tensors: no Q/DQ around them.

``quantize_outputs`` adds ONNX Runtime's placement on top: a Q/DQ on the output of every quantized
Conv / MatMul / Gemm too, so ONNX Runtime fuses DQ -> op -> Q into one integer kernel (QLinearConv,
QLinearMatMul) instead of running the op in float between a DQ and a float consumer. TensorRT does not
need it (it fuses by the input Q/DQ), so the Jetson graph never has it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesmlp.artifacts import atomic_file
from edgesmlp.errors import ConfigError
from edgesmlp.quantization.calibrate import QMAX, CalibMethod, amax_from_histogram, collect_histograms, weight_qmax
from edgesmlp.quantization.layers import onnx_layers, resolve

WEIGHTED = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class QDQConfig:
    method: CalibMethod = CalibMethod.percentile
    percentile: float = 99.99
    bins: int = 2048
    quantize_residuals: bool = True
    quantize_outputs: bool = False  # ONNX Runtime's placement: Q/DQ after each quantized op as well (see above)
    ignored: tuple[str, ...] = ()  # Conv/MatMul/Gemm node names kept in float (TensorRT runs them in FP16)
    weight_bits: int = 8  # 7: weights in [-63, 63], for ONNX Runtime on x86 CPUs whose u8 x s8 kernels saturate

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignored", tuple(self.ignored))
        weight_qmax(self.weight_bits)  # refuses anything but 7 or 8
        if self.method not in {m.value for m in CalibMethod}:
            raise ConfigError(f"--calib-method {self.method!r} unknown: use {', '.join(m.value for m in CalibMethod)}")
        object.__setattr__(self, "method", CalibMethod(self.method))
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must be in (50, 100], got {self.percentile}")

    @classmethod
    def chosen(cls, method: str | None = None, percentile: float | None = None,
               ignored: tuple[str, ...] = ()) -> "QDQConfig":
        """The defaults, with the values a user gave (None: not given)."""
        given = {"method": method, "percentile": percentile, "ignored": tuple(ignored) or None}
        return cls(**{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict:
        return {"method": self.method.value, "percentile": self.percentile, "bins": self.bins,
                "quantize_residuals": self.quantize_residuals,
                "quantize_outputs": self.quantize_outputs, "ignored": list(self.ignored),
                "weight_bits": self.weight_bits}



@dataclass
class QDQPlan:
    """Which tensors get Q/DQ, on which edges, and how weights are quantized."""

    weights: list[tuple[str, int, int]] = field(default_factory=list)  # (node name, input index, axis)
    edges: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))  # tensor -> (node, idx)
    shared: list[list[str]] = field(default_factory=list)  # tensors that must share one scale (Concat)
    residuals: list[str] = field(default_factory=list)  # Add nodes whose residual input is quantized

    @property
    def activations(self) -> list[str]:
        return list(self.edges)


def weight_axis(node, index: int) -> int:
    """The output-channel axis of a weight initializer feeding ``node`` at input ``index``."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans = {a.name: a.i for a in node.attribute}
        return (0 if trans.get("transB", 0) else 1) if index == 1 else (1 if trans.get("transA", 0) else 0)
    return 0 if index == 0 else -1  # MatMul: left operand's rows, right operand's columns


def plan_qdq(model, quantize_residuals: bool = True, ignored: tuple[str, ...] = (),
             quantize_outputs: bool = False) -> QDQPlan:
    """What to quantize; the nodes named in ``ignored`` stay float, with no Q/DQ kept only for their sake."""
    graph = model.graph
    skip = set(resolve(ignored, onnx_layers(model, WEIGHTED)))
    inits = {i.name for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers = defaultdict(list)
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers[name].append((n, i))
    plan = QDQPlan()
    for n in graph.node:
        if n.op_type not in WEIGHTED or n.name in skip:
            continue
        for i, name in enumerate(n.input[:2]):
            if name in inits:
                # QLinearMatMul takes one scale for its left operand: per channel there, ONNX Runtime runs it in float
                per_tensor = quantize_outputs and n.op_type == "MatMul" and i == 0
                plan.weights.append((n.name, i, None if per_tensor else weight_axis(n, i)))
            else:
                plan.edges[name].append((n.name, i))
    for n in graph.node:
        if n.op_type == "Concat" and all(c.op_type in WEIGHTED and c.name not in skip for c, _ in consumers[n.output[0]]):
            group = [name for name in n.input if name not in inits]
            for i, name in enumerate(n.input):
                if name not in inits:
                    plan.edges[name].append((n.name, i))
            plan.shared.append(group + [n.output[0]])
    if quantize_residuals:
        for n in graph.node:
            if n.op_type != "Add" or any(name in inits for name in n.input):
                continue
            # The branch TensorRT fuses is a Conv output read only by this Add; the other input is the
            # residual (skip) tensor, which also feeds the next block.
            fusable = [producer.get(name) is not None and producer[name].op_type == "Conv"
                       and producer[name].name not in skip and len(consumers[name]) == 1 for name in n.input]
            if len(n.input) == 2 and sum(fusable) >= 1 and not all(fusable):
                index = fusable.index(False)
                plan.edges[n.input[index]].append((n.name, index))
                plan.residuals.append(n.name)
    if quantize_outputs:
        outputs = {o.name for o in graph.output}
        for n in graph.node:
            if n.op_type in WEIGHTED and n.name not in skip and n.output[0] not in outputs:
                # every reader goes through the one Q/DQ, so the op's only consumer is the Q ONNX Runtime fuses
                taken = set(plan.edges.get(n.output[0], []))
                plan.edges[n.output[0]].extend(e for c, i in consumers[n.output[0]] if (e := (c.name, i)) not in taken)
    return plan


def _scalar(name: str, value, dtype):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _quantize_weights(model, plan: QDQPlan, qmax: int) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    done: dict[tuple[str, int], str] = {}
    new_nodes = []
    for node_name, index, axis in plan.weights:
        node = nodes[node_name]
        source = node.input[index]
        w = numpy_helper.to_array(inits[source]).astype(np.float32)
        axis = None if axis is None else axis % w.ndim  # None: one scale for the whole tensor
        key = (source, axis)
        if key not in done:
            reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
            amax = np.abs(w).max(axis=reduce_axes)
            scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
            shape = [1] * w.ndim
            if axis is not None:
                shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
            base = f"{source}_int8"
            graph.initializer.extend([numpy_helper.from_array(q, base), _scalar(f"{base}_scale", scale, np.float32),
                                      _scalar(f"{base}_zp", np.zeros_like(scale, np.int8), np.int8)])
            per_axis = {} if axis is None else {"axis": axis}
            new_nodes.append(helper.make_node("DequantizeLinear", [base, f"{base}_scale", f"{base}_zp"],
                                              [f"{source}_dq"], name=f"{source}_DequantizeLinear", **per_axis))
            done[key] = f"{source}_dq"
        node.input[index] = done[key]
    graph.node.extend(new_nodes)


def _insert_activation_qdq(model, plan: QDQPlan, amax: dict[str, float]) -> None:
    from onnx import helper

    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    for tensor, edges in plan.edges.items():
        scale = max(amax[tensor], 1e-8) / QMAX
        stem = tensor.replace("/", "_")
        graph.initializer.extend([_scalar(f"{stem}_scale", scale, np.float32), _scalar(f"{stem}_zp", 0, np.int8)])
        graph.node.extend([
            helper.make_node("QuantizeLinear", [tensor, f"{stem}_scale", f"{stem}_zp"], [f"{stem}_q"],
                             name=f"{stem}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{stem}_q", f"{stem}_scale", f"{stem}_zp"], [f"{stem}_dqa"],
                             name=f"{stem}_DequantizeLinear"),
        ])
        for node_name, index in edges:
            nodes[node_name].input[index] = f"{stem}_dqa"


def drop_unused_initializers(model) -> None:
    used = {name for n in model.graph.node for name in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def tensor_types(model) -> dict[str, int]:
    """Every tensor's ONNX element type (initializers, inputs, outputs, computed), inferred anew: a converter may
    leave behind value_info with the types it replaced."""
    import onnx

    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]
    g = onnx.shape_inference.infer_shapes(fresh).graph
    types = {i.name: i.data_type for i in g.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)})
    return types


def toposort(model) -> None:
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        remaining = []
        for n in pending:
            if all(name in ready for name in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                remaining.append(n)
        if len(remaining) == len(pending):
            raise RuntimeError("Q/DQ insertion produced a cycle")  # a bug, not bad input
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


@dataclass(frozen=True)
class QDQSummary:
    weights: int
    activations: int
    concat_groups: int
    residuals: int
    method: str


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: np.ndarray, config: QDQConfig = QDQConfig()) -> QDQSummary:
    """Calibrate the FP32 ONNX at ``fp32_path`` and write its TensorRT-rule Q/DQ form to ``out_path``."""
    import onnx

    model = onnx.load(str(fp32_path))
    plan = plan_qdq(model, config.quantize_residuals, config.ignored, config.quantize_outputs)
    need_hist = config.method is not CalibMethod.max
    raw_amax, hist = collect_histograms(model, plan.activations, calibration, config.bins, need_histograms=need_hist)
    # Graph inputs are normalised images, bounded by construction: clipping them only loses signal.
    inputs = {i.name for i in model.graph.input}
    amax = {t: raw_amax[t] if t in inputs else amax_from_histogram(hist[t], raw_amax[t], config.method, config.percentile)
            for t in plan.activations}
    for group in plan.shared:  # one scale per Concat: its inputs and output
        shared = max(amax.get(t, raw_amax.get(t, 0.0)) for t in group)
        for t in group:
            if t in amax:
                amax[t] = shared
    _quantize_weights(model, plan, weight_qmax(config.weight_bits))
    _insert_activation_qdq(model, plan, amax)
    drop_unused_initializers(model)
    toposort(model)
    onnx.checker.check_model(model)
    with atomic_file(out_path) as tmp:
        onnx.save(model, str(tmp))
    return QDQSummary(len(plan.weights), len(plan.edges), len(plan.shared), len(plan.residuals), config.method.value)


def weight_bits_of(model) -> int:
    """The bits a Q/DQ graph's signed weights use: 7 when every int8 initializer a DequantizeLinear reads lies in
    [-64, 63] (``QDQConfig.weight_bits=7``), else 8. A graph with no signed weights counts as 8."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == 3]  # int8
    weights = [w for w in weights if w.size > 1]  # a scalar is a quantized constant, not a weight
    return 7 if weights and all(-64 <= w.min() and w.max() <= 63 for w in weights) else 8


def to_unsigned_activations(model):
    """The same Q/DQ graph with uint8 activations (zero point 128): exact, since q_u8 = q_s8 + 128.

    ONNX Runtime's x86 integer kernels take u8 activations x s8 weights; TensorRT needs the signed form,
    so this copy is for ONNX Runtime only. Weights stay signed, except a weight on the left of a MatMul
    (``P @ x``), which meets u8 activations and so becomes u8 too.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    for n in out.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[0] not in inits:
            _shift_to_uint8(inits, n.input[2])
        dq = producer.get(n.input[0]) if n.op_type == "MatMul" else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            # A weight on the left (P @ x) meets u8 activations on the right: ONNX Runtime has no s8 x u8
            # kernel, so it becomes u8 too (u8 x u8 runs in integers; s8 x u8 would run in float).
            _shift_to_uint8(inits, dq.input[0])
            _shift_to_uint8(inits, dq.input[2])
    return out


def _shift_to_uint8(inits, name: str) -> None:
    """Rewrite the int8 initializer ``name`` as uint8 + 128 (zero points and quantized values alike)."""
    from onnx import numpy_helper

    value = numpy_helper.to_array(inits[name])
    if value.dtype == np.int8:
        inits[name].CopyFrom(numpy_helper.from_array((value.astype(np.int16) + 128).astype(np.uint8), name))
