"""The precisions a report row can have, and the one rule for the row an INT8 row is judged against."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum


class Precision(str, Enum):
    """A row's precision, as reports, manifests and ``bench --from`` spell it."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"  # OpenVINO's default on CPUs with AVX-512 BF16 or AMX: a speed reference, not an accuracy one
    int8 = "int8"
    int8_fp16 = "int8-fp16"  # INT8 with FP16 between the quantized layers (strongly typed TensorRT)
    int8_ptq = "int8-ptq"  # post-training INT8 beside a QAT int8
    int8_all = "int8-all"  # every layer INT8, beside an int8 row that keeps some in float (not shipped)

    def __str__(self) -> str:
        return self.value


FLOAT = (Precision.fp32.value, Precision.fp16.value)  # the rows whose top-1 an INT8 row's drop is measured from


def is_float(precision: str) -> bool:
    return precision in FLOAT


def _field(row, key: str):
    return row[key] if isinstance(row, dict) else getattr(row, key)


def accuracy_reference(rows: Iterable) -> Callable[[str], object | None]:
    """For a target, the row its INT8 rows are judged against: that target's first float row that ran, else the
    report's first float row that ran, else None (nothing to judge against). Rows are report dicts or ``Result``s;
    one pass, so a report of a million rows is judged in seconds."""
    ran = [r for r in rows if _field(r, "status") == "ok"]
    floats = [r for r in ran if is_float(_field(r, "precision"))]
    own: dict[str, object] = {}
    for r in floats:
        own.setdefault(_field(r, "target"), r)
    return lambda target: own.get(target, floats[0] if floats else None)
