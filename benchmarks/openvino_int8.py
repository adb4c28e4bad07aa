"""edgesmlp INT8 vs what a user has today, on sMLPNet-T at 224, interleaved in one process.

    python benchmarks/openvino_int8.py [--rounds 5] [--iters 8] [--threads 2] [--calib 300] [--name openvino_int8]

Candidates (batch 1, static-batch IRs, OpenVINO CPU, INFERENCE_PRECISION_HINT=f32 unless named otherwise):
  ov_default_plain      the official graph at OpenVINO's CPU default precision (no hint: bf16 on bf16 CPUs):
                        what a user gets without edgesmlp
  ov_fp32_plain         OpenVINO FP32 of the official graph (where a CPU has no bf16, the default is this)
  ov_default_deploy     the deploy form at the default precision
  nncf_int8_plain       NNCF's default INT8 of the official graph (nncf.quantize with defaults)
  nncf_int8_plain_nohint the same IR compiled with no hint, as a user of NNCF compiles it
  edgesmlp_int8         edgesmlp: folded deploy form with channels-last token mixing and norms, fused as this CPU's
                        default (OpenVINOPTQConfig.fuse), NNCF performance preset, bias correction off (f32 hint for
                        the layers left in float)
  edgesmlp_int8_nchw    the same recipe on the NCHW deploy form (what shipped before channels-last mixing)
  edgesmlp_int8_nohint  the same IR compiled with no hint, as compile_model("model.xml") does
  edgesmlp_int8_dynamic the same INT8 with a dynamic batch, compiled as it is (what shipped before)
  torch_fp32            PyTorch eager FP32 of the official module
  relu_probe            edgesmlp's INT8 recipe with ReLU in place of every GELU, no hint: not sMLPNet, a probe of
                        what the erf GELUs cost (reported under "The limit", not as a candidate)
  int8_peak             the INT8 peak's convolution (PeakKernel), timed beside the graphs (under "The limit")
  shipped_counted       edgesmlp_int8_nohint with OpenVINO's counters on (CountedGraph): its kernels, timed beside
                        the peak (under "Its kernels against the peak")
Random weights are fine for speed. PTQ time and peak memory for 300 calibration images are measured
in a fresh child process each. Each OpenVINO graph is then profiled (time per op type, executed
precision, Reorders), and the shipped graph's GEMM kernels are set against the INT8 GEMM peak measured in the
same run (GOP/s by kind of kernel, and the most of the peak its other nodes leave reachable). The INT8 peak's
convolution is timed in the same interleaved rounds as the graphs, and the fraction of it the shipped graph
reaches is the median over rounds, so a regression shows as a falling fraction however the host drifts. Writes
benchmarks/results/openvino_int8.md (or --name NAME.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t  # noqa: E402

SIZE = 224
SHIPPED = "edgesmlp_int8_nohint"  # every ratio is over this row: model.xml compiled as a user's compile_model() does
WARMUP = 3  # calls before the interleaved rounds, which PeakKernel and CountedGraph leave out of their counters
PEAK_CHANNELS, PEAK_GRID = 1024, 56  # the peak convolution: a 3136 x 1024 x 1024 GEMM, far larger than any in sMLPNet-T


def calibration(n: int):
    """``n`` random images as the quantize job holds its calibration images: uint8 pixels, normalised on use."""
    from edgesmlp.calibration.preprocess import IMAGENET_MEAN, IMAGENET_STD, Images

    pixels = np.random.default_rng(1).integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8)
    return Images(pixels, IMAGENET_MEAN, IMAGENET_STD)


def prepare(kind: str, n: int):
    """The OpenVINO model PTQ starts from: the openvino target's (channels-last deploy form) for edgesmlp, the NCHW
    deploy form for edgesmlp_nchw, the official graph otherwise."""
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import to_openvino
    from edgesmlp.quantization.openvino_ptq import calibration_graph

    model = random_smlpnet_t()
    # Dynamic batch, as the openvino target calibrates (it reshapes the result to a static batch of 1).
    if kind in ("edgesmlp", "edgesmlp_relu_probe"):
        deploy = to_deploy(model)
        if kind == "edgesmlp_relu_probe":
            for module in deploy.modules():
                if isinstance(getattr(module, "act", None), torch.nn.GELU):
                    module.act = torch.nn.ReLU()
        return calibration_graph(deploy, 3, SIZE), calibration(n)
    # The other graphs get the float32 array an NNCF user holds.
    return to_openvino(to_deploy(model) if kind == "edgesmlp_nchw" else model, 3, SIZE, batch=-1), np.asarray(calibration(n))


def run_ptq(kind: str, ov_model, data, n: int, calib_batch: int = 1):
    import nncf

    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_openvino

    if kind.startswith("edgesmlp"):  # all n images: subset_size is len(data)
        return quantize_openvino(ov_model, data, OpenVINOPTQConfig(calib_batch=calib_batch))
    return nncf.quantize(ov_model, nncf.Dataset([data[i : i + 1] for i in range(n)]), subset_size=n)


def quantize(kind: str, n: int):
    """Returns (ov.Model INT8, seconds)."""
    ov_model, data = prepare(kind, n)
    start = time.perf_counter()
    return run_ptq(kind, ov_model, data, n), time.perf_counter() - start


class RSSSampler:
    """Samples this process's resident memory every 5 ms while it runs (the peak during one call)."""

    def __init__(self):
        import threading

        import psutil

        self.process, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.stop.wait(0.005)

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def fake_quantize_ranges(int8) -> dict[str, np.ndarray]:
    """Each FakeQuantize's four range constants (input low/high, output low/high), flattened, by node name."""
    return {op.get_friendly_name(): np.concatenate([op.input(k).get_source_output().get_node().get_data().ravel()
                                                    for k in range(1, 5)])
            for op in int8.get_ordered_ops() if op.get_type_name() == "FakeQuantize"}


def _child(kind: str, n: int, queue, calib_batch: int, ranges: bool) -> None:
    import gc

    # A spawned child inherits the spawn start method, and OpenVINO's telemetry (which NNCF calls) starts a process
    # per event: spawned, each re-imports this script (torch and all) on the same two cores, and PTQ took 10 s longer
    # (44-47 s vs 35 s). In a user's process, as in `edgesmlp quantize`, those processes are forked.
    mp.set_start_method("fork", force=True)
    torch.set_num_threads(2)
    ov_model, data = prepare(kind, n)
    gc.collect()
    with RSSSampler() as rss:
        start = time.perf_counter()
        int8 = run_ptq(kind, ov_model, data, n, calib_batch)
        seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_rss_mb": rss.peak / 2**20, "ptq_rss_increase_mb": (rss.peak - rss.start) / 2**20,
               "process_high_water_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               **({"ranges": fake_quantize_ranges(int8)} if ranges else {})})


def measure_ptq(kind: str, n: int, calib_batch: int = 1, ranges: bool = False) -> dict:
    """PTQ seconds and memory in a fresh process (edgesmlp's recipe at ``calib_batch`` images an NNCF inference), and
    with ``ranges`` the INT8 graph's :func:`fake_quantize_ranges`."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, n, queue, calib_batch, ranges))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    import openvino as ov

    from edgesmlp.export import to_openvino
    from edgesmlp.runtimes.openvino import with_batch
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--min-fraction", type=float, default=None, metavar="F",
                        help="exit 1 when the shipped INT8 graph runs below this fraction of the INT8 GEMM peak "
                        "measured in the same run (a regression check, e.g. 0.8)")
    parser.add_argument("--name", default="openvino_int8",
                        help="record as benchmarks/results/NAME.md (one record per kind of CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ptq = {kind: measure_ptq(kind, args.calib) for kind in ("edgesmlp", "nncf_default")}
    for kind, r in ptq.items():
        print(f"PTQ {kind:13s} {args.calib} images: {r['seconds']:.1f} s, peak RSS during PTQ {r['peak_rss_mb']:.0f} MB "
              f"(+{r['ptq_rss_increase_mb']:.0f} MB)", flush=True)

    model = random_smlpnet_t()
    small = 32  # speed runs calibrate on fewer images: calibration size does not change the INT8 graph's speed
    edgesmlp_int8, _ = quantize("edgesmlp", small)
    nchw_int8 = quantize("edgesmlp_nchw", small)[0]
    nncf_int8, _ = quantize("nncf_default", small)
    relu_probe = with_batch(quantize("edgesmlp_relu_probe", small)[0], 1)
    core = ov.Core()
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)

    def compiled(m, precision: str | None = "f32"):
        config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        request = core.compile_model(m, "CPU", config).create_infer_request()
        return lambda: request.infer({0: x})

    from edgesmlp.deploy import to_deploy

    dynamic_int8, edgesmlp_int8, nncf_int8 = edgesmlp_int8, with_batch(edgesmlp_int8, 1), with_batch(nncf_int8, 1)
    nchw_int8 = with_batch(nchw_int8, 1)
    xt = torch.from_numpy(x)
    plain = to_openvino(model, 3, SIZE)
    candidates = {
        "ov_default_plain": compiled(plain, None),
        "ov_fp32_plain": compiled(plain),
        "ov_default_deploy": compiled(to_openvino(to_deploy(model), 3, SIZE), None),
        "nncf_int8_plain": compiled(nncf_int8),
        "nncf_int8_plain_nohint": compiled(nncf_int8, None),
        "edgesmlp_int8": compiled(edgesmlp_int8),
        "edgesmlp_int8_nohint": compiled(edgesmlp_int8, None),
        "edgesmlp_int8_dynamic": compiled(dynamic_int8),
        "edgesmlp_int8_nchw": compiled(nchw_int8),
        "torch_fp32": lambda: model(xt),
        "relu_probe": compiled(relu_probe, None),
    }
    # Instruments timed in the same rounds, read through their own counters rather than as rows.
    peak, counted = PeakKernel(args.threads), CountedGraph(edgesmlp_int8, args.threads, x)
    from edgesmlp.runtimes.openvino import resolved_default_precision

    args.default_precision = resolved_default_precision()
    with torch.no_grad():
        timings, per_round = interleaved({**candidates, "int8_peak": peak, "shipped_counted": counted},
                                         rounds=args.rounds, iters=args.iters, warmup=WARMUP)
    rows = []
    for name, t in ((name, timings[name]) for name in candidates):
        rows.append((name, t.p50, t.p90, paired_ratio(per_round, name, SHIPPED)))
        print(f"{name:16s} p50 {t.p50:8.2f} ms  p90 {t.p90:8.2f} ms  shipped INT8 is {rows[-1][3]:.2f}x faster", flush=True)
    args.relu_probe = rows.pop(next(i for i, r in enumerate(rows) if r[0] == "relu_probe"))
    # The fraction of the INT8 peak, round by round: the peak kernel and the shipped graph timed in the same round.
    from edgesmlp.model import count_macs

    args.gop = 2 * count_macs(model, SIZE) / 1e9
    rates = peak.rates(args.iters)
    args.round_fractions = [1000 * args.gop / rate / r[SHIPPED] for rate, r in zip(rates, per_round)]
    from edgesmlp.runtimes.openvino import OpenVINORunner

    graphs = {"ov_default_plain": (plain, None), "ov_fp32_plain": (plain, "f32"),
              "ov_default_deploy": (to_openvino(to_deploy(model), 3, SIZE), None), "nncf_int8_plain": (nncf_int8, "f32"),
              "nncf_int8_plain_nohint": (nncf_int8, None),
              "edgesmlp_int8_nchw": (nchw_int8, "f32"), "edgesmlp_int8_nohint": (edgesmlp_int8, None)}
    profiles = {name: OpenVINORunner(m, 1, args.threads, hint).profile(x, 10) for name, (m, hint) in graphs.items()}
    batched = throughput_rows({**graphs, "edgesmlp_int8": (edgesmlp_int8, "f32")}, args)
    args.peaks = {"int8": statistics.median(rates), **gemm_peak(args.threads)}
    args.kernels = counted.kernels()
    print("GEMM peak GOP/s:", {k: round(v) for k, v in args.peaks.items()}, flush=True)
    fraction = statistics.median(args.round_fractions)
    print(f"the shipped INT8 graph runs at {fraction:.0%} of this CPU's INT8 GEMM peak (median over rounds; "
          f"{min(args.round_fractions):.0%}-{max(args.round_fractions):.0%})", flush=True)
    write(rows, ptq, args, profiles, batched)
    if args.min_fraction is not None and fraction < args.min_fraction:
        print(f"REGRESSION: {fraction:.0%} of the INT8 peak is below --min-fraction {args.min_fraction:.0%}")
        raise SystemExit(1)


def peak_model(int8: bool, channels: int = PEAK_CHANNELS, grid: int = PEAK_GRID):
    """One large 1x1 convolution (a 3136 x 1024 x 1024 GEMM), with FakeQuantizes around it for INT8."""
    import openvino as ov
    import openvino.opset13 as ops

    weight = (np.random.default_rng(0).standard_normal((channels, channels, 1, 1)) / 32).astype(np.float32)

    def fq(node, limit: float, levels: int = 256):
        low, high = np.float32(-limit), np.float32(limit)
        return ops.fake_quantize(node, low, high, low, high, levels)

    x = ops.parameter([1, channels, grid, grid], np.float32)
    w = fq(ops.constant(weight), 0.2, 255) if int8 else ops.constant(weight)
    y = ops.convolution(fq(x, 4.0) if int8 else x, w, [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([fq(y, 20.0) if int8 else y], [x])


class PeakKernel:
    """The peak convolution as a candidate in the interleaved rounds: each call keeps the convolution's own time
    from OpenVINO's counters, so its rate is taken round by round beside the graphs it is the limit for."""

    def __init__(self, threads: int, int8: bool = True, hint: str = "f32"):
        import openvino as ov

        self.request = ov.Core().compile_model(peak_model(int8), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": hint,
            "PERF_COUNT": True}).create_infer_request()
        self.x = np.random.default_rng(0).standard_normal((1, PEAK_CHANNELS, PEAK_GRID, PEAK_GRID)).astype(np.float32)
        self.gop = 2 * PEAK_GRID * PEAK_GRID * PEAK_CHANNELS * PEAK_CHANNELS / 1e9
        self.warmup, self.seconds = WARMUP, []

    def __call__(self) -> None:
        self.request.infer({0: self.x})
        if self.warmup:
            self.warmup -= 1
            return
        self.seconds.append(sum(p.real_time.total_seconds() for p in self.request.profiling_info
                                if p.node_type == "Convolution"))

    def rates(self, iters: int) -> list[float]:
        """GOP/s in each of ``interleaved``'s rounds (``iters`` calls a round after the warm-up)."""
        return [self.gop / statistics.median(self.seconds[r:r + iters]) for r in range(0, len(self.seconds), iters)]


def gemm_peak(threads: int) -> dict[str, float]:
    """GOP/s of the peak convolution in bf16 and f32, from OpenVINO's counters, timed on its own (the INT8 peak is
    timed in the interleaved rounds, :class:`PeakKernel`)."""
    peaks = {}
    for name in ("bf16", "f32"):
        kernel = PeakKernel(threads, int8=False, hint=name)
        for _ in range(WARMUP + 10):
            kernel()
        peaks[name] = kernel.gop / statistics.median(kernel.seconds)
    return peaks


GEMM_KINDS = ("stem convolutions", "depthwise convolutions", "1x1 convolutions with a fused GELU (fc1)",
              "other 1x1 convolutions (fc2, fuse)", "MatMuls (token mixing, head)")


class CountedGraph:
    """A graph compiled with OpenVINO's counters, as a candidate in the interleaved rounds: each call after the
    warm-up keeps every executed node's time, so its kernels are timed in the same rounds as the peak."""

    def __init__(self, model, threads: int, x: np.ndarray, warmup: int = WARMUP):
        import openvino as ov

        self.compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True,
                                                               "PERFORMANCE_HINT": "LATENCY"})
        self.request, self.x, self.warmup = self.compiled.create_infer_request(), x, warmup
        self.times: dict[str, list[float]] = {}

    def __call__(self) -> None:
        self.request.infer({0: self.x})
        if self.warmup:
            self.warmup -= 1
            return
        for p in self.request.profiling_info:
            if p.status == p.Status.EXECUTED:
                self.times.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)

    def kernels(self) -> tuple[dict, float]:
        """Per kind of GEMM kernel: (nodes, GOP, median ms a run), from the counters and the runtime graph's
        shapes; and the median ms a run of every other executed node (elementwise, norms, layout)."""
        from math import prod

        kinds, other = {k: [0, 0.0, 0.0] for k in GEMM_KINDS}, 0.0
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            if op.get_friendly_name() not in self.times:
                continue
            info = {key: str(op.get_rt_info()[key].value) for key in op.get_rt_info().keys()}
            ms = statistics.median(self.times[op.get_friendly_name()])
            shapes = ([tuple(op.input(i).get_partial_shape().to_shape()) for i in range(2)]
                      if op.get_input_size() > 1 else [])
            out = tuple(op.output(0).get_partial_shape().to_shape())
            if info.get("layerType") == "Convolution":
                weight = shapes[1]  # (OC, IC, kh, kw), or (groups, OC/g, IC/g, kh, kw)
                macs = prod(out) * prod(weight[-3:])
                kind = (GEMM_KINDS[1] if len(weight) == 5 else GEMM_KINDS[0] if "1x1" not in info["primitiveType"]
                        else GEMM_KINDS[2] if ".act" in info.get("originalLayersNames", "") else GEMM_KINDS[3])
            elif info.get("layerType") in ("MatMul", "FullyConnected"):
                macs, kind = prod(out) * shapes[0][-1], GEMM_KINDS[4]
            else:
                other += ms
                continue
            kinds[kind][0] += 1
            kinds[kind][1] += 2 * macs / 1e9
            kinds[kind][2] += ms
        return {k: tuple(v) for k, v in kinds.items() if v[0]}, other


def throughput_rows(graphs: dict, args, batch: int = 8, seconds: float = 1.5) -> list[tuple]:
    """(name, streams, img/s, shipped INT8 speedup) at ``batch``, as `bench`'s throughput column runs it
    (OpenVINORunner.images_per_second: one batch in flight per stream the THROUGHPUT hint picks), in
    interleaved rounds; the ratio is the median over rounds of the shipped INT8's img/s / candidate img/s."""
    import random
    from edgesmlp.runtimes.openvino import OpenVINORunner

    x = np.random.default_rng(1).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    runners = {name: OpenVINORunner(m, batch, args.threads, hint) for name, (m, hint) in graphs.items()}
    streams = {name: r.throughput_streams for name, r in runners.items()}
    per_round, names = [], list(runners)
    for k in range(args.rounds):
        random.Random(k).shuffle(names)
        per_round.append({name: runners[name].images_per_second(x, seconds) for name in names})
    rows = []
    for name in runners:
        ips = statistics.median(r[name] for r in per_round)
        ratio = statistics.median(r[SHIPPED] / r[name] for r in per_round)
        rows.append((name, streams[name], ips, ratio))
        print(f"batch {batch} {name:16s} {streams[name]} streams {ips:8.1f} img/s  shipped INT8 is {ratio:.2f}x", flush=True)
    return rows


def profile_lines(name: str, profile, top: int = 8) -> list[str]:
    """Time per op type and executed precision, from OpenVINO's performance counters (PERF_COUNT)."""
    total = sum(layer.ms for layer in profile.layers)
    reorders = [layer for layer in profile.layers if layer.op == "Reorder"]
    lines = [f"`{name}`: {total:.2f} ms summed over {len(profile.layers)} executed nodes; "
             f"{len(reorders)} Reorders take {sum(r.ms for r in reorders) / total:.0%}", "",
             "| op type | executed precision | nodes | ms | share |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['op']} | {r['precision']} | {r['count']} | {r['ms']:.2f} | {r['share']:.0%} |"
              for r in profile.by_type()[:top]]
    return lines + [""]


def kernel_lines(kinds: dict, other_ms: float, peak: float, gop: float) -> list[str]:
    """The shipped graph's GEMM kernels against the INT8 peak, and the most of that peak any graph with the same
    non-GEMM nodes could reach."""
    gemm_ms = sum(ms for _, _, ms in kinds.values())
    floor = 1000 * gop / peak
    lines = ["", "## Its kernels against the peak", "", "The shipped INT8 graph (no hint) compiled with OpenVINO's "
             "counters and timed at batch 1 as a candidate in the interleaved rounds above, beside the peak: each GEMM "
             "kernel's operations (from the runtime graph's shapes) over its median time, by kind. A fused GELU's time "
             "is inside its convolution's.", "",
             "| kernels | nodes | GOP | ms | GOP/s | of the INT8 peak |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {kind} | {n} | {g:.3f} | {ms:.2f} | {1000 * g / ms:.0f} | {1000 * g / ms / peak:.0%} |"
              for kind, (n, g, ms) in kinds.items()]
    lines += [f"| every other node (elementwise, norms, layout) | | 0 | {other_ms:.2f} | | |", "",
              f"A graph whose GEMMs all ran at the peak ({floor:.1f} ms for {gop:.2f} GOP) and whose other nodes took "
              f"what these take ({other_ms:.1f} ms) would run at {floor / (floor + other_ms):.0%} of the peak; the "
              f"shipped graph's counters sum to {gemm_ms + other_ms:.1f} ms, {floor / (gemm_ms + other_ms):.0%} of it."]
    return lines


def write(rows, ptq, args, profiles=None, batched=None) -> None:
    lines = [
        "# OpenVINO INT8: edgesmlp vs the plain graph (sMLPNet-T, 224, batch 1)",
        "",
        f"`python benchmarks/openvino_int8.py --rounds {args.rounds} --iters {args.iters} --threads {args.threads} "
        f"--calib {args.calib}" + (f" --name {args.name}" if args.name != "openvino_int8" else "") + "`. Interleaved rounds in one process; the ratio is the median over rounds of "
        f"candidate/{SHIPPED} time (> 1: edgesmlp's INT8 as shipped is faster). OpenVINO runs with INFERENCE_PRECISION_HINT=f32 "
        f"except the *_default and *_nohint rows, which get the CPU's default: {args.default_precision} on this CPU. "
        "Every IR has a static batch of 1 except edgesmlp_int8_dynamic.",
        "",
        "| candidate | p50 ms | p90 ms | shipped INT8 speedup |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {p50:.2f} | {p90:.2f} | {r:.2f}x |" for n, p50, p90, r in rows]
    lines += ["", f"Post-training quantization with {args.calib} calibration images, each in a fresh process: the "
              "OpenVINO model and the calibration images (uint8 pixels, as the quantize job holds them) are built "
              "first, then resident memory is sampled every 5 ms "
              "during the PTQ call alone. The process high-water mark also counts building and folding the "
              "PyTorch model before PTQ. The child process starts its own subprocesses (OpenVINO's telemetry, which NNCF "
              "calls) by fork, as a user's process does.", "",
              "| recipe | PTQ seconds | peak RSS during PTQ MB | increase during PTQ MB | process high-water MB |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['seconds']:.1f} | {v['peak_rss_mb']:.0f} | {v['ptq_rss_increase_mb']:.0f} | "
              f"{v['process_high_water_mb']:.0f} |" for k, v in ptq.items()]
    if batched:
        lines += ["", "## Batch 8 (throughput)", "", "As `bench`'s throughput column runs it: one batch of 8 in flight per "
                  "stream OpenVINO's THROUGHPUT hint picks here, each stream a separately compiled single-stream model "
                  "(OpenVINO's own 2-stream compilation computes wrong INT8 logits on sMLPNet: "
                  "openvino_streams_repro.md); 1.5 s per graph per round, the ratio is the median over rounds of "
                  f"{SHIPPED} img/s over the candidate's.", "",
                  "| candidate | streams | img/s | shipped INT8 speedup |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {st} | {ips:.1f} | {r:.2f}x |" for n, st, ips, r in batched]
    if getattr(args, "peaks", None):
        shipped = next(p50 for n, p50, _, _ in rows if n == SHIPPED)
        lines += ["", "## The limit", "", f"One 1x1 convolution of 3136 x 1024 x 1024 (a GEMM far larger than any in "
                  f"sMLPNet-T), {args.threads} threads, from OpenVINO's counters: the most this CPU does per precision. "
                  "The INT8 one runs as a candidate in the interleaved rounds above (its median over rounds), bf16 and "
                  f"f32 on their own after them. sMLPNet-T is {args.gop:.2f} GOP, so its arithmetic alone takes at "
                  "least the time in the last column."
                  "", "", "| precision | GOP/s | sMLPNet-T at that rate, ms |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.0f} | {1000 * args.gop / v:.1f} |" for k, v in args.peaks.items()]
        floor = 1000 * args.gop / args.peaks["int8"]
        fractions = args.round_fractions
        lines += ["", f"edgesmlp's INT8 as shipped ({shipped:.2f} ms) runs at {statistics.median(fractions):.0%} of the "
                  f"INT8 peak: the median over rounds of the peak's time for sMLPNet-T's GOP over the shipped graph's, "
                  f"both timed in the same round ({min(fractions):.0%}-{max(fractions):.0%} over the "
                  f"{len(fractions)} rounds), so a slower hour of the host moves both."]
        if getattr(args, "relu_probe", None):
            _, probe, _, ratio = args.relu_probe
            lines += ["", f"The erf GELUs (three a block) are elementwise work the GEMM peak does not count: the same "
                      f"INT8 recipe with ReLU in their place (a probe, not sMLPNet) runs {probe:.2f} ms in the same "
                      f"rounds, so they take {1 - ratio:.0%} of the shipped INT8's time."]
            nncf = next(p50 for n, p50, _, _ in rows if n == "nncf_int8_plain_nohint")
            bound, needed = floor + shipped - probe, nncf / 1.8
            lines += ["", f"So a graph that ran all its arithmetic at that peak, with its erf GELUs no cheaper than this "
                      f"one's (their cost over ReLU), would take {floor:.1f} + {shipped - probe:.1f} = {bound:.1f} ms. "
                      f"Running 1.8x faster than NNCF's INT8 as users compile it ({nncf:.2f} ms) needs {needed:.1f} ms: "
                      + ("below that, out of reach in this run's conditions." if bound > needed
                         else f"above that, reachable in principle; the shipped graph is {shipped / needed:.2f}x "
                         "short of it.")]
    if getattr(args, "kernels", None):
        lines += kernel_lines(*args.kernels, args.peaks["int8"], args.gop)
    if profiles:
        lines += ["", "## Where the time goes", "", "OpenVINO's performance counters, 10 inferences per graph at batch 1 "
                  "(the counters add their own overhead, so the sums run above the p50s); the precision is the one each "
                  "node's kernel executed in.", ""]
        for name, profile in profiles.items():
            lines += profile_lines(name, profile)
    from benchmarks.common import write_result

    write_result(args.name, lines, "torch", "openvino", "nncf")


if __name__ == "__main__":
    main()
