"""An INT8 graph with chosen layers left in float, for the Q/DQ ONNX of the Jetson and ONNX Runtime targets.

Sensitivity and the budget search (``quantization/budget.py``) ask one question many times: what are the
logits when these layers read float inputs and everything else stays INT8? ``PartialINT8`` is that
question; ``QDQPartial`` answers it by rewiring a copy of the Q/DQ graph (each activation taken before its
QuantizeLinear, each weight from the FP32 model) and running it in ONNX Runtime. The OpenVINO answer is
``quantization/openvino_partial.py``. What ships is rebuilt with the chosen layers ignored by the quantizer
itself, so these rewired copies are only ever measured, never written.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgesmlp.quantization.layers import Layer, module_path
from edgesmlp.quantization.qdq import WEIGHTED


class PartialINT8(Protocol):
    layers: list[Layer]  # the quantized layers, in graph order

    def reference(self, x: np.ndarray) -> np.ndarray:
        """FP32 logits."""

    def logits(self, x: np.ndarray, keep_float: frozenset[str] = frozenset()) -> np.ndarray:
        """INT8 logits with the layers named in ``keep_float`` reading float inputs."""


def run_batched(run, x: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])


def quantized_nodes(qdq) -> list:
    """The Conv/MatMul/Gemm nodes of a Q/DQ model that read at least one dequantized input."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    return [n for n in qdq.graph.node if n.op_type in WEIGHTED
            and any(name in producer and producer[name].op_type == "DequantizeLinear" for name in n.input)]


def with_layers_in_float(qdq, fp32, layers) -> object:
    """A copy of ``qdq`` where each node named in ``layers`` reads float inputs: each activation before its Q
    (through a Concat that shares its scale), each weight as in ``fp32``, and the residual input of the Add
    it fuses into (a Q/DQ that exists only for that fusion) unquantized too."""
    out = copy_model(qdq)
    producer = {o: n for n in out.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in out.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    float_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in out.graph.initializer}

    def before_q(node, index: int) -> bool:
        """Rewire ``node.input[index]`` past a DQ(Q(x)) to x; True if it was an activation's Q/DQ."""
        dq = producer.get(node.input[index])
        source = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if source is None or source.op_type != "QuantizeLinear":
            return False
        node.input[index] = source.input[0]
        concat = producer.get(source.input[0])
        if concat is not None and concat.op_type == "Concat":
            for j in range(len(concat.input)):
                before_q(concat, j)
        return True

    names = set(layers)
    for node in (n for n in out.graph.node if n.name in names):
        for index, name in enumerate(node.input):
            if before_q(node, index):
                continue
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear" and name.endswith("_dq") and name[:-3] in float_inits:
                if name[:-3] not in have:  # a weight: the FP32 model's initializer
                    out.graph.initializer.append(float_inits[name[:-3]])
                    have.add(name[:-3])
                node.input[index] = name[:-3]
        for add in (c for c in consumers.get(node.output[0], []) if c.op_type == "Add"):
            for j in range(len(add.input)):
                before_q(add, j)
    return out


class QDQPartial:
    """``PartialINT8`` for a Q/DQ ONNX model and the FP32 ONNX it was calibrated from (both loaded)."""

    def __init__(self, fp32, qdq, threads: int = 0):
        self.fp32, self.qdq, self.threads = fp32, qdq, threads
        inits = {i.name for i in qdq.graph.initializer}
        producer = {o: n for n in qdq.graph.node for o in n.output}
        self.layers = []
        for node in quantized_nodes(qdq):
            first = producer.get(node.input[0])
            weight_first = first is not None and first.op_type == "DequantizeLinear" and first.input[0] in inits
            self.layers.append(Layer(node.name, module_path(node, weight_first), node.op_type))

    def _run(self, model, x: np.ndarray) -> np.ndarray:
        from edgesmlp.runtimes.onnxruntime import emulation_session

        # The fp32 graph runs in the same kind of session as the Q/DQ graphs, so that a graph with every layer
        # in float gives the reference bit for bit: KL then measures quantization alone, not kernel differences.
        session = emulation_session(model.SerializeToString(), self.threads)
        name = session.get_inputs()[0].name
        return run_batched(lambda chunk: session.run(None, {name: chunk})[0], x)

    def reference(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.fp32, x)

    def logits(self, x: np.ndarray, keep_float: frozenset[str] = frozenset()) -> np.ndarray:
        return self._run(with_layers_in_float(self.qdq, self.fp32, keep_float) if keep_float else self.qdq, x)


def copy_model(model):
    """A deep copy of an ONNX ModelProto, to rewire without touching the original."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
