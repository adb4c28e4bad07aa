"""The target registry: the one place target names are written. Entries import lazily, on first use.

Adding a target: one file defining a :class:`~edgesmlp.targets.base.Target` subclass and ``TARGET``,
one line here, and one subclass of the contract test in ``tests/test_targets_contract.py``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgesmlp.errors import ConfigError

if TYPE_CHECKING:
    from edgesmlp.targets.base import Target

REGISTRY: dict[str, str] = {
    "torch": "edgesmlp.targets.torch_eager",
    "onnxruntime": "edgesmlp.targets.onnxruntime",
    "openvino": "edgesmlp.targets.openvino",
    "jetson": "edgesmlp.targets.jetson",
}
DEFAULT = "openvino"  # what quantize builds when no --target is given
DEFAULT_SENSITIVITY = "jetson"  # what sensitivity measures when no --target is given
ALIASES = {"tensorrt": "jetson", "pytorch": "torch", "ort": "onnxruntime"}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def resolve(name: str) -> str:
    """The registered name for ``name`` (an alias included); a ConfigError listing the choices otherwise."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise ConfigError(f"unknown target {name!r}: choose from {', '.join(REGISTRY)}")
    return name


def get(name: str) -> Target:
    return importlib.import_module(REGISTRY[resolve(name)]).TARGET


def declared_options() -> dict[str, list]:
    """Every target option field, in registry order, with the ``(target, Option)`` pairs that declare it."""
    found: dict[str, list] = {}
    for name in REGISTRY:
        target = get(name)
        for option in target.options:
            found.setdefault(option.field, []).append((target, option))
    return found
