"""Where INT8 loses accuracy in a Q/DQ graph: each weighted layer left in float, one at a time, and the
cosine between FP32 and INT8 activations block by block (what Polygraphy's "mark all" comparison shows).

A layer's sensitivity is how much leaving it alone in float moves the INT8 model back toward FP32, on
images the calibration never saw: the drop of the mean KL divergence of the softmax (a smooth signal
that ranks layers where top-1 flips on a few thousand images cannot), and the top-1 agreement gained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import numpy as np

from edgesmlp.quantize.qdq import WEIGHTED


@dataclass(frozen=True)
class Divergence:
    kl: float  # mean KL(softmax FP32 || softmax INT8), nats
    agreement: float  # % of images with the same top class as FP32


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # the ONNX node
    module: str  # the deploy-form module it came from (e.g. channel_mix.3.fc2), where the exporter recorded it
    op: str
    kl: float  # with only this layer in float
    agreement: float
    kl_gain: float  # full INT8's KL minus this: how much of the error this layer carries
    agreement_gain: float

    def to_dict(self) -> dict:
        return asdict(self)


def divergence(reference: np.ndarray, logits: np.ndarray) -> Divergence:
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p, q = log_softmax(reference.astype(np.float64)), log_softmax(logits.astype(np.float64))
    kl = float(np.mean(np.sum(np.exp(p) * (p - q), axis=1)))
    agreement = float(np.mean(reference.argmax(1) == logits.argmax(1)) * 100)
    return Divergence(kl, agreement)


def quantized_layers(qdq) -> list:
    """The Conv/MatMul/Gemm nodes of a Q/DQ model that read at least one dequantized input."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    return [n for n in qdq.graph.node if n.op_type in WEIGHTED
            and any(name in producer and producer[name].op_type == "DequantizeLinear" for name in n.input)]


def with_layer_in_float(qdq, fp32, layer: str):
    """A copy of ``qdq`` where ``layer`` reads float inputs: each activation before its Q, each weight as in ``fp32``."""
    out = _copy(qdq)
    producer = {o: n for n in out.graph.node for o in n.output}
    float_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in out.graph.initializer}
    node = next(n for n in out.graph.node if n.name == layer)
    for index, name in enumerate(node.input):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        source = producer.get(dq.input[0])
        if source is not None and source.op_type == "QuantizeLinear":  # an activation: take it before the Q
            node.input[index] = source.input[0]
        elif name.endswith("_dq") and name[:-3] in float_inits:  # a weight: the FP32 model's initializer
            if name[:-3] not in have:
                out.graph.initializer.append(float_inits[name[:-3]])
                have.add(name[:-3])
            node.input[index] = name[:-3]
    return out


def module_path(node, weight_first: bool = False) -> str:
    """The PyTorch module an exported node came from, read off the exporter's ``namespace`` metadata (each
    segment holds the full path); a deploy-form MatMul is named by its mixing axis."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    parts = [segment.split(":")[0].strip() for segment in namespace.split("/")[1:-1]]
    path = parts[-1] if parts else node.name
    if node.op_type == "MatMul" and parts:
        path += ".mix.along_h" if weight_first else ".mix.along_w"
    return path


def _copy(model):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _session(model, threads: int):
    from edgesmlp.runtimes.onnxruntime import cpu_session

    return cpu_session(model.SerializeToString(), threads)


def _run(session, x: np.ndarray, batch: int = 16, outputs: list[str] | None = None) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    chunks = [session.run(outputs, {name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def per_layer(fp32, qdq, x: np.ndarray, threads: int = 0, progress=None) -> tuple[Divergence, list[LayerSensitivity]]:
    """Full INT8's divergence from FP32 on ``x``, and every quantized layer's sensitivity, most sensitive first.
    ``fp32`` and ``qdq`` are loaded ONNX models (left unchanged); ``progress()`` is called after each layer."""
    reference = _run(_session(fp32, threads), x)[0]
    base = divergence(reference, _run(_session(qdq, threads), x)[0])
    rows = []
    layers = quantized_layers(qdq)
    inits = {i.name for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    for i, node in enumerate(layers):
        first = producer.get(node.input[0])
        weight_first = first is not None and first.op_type == "DequantizeLinear" and first.input[0] in inits
        got = divergence(reference, _run(_session(with_layer_in_float(qdq, fp32, node.name), threads), x)[0])
        rows.append(LayerSensitivity(node.name, module_path(node, weight_first), node.op_type, got.kl, got.agreement,
                                     base.kl - got.kl, got.agreement - base.agreement))
        if progress is not None:
            progress()
    return base, sorted(rows, key=lambda r: r.kl_gain, reverse=True)


def block_cosines(fp32, qdq, x: np.ndarray, threads: int = 0) -> list[tuple[str, float]]:
    """Cosine between FP32 and INT8 at each residual sum (the end of each block's branches), in graph order.
    ``fp32`` and ``qdq`` are loaded ONNX models; the marked copies are made here."""
    import onnx

    fp32, qdq = _copy(fp32), _copy(qdq)
    inits = {i.name for i in fp32.graph.initializer}
    marks = [n.output[0] for n in fp32.graph.node if n.op_type == "Add" and not any(i in inits for i in n.input)
             and len(n.input) == 2]
    found = {o for n in qdq.graph.node for o in n.output}
    marks = [m for m in marks if m in found]
    for model in (fp32, qdq):
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(m) for m in marks)
    a = _run(_session(fp32, threads), x, outputs=marks)
    b = _run(_session(qdq, threads), x, outputs=marks)
    cosines = []
    for name, u, v in zip(marks, a, b):
        u, v = u.reshape(len(u), -1).astype(np.float64), v.reshape(len(v), -1).astype(np.float64)
        cos = np.sum(u * v, axis=1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        cosines.append((name, float(cos.mean())))
    return cosines
