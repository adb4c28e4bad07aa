"""Where INT8 loses accuracy: each quantized layer left in float, one at a time (on either target, through
``PartialINT8``), and the cosine between FP32 and INT8 activations block by block (what Polygraphy's "mark
all" comparison shows).

A layer's sensitivity is measured on images the calibration never saw, as the mean KL divergence of the
softmax from FP32's (a smooth signal that ranks layers where top-1 flips on a few thousand images
cannot): with only that layer quantized (the ranking), and with only that layer left in float (how much
of full INT8's error it removes, and the top-1 agreement gained).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from edgesmlp.quantization.partial import PartialINT8, copy_model


@dataclass(frozen=True)
class Divergence:
    kl: float  # mean KL(softmax FP32 || softmax INT8), nats
    agreement: float  # % of images with the same top class as FP32
    expected_agreement: float = 100.0  # the agreement INT8's margin noise predicts (see expected_agreement)


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # the node in the target's graph
    module: str  # the deploy-form module it came from (e.g. channel_mix.3.fc2), where the exporter recorded it
    op: str
    alone_kl: float  # with only this layer quantized: the damage it does by itself (what the ranking sorts by)
    kl: float | None = None  # with only this layer in float (None: not measured)
    agreement: float | None = None
    kl_gain: float | None = None  # full INT8's KL minus ``kl``: the error leaving it in float removes
    agreement_gain: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def divergence(reference: np.ndarray, logits: np.ndarray) -> Divergence:
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p, q = log_softmax(reference.astype(np.float64)), log_softmax(logits.astype(np.float64))
    kl = float(np.mean(np.sum(np.exp(p) * (p - q), axis=1)))
    agreement = float(np.mean(reference.argmax(1) == logits.argmax(1)) * 100)
    return Divergence(kl, agreement, expected_agreement(reference, logits))


def expected_agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    """The top-1 agreement a noise model of INT8 predicts, in %: smooth where counting flips is not.

    On a few hundred images an INT8 model that flips 0.5% of a large set may flip none, so counting flips
    says nothing about budgets near 99.5%. Every image, flipped or not, shows how much INT8 moves its FP32
    top-2 margin; with that change's spread ``s`` over the images, an image of margin ``m`` flips with
    probability Phi(-m / s), and the mean over images predicts the disagreement, even on calibration images
    that flip none (benchmarks/results/accuracy_control.md).
    """
    rows = np.arange(len(reference))
    top = reference.argmax(1)
    others = reference.astype(np.float64).copy()
    others[rows, top] = -np.inf
    second = others.argmax(1)
    margin = reference[rows, top] - reference[rows, second]
    change = (logits[rows, top] - logits[rows, second]) - margin
    spread = float(np.std(change))
    if len(reference) < 2 or spread == 0.0:
        return float(np.mean(top == logits.argmax(1)) * 100)
    flips = [0.5 * math.erfc(m / (spread * math.sqrt(2))) for m in margin.astype(np.float64)]
    return float(100 - np.mean(flips) * 100)


def per_layer(graph: PartialINT8, x: np.ndarray, progress=None, reference: np.ndarray | None = None,
              in_float: bool = True) -> tuple[Divergence, list[LayerSensitivity]]:
    """Full INT8's divergence from FP32 on ``x``, and every quantized layer's sensitivity, most sensitive first.

    Layers are ranked by the KL divergence of the model with only that layer quantized: the damage it does
    by itself. Leaving only that layer in float (``in_float``, also measured unless False) ranks worse when
    the error is spread over many layers: keeping the top 8 of 41 in float on the digits model trained 4
    epochs left KL 1.2e-4 ranked by the first, 2.2e-4 by the second (OpenVINO; Q/DQ 1.45e-4 and 1.67e-4,
    benchmarks/results/accuracy_control.md).
    ``progress()`` is called after each layer; ``reference`` (FP32 logits on ``x``) saves a run when known.
    """
    reference = graph.reference(x) if reference is None else reference
    base = divergence(reference, graph.logits(x))
    every = frozenset(layer.name for layer in graph.layers)
    rows = []
    for layer in graph.layers:
        alone = divergence(reference, graph.logits(x, every - {layer.name})).kl
        row = LayerSensitivity(layer.name, layer.module, layer.op, alone)
        if in_float:
            got = divergence(reference, graph.logits(x, frozenset([layer.name])))
            row = replace(row, kl=got.kl, agreement=got.agreement, kl_gain=base.kl - got.kl,
                          agreement_gain=got.agreement - base.agreement)
        rows.append(row)
        if progress is not None:
            progress()
    return base, sorted(rows, key=lambda r: r.alone_kl, reverse=True)


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Mean over images of the cosine between two activations."""
    u, v = u.reshape(len(u), -1).astype(np.float64), v.reshape(len(v), -1).astype(np.float64)
    return float((np.sum(u * v, axis=1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)).mean())


def block_cosines(fp32, qdq, x: np.ndarray, threads: int = 0) -> list[tuple[str, float]]:
    """Cosine between FP32 and INT8 at each residual sum (the end of each block's branches), in graph order.
    ``fp32`` and ``qdq`` are loaded ONNX models; the marked copies are made here."""
    import onnx

    fp32, qdq = copy_model(fp32), copy_model(qdq)
    inits = {i.name for i in fp32.graph.initializer}
    marks = [n.output[0] for n in fp32.graph.node if n.op_type == "Add" and not any(i in inits for i in n.input)
             and len(n.input) == 2]
    found = {o for n in qdq.graph.node for o in n.output}
    marks = [m for m in marks if m in found]
    for model in (fp32, qdq):
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(m) for m in marks)
    a = _run(fp32, x, threads, marks)  # same session kind as the Q/DQ graph: cosines see quantization only
    b = _run(qdq, x, threads, marks)
    return [(name, cosine(u, v)) for name, u, v in zip(marks, a, b)]


def _run(model, x: np.ndarray, threads: int, outputs: list[str], batch: int = 16) -> list[np.ndarray]:
    from edgesmlp.runtimes.onnxruntime import emulation_session

    session = emulation_session(model.SerializeToString(), threads)
    name = session.get_inputs()[0].name
    chunks = [session.run(outputs, {name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
