"""``PartialINT8`` for an NNCF INT8 OpenVINO model: chosen layers rewired to read float inputs.

In NNCF's IR an activation reaches a quantized layer through a FakeQuantize (directly, or through a Concat
of FakeQuantized tensors), and a weight as an int8 Constant -> Convert -> (Subtract) -> Multiply chain. A
layer "in float" here reads each FakeQuantize's input instead, and its weight as the FP32 model's Constant:
what NNCF's ignored scope gives, measured without re-running NNCF for every candidate. The model that ships
is quantized again by NNCF with the chosen layers in its ignored scope.
"""

from __future__ import annotations

import numpy as np

from edgesmlp.errors import RuntimeFailure
from edgesmlp.quantization.partial import Layer, run_batched

SHORT_OPS = {"Convolution": "Conv", "GroupConvolution": "DWConv", "Multiply": "Mul"}  # as tables show them
BATCH = 16  # images per inference while measuring


def _source(op, index: int):
    return op.input(index).get_source_output().get_node()


def _is_weight_chain(node) -> bool:
    """int8/uint8 Constant -> Convert -> ... -> Multiply: NNCF's compressed weight."""
    seen = 0
    while node.get_type_name() in ("Multiply", "Subtract", "Convert", "Reshape") and seen < 6:
        node, seen = node.input(0).get_source_output().get_node(), seen + 1
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")


SHAPE_OPS = ("Transpose", "Reshape")  # move a quantized tensor without computing on it (channels-last mixing)


def _is_quantized_input(node) -> bool:
    if node.get_type_name() == "FakeQuantize" or _is_weight_chain(node):
        return True
    if node.get_type_name() in SHAPE_OPS:
        return _is_quantized_input(_source(node, 0))
    return node.get_type_name() == "Concat" and any(
        _is_quantized_input(i.get_source_output().get_node()) for i in node.inputs())


def behind_shape_ops(node):
    """The op that ``node`` moves, through any Transposes and Reshapes (``node`` itself when it is neither)."""
    while node.get_type_name() in SHAPE_OPS:
        node = _source(node, 0)
    return node


def _unquantized(output):
    """``output`` read before its FakeQuantize, through Transposes and Reshapes (copied, since other layers may still
    read the quantized ones); None when it is not a quantized activation."""
    import openvino.opset13 as ops

    node = output.get_node()
    if node.get_type_name() == "FakeQuantize":
        return node.input(0).get_source_output()
    if node.get_type_name() in SHAPE_OPS:
        inner = _unquantized(node.input(0).get_source_output())
        if inner is not None:
            arg = node.input(1).get_source_output()
            if node.get_type_name() == "Transpose":
                return ops.transpose(inner, arg).output(0)
            return ops.reshape(inner, arg, node.get_attributes()["special_zero"]).output(0)
    return None


def _is_layer(op) -> bool:
    """An op that reads a quantized tensor: a Convolution, MatMul, residual Add, MVN... (not a quantizer itself)."""
    inputs = [_source(op, i) for i in range(op.get_input_size())]
    if op.get_type_name() in ("FakeQuantize", "Concat", *SHAPE_OPS) or _is_weight_chain(op):
        return False
    if op.get_type_name() == "Multiply" and any(_is_weight_chain(i) or i.get_type_name() == "Convert" for i in inputs):
        return False
    return any(_is_quantized_input(i) for i in inputs)


def module_of(name: str) -> str:
    """``__module.channel_mix.0.fc2/aten::_convolution/Convolution`` -> ``channel_mix.0.fc2``; a MatMul of the
    token mixing keeps its op name (``token_mix.0/MatMul_1``)."""
    head, _, tail = name.partition("/")
    if not head.startswith("__module."):  # an op of the forward itself (a residual aten::add/Add_3)
        return name
    module = head.removeprefix("__module.")
    return f"{module}/{tail.rsplit('/', 1)[-1]}" if "MatMul" in tail and "linear" not in tail else module


def first_order_keys(layers: list[Layer], scores: dict[str, float]) -> dict[str, str]:
    """Each layer's key in ``scores`` (``first_order.first_order_scores``, in the forward's order): its module path
    where that was scored (convolutions, the head, the norms); the token mixing's MatMuls, named by their block
    (``token_mix.0/MatMul_1``), take in graph order the block's scored keys no other layer claimed (``mix.along_w``,
    ``mix.along_h``, then a fuse the plugin runs as a MatMul); the global pool (ReduceMean) takes ``pool``. A layer
    left out has no score."""
    keys = {layer.name: layer.module for layer in layers if layer.module in scores}
    claimed = set(keys.values())
    for layer in layers:
        if layer.name in keys:
            continue
        if layer.op == "ReduceMean":
            free = ["pool"] if "pool" in scores and "pool" not in claimed else []
        else:
            block = layer.module.split("/")[0] + "."
            free = [k for k in scores if k.startswith(block) and k not in claimed] if "/MatMul" in layer.module else []
        if free:
            keys[layer.name] = free[0]
            claimed.add(free[0])
    return keys


def _float_constant(op, index: int) -> np.ndarray:
    """The float value of ``op``'s constant input ``index``, through any Convert (an IR saved with FP16 weights)."""
    node = _source(op, index)
    while node.get_type_name() == "Convert":
        node = _source(node, 0)
    if node.get_type_name() != "Constant":
        raise RuntimeFailure(f"{op.get_friendly_name()} input {index} is not a constant in the FP32 model: the INT8 "
                             "and FP32 IRs do not come from the same graph")
    return node.get_data().astype(np.float32)


def quantized_layers(model) -> list[Layer]:
    """The ops of an NNCF INT8 model that read a quantized tensor, in graph order."""
    return [Layer(op.get_friendly_name(), module_of(op.get_friendly_name()),
                  SHORT_OPS.get(op.get_type_name(), op.get_type_name()))
            for op in model.get_ordered_ops() if _is_layer(op)]


class OpenVINOPartial:
    """``PartialINT8`` for ov.Models ``fp32`` and its NNCF INT8 ``int8`` (same friendly names), batch-1 or dynamic."""

    def __init__(self, fp32, int8, threads: int = 0):
        self.fp32, self.int8, self.threads = fp32, int8, threads
        self._fp32_ops = {op.get_friendly_name(): op for op in fp32.get_ops()}
        self.layers = quantized_layers(int8)

    def with_layers_in_float(self, layers):
        import openvino.opset13 as ops

        model = self.int8.clone()
        for op in (o for o in model.get_ops() if o.get_friendly_name() in set(layers)):
            for i in range(op.get_input_size()):
                source, unquantized = _source(op, i), _unquantized(op.input(i).get_source_output())
                if unquantized is not None:
                    op.input(i).replace_source_output(unquantized)
                # A Concat read directly, through a Transpose or Reshape (the conv fuse), or through the quantizer
                # repeated after that Transpose (openvino_ptq.requantize_transposed_concats): its inputs' quantizers
                # are this layer's, and go float with it.
                concat = behind_shape_ops((unquantized.get_node() if unquantized is not None else source))
                if concat.get_type_name() == "Concat":
                    for j in range(concat.get_input_size()):
                        unquantized = _unquantized(concat.input(j).get_source_output())
                        if unquantized is not None:
                            concat.input(j).replace_source_output(unquantized)
                elif _is_weight_chain(source):
                    weight = _float_constant(self._fp32_ops[op.get_friendly_name()], i)
                    op.input(i).replace_source_output(ops.constant(weight).output(0))
        model.validate_nodes_and_infer_types()
        return model

    def _run(self, model, x: np.ndarray, precision: str | None) -> np.ndarray:
        from edgesmlp.runtimes.openvino import OpenVINORunner

        batch = min(BATCH, len(x))
        runner = OpenVINORunner(model, batch, self.threads, precision)

        def run(chunk: np.ndarray) -> np.ndarray:  # the last chunk is padded to the compiled batch
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)]) if len(chunk) < batch else chunk
            return runner(padded)[: len(chunk)]

        return run_batched(run, x, batch)

    def reference(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.fp32, x, "f32")

    def logits(self, x: np.ndarray, keep_float: frozenset[str] = frozenset()) -> np.ndarray:
        """As shipped: compiled with no precision hint, so the float layers run at the CPU's default precision."""
        return self._run(self.with_layers_in_float(keep_float) if keep_float else self.int8, x, None)


def block_cosines(fp32, int8, x: np.ndarray, threads: int = 0) -> list[tuple[str, float]]:
    """Cosine between FP32 (f32) and INT8 (as shipped) at each residual sum, in graph order: the OpenVINO
    counterpart of ``sensitivity.block_cosines``."""
    from edgesmlp.quantization.sensitivity import cosine
    from edgesmlp.runtimes.openvino import OpenVINORunner

    def residual_sums(model) -> dict:
        return {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Add"
                and all(_source(op, i).get_type_name() not in ("Constant", "Convert") for i in range(2))}

    names = [n for n in residual_sums(fp32) if n in residual_sums(int8)]
    taps = []
    for model, precision in ((fp32, "f32"), (int8, None)):
        model = model.clone()
        sums = residual_sums(model)
        model.add_outputs([sums[n].output(0) for n in names])
        runner = OpenVINORunner(model, 1, threads, precision)
        outputs = [runner.request.infer({0: x[i : i + 1]}) for i in range(len(x))]
        taps.append([np.concatenate([out[k + 1] for out in outputs]) for k in range(len(names))])
    return [(name, cosine(a, b)) for name, a, b in zip(names, *taps)]
