"""Check any ONNX against TensorRT's explicit-quantization rules; every finding names its node and rule.

Errors are what TensorRT refuses to build or would compute differently from the graph (uint8 or
asymmetric Q/DQ, per-channel activation scales, per-channel weight scales on the wrong axis, a
QuantizeLinear that no DequantizeLinear reads). Warnings are what only costs speed or leaves a layer in
float (unquantized inputs or weights, per-tensor weights, Concat inputs on different scales, Q/DQ before
an op TensorRT runs in float, an unfused residual Add): placements vendor tools such as ModelOpt make on
purpose. ``edgesmlp lint-qdq`` exits 1 when there is an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesmlp.errors import InputError
from edgesmlp.quantization.qdq import WEIGHTED, tensor_types, weight_axis

# Ops that can consume a dequantized tensor and still run in INT8 (or move data without arithmetic).
INT8_CONSUMERS = {
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Relu", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Pad",
    "Resize", "Identity", "QuantizeLinear",
}


_GUIDE = "TensorRT Developer Guide, Working with Quantized Types"
# rule -> (severity, where TensorRT's documentation says so)
RULES = {
    "unsigned-int8": ("error", f"{_GUIDE}: Quantization Schemes (signed INT8 only)"),
    "zero-point": ("error", f"{_GUIDE}: Quantization Schemes (symmetric: zero point 0)"),
    "per-channel-activation": ("error", f"{_GUIDE}: Quantization Schemes (activations per tensor)"),
    "weight-axis": ("error", f"{_GUIDE}: Quantization Schemes (per-channel on the output-channel axis)"),
    "dangling-qdq": ("error", f"{_GUIDE}: Q/DQ Interpretation (a Q feeds DQs; a DQ reads a Q or an int8 constant)"),
    "opset": ("error", "ONNX operators: QuantizeLinear/DequantizeLinear (per-axis from opset 13, FLOAT16 scales "
                       "from opset 19)"),
    "weight-not-quantized": ("warning", f"{_GUIDE}: Q/DQ Layer-Placement Recommendations (quantize weighted ops)"),
    "input-not-quantized": ("warning", f"{_GUIDE}: Q/DQ Layer-Placement Recommendations (quantize all inputs)"),
    "per-tensor-weight": ("warning", f"{_GUIDE}: Quantization Schemes (per-channel weights keep accuracy)"),
    "concat-scale": ("warning", f"{_GUIDE}: Q/DQ Layer-Placement Recommendations (one scale avoids requantizing)"),
    "qdq-before-float-op": ("warning", f"{_GUIDE}: Q/DQ Layer-Placement Recommendations (ops that stay in float)"),
    "residual-not-quantized": ("warning", f"{_GUIDE}: Q/DQ Layer-Placement Recommendations (residual Add fusion)"),
}


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    @property
    def severity(self) -> str:  # error or warning, from the rule
        return RULES[self.rule][0]

    @property
    def reference(self) -> str:
        return RULES[self.rule][1]

    def to_dict(self) -> dict:
        return {"severity": self.severity, "rule": self.rule, "node": self.node, "message": self.message,
                "reference": self.reference}

    def __str__(self) -> str:
        return f"{self.severity:7s} {self.rule:22s} {self.node}: {self.message}"


def load_onnx(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the .onnx model to check")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for garbage
        raise InputError(f"{path} is not a readable ONNX model ({type(e).__name__}); export it again") from None
    if not model.graph.node:
        raise InputError(f"{path} has an empty graph: it is not an ONNX model edgesmlp can check")
    return model


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:  # Constant nodes count as initializers
            if n.op_type == "Constant" and n.attribute:
                self.inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = defaultdict(list)
        for n in model.graph.node:
            for i, name in enumerate(n.input):
                self.consumers[name].append((n, i))

    def produced_by(self, name: str, op: str) -> bool:
        return name in self.producer and self.producer[name].op_type == op

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant, or one passed through Cast/Identity (fp16 exports cast their weights)."""
        while name not in self.inits and name in self.producer and self.producer[name].op_type in ("Cast", "Identity"):
            name = self.producer[name].input[0]
        return name in self.inits

    def weight_dq(self, name: str):
        """The DequantizeLinear that makes input ``name`` an INT8 weight (int8 constant, or Q of a constant), or None."""
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        source = dq.input[0]
        if source in self.inits:
            return dq
        q = self.producer.get(source)
        return dq if q is not None and q.op_type == "QuantizeLinear" and self.is_constant(q.input[0]) else None

    def scale_of(self, dq_output: str):
        node = self.producer.get(dq_output)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        return self.inits.get(node.input[1])


def _check_qdq_node(g: _Graph, n) -> list[Violation]:
    out = []
    zp = g.inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if zp is None and not (len(n.input) > 2 and n.input[2]) and n.op_type == "QuantizeLinear":
        out.append(Violation("unsigned-int8", n.name, "no zero point, so ONNX defaults to uint8; TensorRT "
                             "takes only signed INT8: add an int8 zero point of 0"))
    elif zp is not None:
        if zp.dtype != np.int8:
            out.append(Violation("unsigned-int8", n.name, f"zero point is {zp.dtype}; TensorRT takes only "
                                 "signed int8"))
        if np.any(zp != 0):
            out.append(Violation("zero-point", n.name, "non-zero zero point; TensorRT's INT8 is symmetric "
                                 "(zero point 0)"))
    if n.op_type == "QuantizeLinear":
        scale = g.inits.get(n.input[1])
        # A QuantizeLinear of a constant is a weight quantizer (TensorRT folds Q(W) -> DQ into INT8 weights):
        # per channel is right there.
        if scale is not None and scale.size > 1 and not g.is_constant(n.input[0]):
            out.append(Violation("per-channel-activation", n.name, "activation scale is per channel; "
                                 "TensorRT needs one scale per activation tensor"))
        users = g.consumers.get(n.output[0], [])
        if not users or any(c.op_type != "DequantizeLinear" for c, _ in users):
            out.append(Violation("dangling-qdq", n.name, "QuantizeLinear must feed DequantizeLinear nodes only"))
    else:
        source = n.input[0]
        if source not in g.inits and not g.produced_by(source, "QuantizeLinear"):
            out.append(Violation("dangling-qdq", n.name, "DequantizeLinear reads neither a QuantizeLinear "
                                 "nor a quantized initializer"))
        if source not in g.inits:
            for consumer, _ in g.consumers.get(n.output[0], []):
                if consumer.op_type not in INT8_CONSUMERS:
                    out.append(Violation("qdq-before-float-op", n.name, f"feeds {consumer.op_type} "
                                         f"'{consumer.name}', which TensorRT cannot run in INT8; the Q/DQ pair blocks "
                                         "fusion: move it to the input of the next Conv/MatMul"))
    return out


def _check_weighted(g: _Graph, n) -> list[Violation]:
    out = []
    for i, name in enumerate(n.input[:2]):
        dq = g.weight_dq(name)
        if g.is_constant(name) and (name not in g.inits or g.inits[name].dtype.kind == "f"):
            out.append(Violation("weight-not-quantized", n.name, f"weight '{name}' is float, so TensorRT runs this "
                                 f"{n.op_type} in float; give it a per-channel DequantizeLinear of int8 values"))
        elif dq is not None:
            scale = g.inits.get(dq.input[1])
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            shape = _weight_shape(g, dq)
            if scale is None or shape is None:
                continue
            want = weight_axis(n, i) % len(shape)
            if scale.size == 1 and shape[want] > 1:
                out.append(Violation("per-tensor-weight", n.name, f"weight '{dq.input[0]}' has one scale; "
                                     "per-channel scales on the output axis keep more accuracy"))
            elif scale.size > 1 and axis % len(shape) != want:
                out.append(Violation("weight-axis", n.name, f"weight scales run along axis {axis}; the "
                                     f"output-channel axis of this {n.op_type} input is {want}"))
        elif not g.produced_by(name, "DequantizeLinear"):
            out.append(Violation("input-not-quantized", n.name, f"input '{name}' is float, so TensorRT "
                                 f"runs this {n.op_type} in float"))
    return out


def _weight_shape(g: _Graph, dq) -> tuple[int, ...] | None:
    source = dq.input[0]
    if source in g.inits:
        return g.inits[source].shape
    name = g.producer[source].input[0]  # the Q's constant, through any Cast
    while name not in g.inits and name in g.producer:
        name = g.producer[name].input[0]
    return g.inits[name].shape if name in g.inits else None


def _check_concat(g: _Graph, n) -> list[Violation]:
    scales = [g.scale_of(name) for name in n.input]
    quantized = [s for s in scales if s is not None]
    if not quantized:
        return []
    if len(quantized) != len(scales):
        return [Violation("concat-scale", n.name, "some inputs are quantized and some are not; quantize "
                          "all of them with one scale")]
    if any(not np.allclose(s, quantized[0]) for s in quantized[1:]):
        values = ", ".join(f"{float(np.ravel(s)[0]):.4g}" for s in quantized)
        return [Violation("concat-scale", n.name, f"inputs have different scales ({values}); TensorRT "
                          "requantizes them to one scale before the Concat: give them one scale")]
    return []


def _check_residual(g: _Graph, n) -> list[Violation]:
    if n.op_type != "Add" or len(n.input) != 2 or any(name in g.inits for name in n.input):
        return []
    fusable = [g.produced_by(name, "Conv") and len(g.consumers[name]) == 1 for name in n.input]
    if any(fusable) and not all(fusable):
        other = n.input[fusable.index(False)]
        if not g.produced_by(other, "DequantizeLinear"):
            return [Violation("residual-not-quantized", n.name, f"residual input '{other}' is float, so "
                              "TensorRT cannot fuse this Add into the Conv before it")]
    return []


def is_qdq(model) -> bool:
    """Whether an ONNX graph holds QuantizeLinear/DequantizeLinear nodes: what makes it an INT8 graph at all."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def require_qdq(path: Path) -> None:
    """Refuse, naming the file, an ONNX that is read as INT8 but holds no Q/DQ node (a float graph in its place)."""
    import onnx

    if not is_qdq(onnx.load(str(path), load_external_data=False)):
        raise InputError(f"{path} holds no QuantizeLinear/DequantizeLinear node, so it is no INT8 graph: re-run "
                         "`edgesmlp quantize`, or restore the file")


def lint_model(model) -> list[Violation]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = model.graph.node
    if not is_qdq(model):
        raise InputError("the model has no QuantizeLinear/DequantizeLinear nodes: it is not a Q/DQ model (quantize "
                         "it first, e.g. edgesmlp quantize --target jetson)")
    g = _Graph(model)
    found = []
    if opset < 13:
        found.append(Violation("opset", "(model)", f"opset {opset}: per-channel Q/DQ needs opset 13 or newer"))
    elif opset < 19 and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1
                            and n.input[1] in g.inits and g.inits[n.input[1]].dtype == np.float16 for n in nodes):
        found.append(Violation("opset", "(model)", f"opset {opset}: FLOAT16 Q/DQ scales need opset 19 or newer"))
    for n in nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found += _check_qdq_node(g, n)
        elif n.op_type in WEIGHTED:
            found += _check_weighted(g, n)
        elif n.op_type == "Concat":
            found += _check_concat(g, n)
        found += _check_residual(g, n)
    return found


def lint_qdq(path: str | Path) -> list[Violation]:
    return lint_model(load_onnx(path))


def float_types(model) -> dict[str, int]:
    """How many float tensors (initializers and computed) the graph types FLOAT, FLOAT16 or BFLOAT16: on strongly
    typed TensorRT (10.12 and later) each runs in that type."""
    import onnx

    names = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "FLOAT16", onnx.TensorProto.BFLOAT16: "BFLOAT16"}
    counts: dict[str, int] = {}
    for t in tensor_types(model).values():
        if t in names:
            counts[names[t]] = counts.get(names[t], 0) + 1
    return counts
