"""FP16-typed ONNX for strongly typed TensorRT: the same graph, float tensors in FLOAT16.

A strongly typed TensorRT network (10.12 and later: ``--stronglyTyped``) computes each tensor in the type the
ONNX gives it, so an FP32-typed graph builds an FP32 engine, and a Q/DQ graph runs everything between its INT8
layers in FP32. :func:`to_fp16` retypes a graph the way ModelOpt's ONNX PTQ (``high_precision_dtype="fp16"``) and
AutoCast do:

* every float initializer, Q/DQ scale and computed tensor becomes FLOAT16, so the INT8 layers, GELUs, norms,
  residual sums and the layers a budget keeps in float all run in FP16 (Q/DQ scales in FP16 need opset 19);
* a node stays FP32 where FP16 would overflow or lose the model: any float tensor it reads or writes reaches
  more than ``data_max`` (AutoCast's default, 512: 128x below FP16's largest value, 65504) on the calibration
  images, or an initializer it reads does not fit FP16 at all. The LayerNorm variance (a square, then a mean)
  is the usual case: deviations past 22.6 square past 512. Each such node is named with its reason;
* a Q/DQ pair takes the precision of the layer it feeds, so a Cast never sits between a DequantizeLinear and
  its Conv or MatMul (TensorRT fuses only DQ -> op);
* the graph input and output stay FLOAT (a Cast after the input and before the output), so callers feed and
  read float32 as before.

The result is checked with ``onnx.checker`` (full type check) and shape inference.

ONNX Runtime's CPU provider has few FP16 kernels: it runs an FP16 graph's ops in FP32 and drops the casts
between them, so FP16 rounding and overflow never happen there. :func:`emulate_fp16` makes the FP32 graph that
rounds every FLOAT16 tensor of an FP16-typed graph to FP16 (a Cast pair ONNX Runtime keeps) and computes each op
in FP32, as TensorRT's FP16 kernels accumulate: the accuracy proxy for the strongly typed engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesmlp.quantization.qdq import drop_unused_initializers, tensor_types, toposort

DATA_MAX = 512.0  # AutoCast's data_max: a tensor past this on calibration images keeps its node in FP32
FP16_MAX = 65504.0  # FP16's largest finite value (AutoCast's init_max)
OPSET = 19  # QuantizeLinear / DequantizeLinear take FLOAT16 scales from opset 19
RANGE_IMAGES = 64  # calibration images whose ranges decide: 512 leaves 128x to FP16's overflow, so more move nothing


@dataclass(frozen=True)
class FP16Typing:
    """What :func:`to_fp16` did: the nodes kept in FP32 (name -> why), the Casts it added, the FP16 tensors."""

    fp32_nodes: dict[str, str] = field(default_factory=dict)
    casts: int = 0
    float16_initializers: int = 0
    data_max: float = DATA_MAX

    def to_dict(self) -> dict:
        return {"data_max": self.data_max, "fp32_nodes": dict(self.fp32_nodes), "casts": self.casts,
                "float16_initializers": self.float16_initializers}


def float_ranges(model, calibration: np.ndarray) -> dict[str, float]:
    """max |x| of every FLOAT tensor a node computes, over the first ``RANGE_IMAGES`` calibration images (every
    tensor is read out of ONNX Runtime for each image: at sMLPNet-T's size, about a second an image on 2 cores)."""
    from onnx import TensorProto

    from edgesmlp.quantization.calibrate import collect_histograms

    types = tensor_types(model)
    computed = [o for n in model.graph.node for o in n.output if o and types.get(o) == TensorProto.FLOAT]
    amax, _ = collect_histograms(model, computed, calibration[:RANGE_IMAGES], need_histograms=False,
                                 label="Measuring FP16 ranges")
    return amax


def _precisions(model, types: dict[str, int], amax: dict[str, float], data_max: float):
    """Each node's precision ("fp16", "fp32", or None for nodes that touch no float tensor), and the reasons."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    reasons: dict[str, str] = {}
    precision: dict[str, str | None] = {}
    for n in graph.node:
        floats = [t for t in (*n.input, *n.output) if t and types.get(t) == TensorProto.FLOAT]
        if not floats:
            precision[n.name] = None
            continue
        precision[n.name] = "fp16"
        watched = [t for t in floats if t not in inits and t not in inputs]
        if n.op_type == "QuantizeLinear":  # it clips to its scale's range: only that range must fit
            watched = []
        if n.op_type == "DequantizeLinear" and n.output[0] not in amax and n.input[1] in inits:
            amax[n.output[0]] = 127 * float(np.abs(numpy_helper.to_array(inits[n.input[1]])).max())
        for t in watched:
            if amax.get(t, 0.0) > data_max:
                reasons[n.name] = f"'{t}' reaches {amax[t]:.4g} on the calibration images, over {data_max:g}"
                break
        for t in n.input:
            if t in inits and inits[t].data_type == TensorProto.FLOAT:
                value = numpy_helper.to_array(inits[t])
                if value.size and float(np.abs(value).max()) > FP16_MAX:
                    reasons[n.name] = f"initializer '{t}' holds {float(np.abs(value).max()):.4g}, past FP16's 65504"
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in inits:
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            if float(np.max(scale)) * 127 > FP16_MAX:
                reasons[n.name] = f"its range {float(np.max(scale)) * 127:.4g} does not fit FP16"
        if n.name in reasons:
            precision[n.name] = "fp32"
    consumers: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    # A Q/DQ pair takes the precision of what it feeds: no Cast between a DequantizeLinear and its layer.
    for op in ("DequantizeLinear", "QuantizeLinear"):
        for n in graph.node:
            if n.op_type == op and precision[n.name] == "fp16":
                readers = [c for o in n.output for c in consumers.get(o, [])]
                if any(precision.get(c.name) == "fp32" for c in readers):
                    precision[n.name] = "fp32"
                    reasons[n.name] = f"it feeds {next(c.name for c in readers if precision[c.name] == 'fp32')}, " \
                                      "which stays FP32"
    return precision, reasons


def to_fp16(model, calibration: np.ndarray, data_max: float = DATA_MAX, amax: dict[str, float] | None = None):
    """A FLOAT16-typed copy of the FLOAT ``model`` (a Q/DQ graph or a plain one) and its :class:`FP16Typing`.

    ``calibration`` (N, C, H, W) are the images whose tensor ranges decide which nodes stay FP32; ``amax`` (tensor
    -> max |x|, from :func:`float_ranges`) skips measuring them: a Q/DQ graph may take its FP32 graph's ranges, since
    quantization renames no computed tensor and a DequantizeLinear's output is bounded by its scale."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = _at_opset(model)
    types = tensor_types(model)
    computed = [o for n in model.graph.node if n.op_type != "DequantizeLinear" for o in n.output
                if types.get(o) == TensorProto.FLOAT]
    if amax is None or any(t not in amax for t in computed):  # e.g. a QAT graph, exported from other weights
        amax = {**(amax or {}), **float_ranges(model, calibration)}
    amax = dict(amax)
    precision, reasons = _precisions(model, types, amax, data_max)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, set[str]] = {}
    for n in graph.node:
        for t in n.input:
            users.setdefault(t, set()).add(precision[n.name] or "")
    # Float initializers: converted in place when only FP16 nodes read them, else an FP16 copy beside them.
    fp16_name: dict[str, str] = {}
    converted = 0
    for name, init in list(inits.items()):
        if init.data_type != TensorProto.FLOAT or "fp16" not in users.get(name, set()):
            continue
        value = numpy_helper.to_array(init).astype(np.float16)
        if users[name] == {"fp16"}:
            init.CopyFrom(numpy_helper.from_array(value, name))
            fp16_name[name] = name
        else:
            graph.initializer.append(numpy_helper.from_array(value, f"{name}_fp16"))
            fp16_name[name] = f"{name}_fp16"
        converted += 1
    # Which precision each computed float tensor has, and Casts where a reader differs.
    produced = {i.name: "fp32" for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    for n in graph.node:
        for o in n.output:
            if types.get(o) == TensorProto.FLOAT:
                produced[o] = precision[n.name]
    casts: dict[tuple[str, str], str] = {}
    new_nodes = []

    def cast(tensor: str, to: str) -> str:
        if (tensor, to) not in casts:
            out = f"{tensor}_to_{to}"
            casts[(tensor, to)] = out
            new_nodes.append(helper.make_node("Cast", [tensor], [out], name=f"{tensor}_cast_to_{to}",
                                              to=TensorProto.FLOAT16 if to == "fp16" else TensorProto.FLOAT))
        return casts[(tensor, to)]

    for n in graph.node:
        p = precision[n.name]
        if p is None:
            continue
        for i, t in enumerate(n.input):
            if p == "fp16" and t in fp16_name:
                n.input[i] = fp16_name[t]
            elif t in produced and produced[t] != p:
                n.input[i] = cast(t, p)
        if p == "fp16":
            _retype_attributes(n)
    # The graph output stays FLOAT: the FP16 tensor is renamed and cast back to the output's name.
    for out in graph.output:
        if produced.get(out.name) == "fp16":
            inner = f"{out.name}_fp16"
            for n in graph.node:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}_cast_to_fp32",
                                              to=TensorProto.FLOAT))
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    toposort(model)
    drop_unused_initializers(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model, FP16Typing(dict(reasons), len(new_nodes), converted, data_max)


def _retype_attributes(node) -> None:
    """A node computing in FP16 makes FP16: Cast to FLOAT becomes Cast to FLOAT16, a float Constant an FP16 one."""
    from onnx import TensorProto, numpy_helper

    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
            a.i = TensorProto.FLOAT16
        elif a.type == a.TENSOR and a.t.data_type == TensorProto.FLOAT:
            a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))


def _at_opset(model):
    """``model`` at opset 19 or later (FLOAT16 Q/DQ scales), converted by ONNX's own version converter."""
    import onnx

    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= OPSET:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    return onnx.version_converter.convert_version(model, OPSET)


def emulate_fp16(model):
    """An FP32 graph computing what the FP16-typed ``model`` means: FLOAT16 initializers hold their FP16 values as
    FLOAT, and every FLOAT16 tensor a node computes is rounded to FP16 (past 65504 it becomes inf, as in FP16) before
    anything reads it, but a DequantizeLinear's: TensorRT fuses it into the INT8 layer, whose INT32 sums are scaled
    in FP32 and never held in FP16. Graph inputs and outputs keep their types."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = tensor_types(model)
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for n in graph.node:
        if n.op_type == "Cast":
            to = next(a for a in n.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT16:
                to.i = TensorProto.FLOAT  # the rounding pair below makes it FP16 in value
            elif to.i == TensorProto.FLOAT and types.get(n.input[0]) == TensorProto.FLOAT16:
                n.op_type = "Identity"
                del n.attribute[:]
        else:
            for a in n.attribute:
                if a.type == a.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        nodes.append(n)
        for i, o in enumerate(n.output):
            if types.get(o) == TensorProto.FLOAT16 and n.op_type != "DequantizeLinear":
                n.output[i] = f"{o}_fp32"
                nodes += [helper.make_node("Cast", [f"{o}_fp32"], [f"{o}_half"], name=f"{o}_round", to=TensorProto.FLOAT16),
                          helper.make_node("Cast", [f"{o}_half"], [o], name=f"{o}_widen", to=TensorProto.FLOAT)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out, full_check=True)
    return out


def write_fp16(source, out_path, calibration: np.ndarray, data_max: float = DATA_MAX,
               amax: dict[str, float] | None = None) -> FP16Typing:
    """:func:`to_fp16` of the ONNX file ``source``, written atomically to ``out_path``."""
    import onnx

    from edgesmlp.artifacts import atomic_file

    model, typing = to_fp16(onnx.load(str(source)), calibration, data_max, amax)
    with atomic_file(out_path) as tmp:
        onnx.save(model, str(tmp))
    return typing
