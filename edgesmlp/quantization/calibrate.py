"""Activation ranges from calibration data: max, percentile, entropy (KL, TensorRT's) and MSE.

Statistics come from ONNX Runtime running the FP32 graph with the tensors of interest exposed as
outputs: one pass for each tensor's max |x|, a second for a histogram of |x| on [0, max].
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from edgesmlp.errors import ConfigError
from edgesmlp.progress import progress_bar

QMAX = 127  # symmetric signed INT8 as TensorRT uses it: scale = amax / 127


def weight_qmax(bits: int) -> int:
    """The largest magnitude of a symmetric signed weight of ``bits`` (7 or 8); 7 for x86 CPUs without VNNI, whose
    u8 x s8 kernels saturate on 8-bit weights (``timing.x86_without_vnni``)."""
    if bits not in (7, 8):
        raise ConfigError(f"--weight-bits must be 7 or 8, got {bits!r}")
    return 2 ** (bits - 1) - 1


class CalibMethod(str, Enum):
    max = "max"
    percentile = "percentile"
    entropy = "entropy"
    mse = "mse"


def collect_histograms(model, tensors: list[str], data: np.ndarray, bins: int = 2048, batch: int = 16,
                       need_histograms: bool = True, label: str = "Calibrating") -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per tensor: max |x| over ``data``, and a histogram of |x| with ``bins`` bins on [0, max]."""
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in tensors:
        if name not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    from edgesmlp.runtimes.onnxruntime import cpu_session

    session = cpu_session(exposed.SerializeToString())
    input_name = session.get_inputs()[0].name
    amax = {t: 0.0 for t in tensors}
    hist = {t: np.zeros(bins, np.float64) for t in tensors}
    passes = 2 if need_histograms else 1
    with progress_bar(label, total=passes * len(data)) as advance:
        for stage in range(passes):
            for start in range(0, len(data), batch):
                chunk = data[start : start + batch]
                for name, value in zip(tensors, session.run(tensors, {input_name: chunk})):
                    magnitude = np.abs(value)
                    if stage == 0:
                        amax[name] = max(amax[name], float(magnitude.max()))
                    elif amax[name] > 0:
                        hist[name] += np.histogram(magnitude, bins=bins, range=(0.0, amax[name]))[0]
                for _ in range(len(chunk)):
                    advance()
    return amax, hist


def amax_from_histogram(hist: np.ndarray, amax: float, method: CalibMethod, percentile: float = 99.99) -> float:
    """The clipping range each method picks from a histogram of |x| on [0, amax]."""
    if amax <= 0 or method is CalibMethod.max or hist.sum() == 0:
        return amax
    width = amax / len(hist)
    if method is CalibMethod.percentile:
        cdf = np.cumsum(hist) / hist.sum()
        return float((np.searchsorted(cdf, percentile / 100.0) + 1) * width)
    if method is CalibMethod.mse:
        return _mse_amax(hist, width)
    return _entropy_amax(hist, width)


def _mse_amax(hist: np.ndarray, width: float) -> float:
    centres = (np.arange(len(hist)) + 0.5) * width
    best, best_err = len(hist) * width, np.inf
    for stop in range(32, len(hist) + 1, 8):
        clip = stop * width
        scale = clip / QMAX
        dequant = np.clip(np.round(centres / scale), 0, QMAX) * scale
        err = float((hist * (centres - dequant) ** 2).sum())
        if err < best_err:
            best, best_err = clip, err
    return best


def _entropy_amax(hist: np.ndarray, width: float, levels: int = QMAX + 1) -> float:
    """TensorRT's entropy calibration: the clip that minimises KL(P || Q) over 128 levels."""
    best, best_kl = len(hist) * width, np.inf
    for stop in range(levels, len(hist) + 1, 16):
        kept = hist[:stop].astype(np.float64)
        p = kept.copy()
        p[-1] += hist[stop:].sum()  # the reference clips outliers into its last bin...
        nonzero = kept > 0
        q = np.zeros(stop)
        for g in np.array_split(np.arange(stop), levels):  # ...the candidate is quantized without them
            mask = nonzero[g]
            if mask.any():
                q[g[mask]] = kept[g].sum() / mask.sum()
        nonzero = p > 0
        if q[nonzero].min() <= 0:
            continue
        pn, qn = p[nonzero] / p.sum(), q[nonzero] / q.sum()
        kl = float((pn * np.log(pn / qn)).sum())
        if kl < best_kl:
            best, best_kl = (stop + 0.5) * width, kl
    return best
