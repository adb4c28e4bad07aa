"""Layer names as users give them to ``--ignore``: a node name of the target's graph, or the module path that
``sensitivity`` and the budget search print (``token_mix.7.dwconv``, ``channel_mix.3.fc2``), which names
every node that module exported. One resolver for both targets."""

from __future__ import annotations

from dataclasses import dataclass

from edgesmlp.errors import ConfigError


@dataclass(frozen=True)
class Layer:
    name: str  # the node name in the target's graph: what the quantizer's ignore list takes
    module: str  # the deploy-form module it came from (e.g. channel_mix.3.fc2), for people
    op: str


def module_path(node, weight_first: bool = False) -> str:
    """The PyTorch module an exported ONNX node came from, read off the exporter's ``namespace`` metadata (each
    segment holds the full path); a deploy-form MatMul is named by its mixing axis."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    parts = [segment.split(":")[0].strip() for segment in namespace.split("/")[1:-1]]
    path = parts[-1] if parts else node.name
    if node.op_type == "MatMul" and parts:
        path += ".mix.along_h" if weight_first else ".mix.along_w"
    return path


def onnx_layers(model, ops: tuple[str, ...]) -> list[Layer]:
    """The ``ops`` nodes of an ONNX graph as layers, named by node and by module."""
    inits = {i.name for i in model.graph.initializer}
    return [Layer(n.name, module_path(n, bool(n.input) and n.input[0] in inits), n.op_type)
            for n in model.graph.node if n.op_type in ops]


def resolve(given: tuple[str, ...], layers: list[Layer], option: str = "--ignore") -> tuple[str, ...]:
    """The node names ``given`` names (each a node name, or a module path for all of that module's nodes), in
    the order given, without repeats; ConfigError for a name that is neither."""
    by_module: dict[str, list[str]] = {}
    for layer in layers:
        by_module.setdefault(layer.module, []).append(layer.name)
    nodes = {layer.name for layer in layers}
    out: list[str] = []
    for name in given:
        found = [name] if name in nodes else by_module.get(name)
        if not found:
            examples = ", ".join(repr(x) for x in [*list(by_module)[:2], *[layer.name for layer in layers][:1]])
            raise ConfigError(f"{option} {name!r} names no quantizable layer of the model: give a module path or a "
                              f"node name, e.g. {examples} (`edgesmlp sensitivity` lists them)")
        out += [n for n in found if n not in out]
    return tuple(out)
