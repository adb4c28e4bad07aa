"""How long the budget search takes at the size users ship: sMLPNet-T at 224 on the Jetson Q/DQ graph, or on
OpenVINO's INT8 IR (--target openvino, written to budget_search_speed_openvino.md).

    python benchmarks/budget_search_speed.py [--images 128] [--target jetson|openvino]

sMLPNet-T with seeded random weights (speed does not depend on the values; benchmarks.common), 10 classes, the
bundled digits resized to 224 as images (128 calibration, 128 search). Times, on this CPU with 2 threads:
the exact ranking (the Q/DQ graph run once per layer with only that layer INT8; timed on a few layers and
multiplied out), the first-order ranking the search uses at this size (quantize.first_order: ranges from 16
calibration images, one forward and one backward pass), and the whole search (score full INT8, rank, try
numbers of layers in float) with an ask full INT8 misses. Writes benchmarks/results/budget_search_speed.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t, write_result  # noqa: E402

EXACT_SAMPLE = 3  # layers the exact ranking is timed on


def digits_at(size: int, n: int, seed: int) -> "np.ndarray":  # noqa: F821
    import numpy as np

    from edgesmlp.calibration.digits import load_split
    from edgesmlp.calibration.preprocess import Preprocess

    pre = Preprocess(image_size=size, crop_pct=1.0, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    pairs = load_split("calib")
    order = np.random.default_rng(seed).permutation(len(pairs))[:n]
    return np.stack([pre(pairs[i][0]) for i in order])


def time_exact(graph, search):
    """The FP32 reference on the search images, and the exact ranking's cost: a few layers timed, multiplied out.
    Returns the reference logits and the seconds of the reference, of one layer, and of every layer."""
    from edgesmlp.quantization.sensitivity import divergence

    start = time.perf_counter()
    reference = graph.reference(search)
    reference_s = time.perf_counter() - start
    every = frozenset(layer.name for layer in graph.layers)
    start = time.perf_counter()
    for layer in graph.layers[:EXACT_SAMPLE]:
        divergence(reference, graph.logits(search, every - {layer.name}))
    per_layer_s = (time.perf_counter() - start) / EXACT_SAMPLE
    exact_s = reference_s + per_layer_s * len(graph.layers)
    print(f"exact: {per_layer_s:.1f} s a layer, {exact_s:.0f} s for {len(graph.layers)}", flush=True)
    return reference, reference_s, per_layer_s, exact_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--target", choices=("jetson", "openvino"), default="jetson")
    parser.add_argument("--weight-bits", type=int, default=None, help="openvino: 8 on a CPU without VNNI saturates "
                        "and gives full INT8 an ask to miss (default: this CPU's)")
    args = parser.parse_args()
    if args.target == "openvino":
        return openvino(args.images, args.weight_bits)
    import onnx
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.errors import BudgetError
    from edgesmlp.export import export_onnx
    from edgesmlp.quantization.budget import Budget, choose
    from edgesmlp.quantization.first_order import first_order_scores, rank_by_first_order
    from edgesmlp.quantization.partial import QDQPartial
    from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq
    from edgesmlp.quantization.sensitivity import divergence

    torch.set_num_threads(2)
    folder = Path(tempfile.mkdtemp())
    model = random_smlpnet_t()
    deploy = to_deploy(model)
    calib, search = digits_at(224, args.images, 0), digits_at(224, args.images, 1)
    start = time.perf_counter()
    export_onnx(deploy, folder / "fp32.onnx", 224, dynamic_batch=True, reference=model)
    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", calib)
    prepare = time.perf_counter() - start
    graph = QDQPartial(onnx.load(str(folder / "fp32.onnx")), onnx.load(str(folder / "int8.onnx")), 2)
    layers = graph.layers
    print(f"{len(layers)} layers; export and Q/DQ calibration {prepare:.0f} s", flush=True)

    reference, reference_s, per_layer_s, exact_s = time_exact(graph, search)

    start = time.perf_counter()
    scores = first_order_scores(deploy, calib, search)
    first_s = time.perf_counter() - start
    order = rank_by_first_order(layers, scores)
    print(f"first order: {first_s:.1f} s, every layer scored: {order is not None}", flush=True)

    # The whole search needs an INT8 graph that misses the ask; with random weights full INT8 agrees on nearly
    # every image, so this one clips its activations at the 95th percentile of |x| (--percentile 95), and the
    # first-order ranking takes its ranges the same way.
    config = QDQConfig(percentile=95.0)
    quantize_qdq(folder / "fp32.onnx", folder / "poor.onnx", calib, config)
    poor = QDQPartial(graph.fp32, onnx.load(str(folder / "poor.onnx")), 2)
    full = divergence(reference, poor.logits(search))
    ask = 99.0
    rank = lambda x: rank_by_first_order(poor.layers, first_order_scores(deploy, calib, x, percentile=95.0))  # noqa: E731
    start = time.perf_counter()
    try:
        choice = choose(poor, search, None, Budget(max_drop=None, min_agreement=ask, max_float=0.2),
                        log=lambda line: None, certify=False, rank=rank)
        outcome = (f"met with {len(choice.kept_float)} of {len(layers)} layers in float, {len(choice.curve)} "
                   f"numbers of layers tried, ranked in {choice.rank_seconds:.0f} s")
    except BudgetError as e:
        outcome = f"out of reach with a fifth of the layers in float ({str(e).count(' in float: ')} tried)"
    search_s = time.perf_counter() - start
    print(f"search: {search_s:.0f} s, {outcome}", flush=True)

    lines = ["# The budget search at full scale: sMLPNet-T, 224, Jetson Q/DQ graph", "",
             f"`python benchmarks/budget_search_speed.py`. sMLPNet-T (seeded random weights, 10 classes), "
             f"{len(layers)} quantized layers, {args.images} calibration and {args.images} search images (digits "
             "resized to 224), 2 threads. The exact ranking runs the Q/DQ graph in ONNX Runtime once per layer "
             f"(timed on {EXACT_SAMPLE} layers and multiplied out); the first-order one is what the search uses from "
             "100 M MACs on (quantization/first_order.py).", "",
             "| step | seconds |", "| --- | --- |",
             f"| export and Q/DQ calibration (before the search) | {prepare:.0f} |",
             f"| FP32 reference on the search images | {reference_s:.1f} |",
             f"| exact ranking, {len(layers)} layers | {exact_s:.0f} (extrapolated: {per_layer_s:.1f} a layer) |",
             f"| first-order ranking, {len(layers)} layers | {first_s:.1f} |",
             f"| ranking speed-up | {exact_s / first_s:.0f}x |",
             f"| one pass of the Q/DQ graph over the search images (each number of layers in float tried) | "
             f"{per_layer_s:.1f} |",
             f"| whole search: {ask}% asked of the graph clipped at the 95th percentile (full INT8: "
             f"{full.agreement:.2f}%, expected {full.expected_agreement:.2f}%) | {search_s:.0f}: {outcome} |",
             "", "The whole-search row is the worst case: with random weights every search image falls in one class by a small margin, clipping moves them all (0% counted agreement; the margin-noise estimate, 99.16%, does not see a shift that moves every image alike), so the search tries every number of layers up to a fifth and refuses. A search that meets its ask stops after fewer passes."]
    write_result("budget_search_speed", lines, "torch", "onnxruntime")


def openvino(images: int, weight_bits: int | None = None) -> None:
    """The same on the openvino target's INT8 IR (NNCF, deploy form, this CPU's defaults): the exact ranking runs
    the IR once per layer with only that layer INT8; the first-order one pairs every IR layer with a score."""
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.errors import BudgetError
    from edgesmlp.quantization.budget import Budget, choose
    from edgesmlp.quantization.first_order import first_order_scores, rank_by_first_order
    from edgesmlp.quantization.openvino_partial import OpenVINOPartial, first_order_keys
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_for_cpu
    from edgesmlp.quantization.sensitivity import expected_agreement

    torch.set_num_threads(2)
    model = random_smlpnet_t()
    deploy = to_deploy(model)
    calib, search = digits_at(224, images, 0), digits_at(224, images, 1)
    config = OpenVINOPTQConfig(weight_bits=weight_bits)
    start = time.perf_counter()
    fp32, int8 = quantize_for_cpu(deploy, calib, config, 3, 224, lambda line: None)
    prepare = time.perf_counter() - start
    graph = OpenVINOPartial(fp32, int8, 2)
    layers = graph.layers
    print(f"{len(layers)} layers; NNCF PTQ {prepare:.0f} s", flush=True)

    reference, reference_s, per_layer_s, exact_s = time_exact(graph, search)

    def rank(x):
        scores = first_order_scores(deploy, calib, x, "max", weight_bits=config.weight_bits, quantized_inputs=True)
        return rank_by_first_order(layers, scores, first_order_keys(layers, scores))

    start = time.perf_counter()
    order = rank(search)
    first_s = time.perf_counter() - start
    print(f"first order: {first_s:.1f} s, every layer scored: {order is not None}", flush=True)

    logits = graph.logits(search)
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean() * 100)
    expected = expected_agreement(reference, logits)
    ask = round(expected + (100 - expected) / 2, 2)  # full INT8 misses it on the estimate, more float reaches it
    start = time.perf_counter()
    try:
        choice = choose(graph, search, None, Budget(max_drop=None, min_agreement=ask, max_float=0.2),
                        log=lambda line: None, certify=False, rank=rank)
        outcome = (f"met with {len(choice.kept_float)} of {len(layers)} layers in float, {len(choice.curve)} "
                   f"numbers of layers tried, ranked ({choice.ranking_method}) in {choice.rank_seconds:.0f} s"
                   if choice.kept_float else "full INT8 meets it: nothing to rank")
    except BudgetError as e:
        outcome = f"out of reach with a fifth of the layers in float ({str(e).count(' in float: ')} tried)"
    search_s = time.perf_counter() - start
    print(f"search: {search_s:.0f} s, {outcome}", flush=True)
    tries = 2 * math.ceil(math.log2(int(0.2 * len(layers)))) + 1  # budget.fewest's most passes
    worst = reference_s + per_layer_s + first_s + tries * per_layer_s

    lines = ["# The budget search at full scale: sMLPNet-T, 224, OpenVINO INT8 IR", "",
             f"`python benchmarks/budget_search_speed.py --target openvino`. sMLPNet-T (seeded random weights, 10 "
             f"classes), {len(layers)} quantized layers of NNCF's IR (the deploy form channels-last, "
             f"{config.weight_bits}-bit weights{' (this CPU' + chr(39) + 's default)' if weight_bits is None else ''}, "
             f"{config.fuse.value} fuse), {images} calibration and "
             f"{images} search images (digits resized to 224), 2 threads. The exact ranking runs the IR once per "
             f"layer with only that layer INT8 (timed on {EXACT_SAMPLE} layers and multiplied out); the first-order "
             "one scores every IR layer from one forward and one backward pass of the deploy form "
             "(quantization/first_order.py, paired by openvino_partial.first_order_keys).", "",
             "| step | seconds |", "| --- | --- |",
             f"| NNCF PTQ (before the search) | {prepare:.0f} |",
             f"| FP32 reference on the search images | {reference_s:.1f} |",
             f"| exact ranking, {len(layers)} layers | {exact_s:.0f} (extrapolated: {per_layer_s:.1f} a layer) |",
             f"| first-order ranking, {len(layers)} layers | {first_s:.1f} |",
             f"| ranking speed-up | {exact_s / first_s:.0f}x |",
             f"| whole search: {ask}% asked (full INT8: {agreement:.2f}% counted, {expected:.2f}% expected) | "
             f"{search_s:.0f}: {outcome} |",
             f"| a whole search at most (reference, full INT8, ranking, and {tries} passes with layers in float; "
             f"computed from the rows above) | {worst:.0f} |"]
    name = "budget_search_speed_openvino" + ("" if weight_bits is None else f"_w{weight_bits}")
    lines[2] = lines[2].replace("--target openvino`", "--target openvino" + (
        "" if weight_bits is None else f" --weight-bits {weight_bits}") + "`")
    write_result(name, lines, "torch", "openvino", "nncf")


if __name__ == "__main__":
    main()
