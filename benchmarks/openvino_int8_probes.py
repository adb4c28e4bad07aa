"""Rewrites of the shipped OpenVINO INT8 graph that were measured and not shipped (sMLPNet-T, 224).

    python benchmarks/openvino_int8_probes.py [--rounds 5] [--probes NAME ...] [--name openvino_int8_probes]

Each probe changes one thing in the openvino target's channels-last deploy form, goes through the shipped
recipe (NNCF performance preset, min-max ranges, 32 random calibration images) and is timed against the
shipped graph in interleaved rounds in one process, compiled with no hint as shipped: at batch 1 on 2 threads,
and at batch 8 on 1 thread (one stream of the throughput pool `bench` runs on 2 cores).

  bias_after_fuse   the axial MatMuls without their biases, which are carried past the fuse as two broadcast
                    Adds ((H, C) and (W, C) tables: exact in float), so each MatMul's requantization can fuse
                    into it; the P weights are requantized per tensor, because OpenVINO 2026.4 does not compile
                    an INT8 left MatMul with per-row weight scales feeding a FakeQuantize
  no_mixing_bias    the same without the carried biases: not sMLPNet, the most that removing those Adds saves
  gelu_tanh         every GELU in its tanh approximation (not sMLPNet's erf GELU, and it breaks the logits proof)
  flat_concat       the Concat and fuse on the (N*H*W, C) view instead of (N, H, W, C)
  nchw_concat       the mixed branches permuted back to NCHW, concatenated on its channel axis and fused by the
                    1x1 convolution (the plugin's channels-last Concat kernel instead of its reference one)
  other_fuse        the shipped graph with the Concat fused the way this CPU does not default to
                    (OpenVINOPTQConfig.fuse: by the 1x1 convolution on x86 without VNNI, by a MatMul elsewhere)
  other_weight_bits the shipped graph quantized with the weight width this CPU does not default to (8 bits where
                    it defaults to 7, on x86 without VNNI, and 7 elsewhere): the speed of that choice alone
  other_token_mixing the shipped graph with its axial MatMuls in the precision this CPU does not default to
                    (OpenVINOPTQConfig.token_mixing: float on x86 without VNNI, INT8 elsewhere)
  ffn_matmul        the channel MLP's two 1x1 convolutions as MatMuls on the normalized (N, H*W, C) view, so the
                    plugin runs them as FullyConnected (as NNCF's plain graph runs its Linear layers)

Random weights are fine for speed. Writes benchmarks/results/openvino_int8_probes.md (or --name NAME.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t, write_result  # noqa: E402

SIZE = 224


def _fuse_parts(tm, x: torch.Tensor, bias: bool) -> list[torch.Tensor]:
    """The Concat's inputs on the NHWC view ``x``: identity, W-mixed and H-mixed, mixed as shipped
    (``AxialMix.along_*_nhwc``) or, without ``bias``, by the same MatMuls with no bias."""
    if bias:
        mixed = [tm.mix.along_w_nhwc(x), tm.mix.along_h_nhwc(x)]
    else:
        n, h, w, c = x.shape
        mixed = [torch.matmul(tm.mix.weight_w.t(), x),
                 torch.matmul(tm.mix.weight_h, x.reshape(n, h, w * c)).view(n, h, w, c)]
    return [x, *(tm.fuse_in(m) for m in mixed)]


def bias_after_fuse(tm, qa: torch.Tensor, carried: bool = True) -> torch.Tensor:
    """fuse(cat[x, Pw x + bw, Ph x + bh]) = fuse(cat[x, Pw x, Ph x]) + bw (x) sw + bh (x) sh, where sw and sh are
    the fuse weight's row sums over the W- and H-mixed channels: the biases become an (W, C) and an (H, C) table."""
    x = qa.permute(0, 2, 3, 1)
    c = x.shape[-1]
    weight = tm.fuse.weight[:, :, 0, 0]
    out = torch.matmul(torch.cat(_fuse_parts(tm, x, bias=False), dim=-1), weight.t())
    if carried:
        out = out + tm.mix.bias_w[:, None] * weight[:, c:2 * c].sum(1) + (tm.mix.bias_h * weight[:, 2 * c:].sum(1))[:, None]
    return out.permute(0, 3, 1, 2)


def flat_concat(tm, qa: torch.Tensor) -> torch.Tensor:
    x = qa.permute(0, 2, 3, 1)
    n, h, w, c = x.shape
    cat = torch.cat([p.reshape(n * h * w, c) for p in _fuse_parts(tm, x, bias=True)], dim=-1)
    return torch.matmul(cat, tm.fuse.weight[:, :, 0, 0].t()).view(n, h, w, c).permute(0, 3, 1, 2)


def nchw_concat(tm, qa: torch.Tensor) -> torch.Tensor:
    x = qa.permute(0, 2, 3, 1)
    mixed = [part.permute(0, 3, 1, 2) for part in _fuse_parts(tm, x, bias=True)[1:]]
    return tm.fuse(torch.cat([qa, *mixed], dim=1))


def ffn_matmul(cm, x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = cm.norm._normalize(x.permute(0, 2, 3, 1).reshape(n, h * w, c), -1)
    hidden = cm.act(torch.matmul(cm.fc1_in(flat), cm.fc1.weight[:, :, 0, 0].t()) + cm.fc1.bias)
    out = torch.matmul(cm.fc2_in(hidden), cm.fc2.weight[:, :, 0, 0].t()) + cm.fc2.bias
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


PROBES = ("bias_after_fuse", "no_mixing_bias", "gelu_tanh", "flat_concat", "nchw_concat", "other_fuse", "ffn_matmul",
          "other_weight_bits", "other_token_mixing")


def probe_config(probe: str):
    """The shipped OpenVINOPTQConfig (this CPU's defaults), or for the other_* probes the other choice."""
    from edgesmlp.quantization.openvino_ptq import Fuse, OpenVINOPTQConfig, TokenMixing

    config = OpenVINOPTQConfig()
    if probe == "other_weight_bits":
        return OpenVINOPTQConfig(weight_bits=15 - config.weight_bits)
    if probe == "other_fuse":
        return OpenVINOPTQConfig(fuse=Fuse.matmul if config.fuse is Fuse.conv else Fuse.conv)
    if probe == "other_token_mixing":
        other = TokenMixing.int8 if config.token_mixing is TokenMixing.float else TokenMixing.float
        return OpenVINOPTQConfig(token_mixing=other)
    return config


def probe_model(model, probe: str):
    from edgesmlp.deploy import channels_last_mixing, to_deploy
    from edgesmlp.quantization.openvino_ptq import Fuse

    # The probes that rewrite the Concat and fuse below replace the whole channels-last mixing, whatever its fuse.
    deploy = channels_last_mixing(to_deploy(model), conv_fuse=probe_config(probe).fuse is Fuse.conv)
    mixes = {"bias_after_fuse": bias_after_fuse, "no_mixing_bias": lambda tm, qa: bias_after_fuse(tm, qa, False),
             "flat_concat": flat_concat, "nchw_concat": nchw_concat}
    for tm in deploy.token_mix:
        if probe in mixes and tm.channels_last:
            tm._mix_channels_last = lambda qa, tm=tm: mixes[probe](tm, qa)
        if probe == "gelu_tanh":
            tm.act = torch.nn.GELU(approximate="tanh")
    for cm in deploy.channel_mix:
        if probe == "gelu_tanh":
            cm.act = torch.nn.GELU(approximate="tanh")
        if probe == "ffn_matmul":
            cm.forward = lambda x, cm=cm: ffn_matmul(cm, x)
    return deploy


def per_tensor_mixing_weights(int8) -> int:
    """Requantize every left-operand MatMul's weight (P) per tensor, in place; return how many."""
    import openvino.opset13 as ops

    from edgesmlp.quantization.openvino_bias import _value

    count = 0
    for op in int8.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight = op.input(0).get_source_output().get_node()
        if weight.get_type_name() != "Multiply":
            continue
        value = _value(weight)
        scale = np.float32(np.abs(value).max() / 127)
        q = np.clip(np.round(value / scale), -127, 127).astype(np.int8)
        chain = ops.multiply(ops.convert(ops.constant(q), "f32"), ops.constant(np.array(scale).reshape(1, 1)))
        op.input(0).replace_source_output(chain.output(0))
        count += 1
    return count


GEMMS = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "FullyConnectedCompressed",
         "FullyConnectedQuantizedLegacy")


def float_gemms(int8, core) -> int:
    """How many of the compiled graph's convolutions and matrix products run in float (their kernel's name ends in
    f32/bf16, not i8): a rewrite the CPU plugin takes out of INT8 shows here, not only in its time."""
    from edgesmlp.runtimes.openvino import with_batch

    request = core.compile_model(with_batch(int8, 1), "CPU", {"PERF_COUNT": True}).create_infer_request()
    request.infer({0: np.zeros((1, 3, SIZE, SIZE), np.float32)})
    return sum(p.node_type in GEMMS and not p.exec_type.lower().endswith("i8")
               for p in request.profiling_info if p.status == p.Status.EXECUTED)


def main() -> None:
    import openvino as ov

    import openvino_int8 as recorded
    from edgesmlp.export import to_openvino
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_openvino
    from edgesmlp.runtimes.openvino import with_batch
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES))
    parser.add_argument("--name", default="openvino_int8_probes",
                        help="record as benchmarks/results/NAME.md (one record per kind of CPU)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, calibration = random_smlpnet_t(), recorded.calibration(32)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    graphs, float_error = {}, {}
    for probe in ("shipped", *args.probes):
        deploy = probe_model(model, probe)
        with torch.no_grad():
            float_error[probe] = float((deploy(x) - expected).abs().max() / expected.abs().max())
        config = probe_config(probe)
        int8 = quantize_openvino(to_openvino(deploy, 3, SIZE, batch=-1), calibration, config)
        requantized = per_tensor_mixing_weights(int8) if probe in ("bias_after_fuse", "no_mixing_bias") else 0
        graphs[probe] = int8
        print(f"{probe}: float logits relative error {float_error[probe]:.1e}"
              + (f", {requantized} P weights requantized per tensor" if requantized else ""), flush=True)
    core, ratios = ov.Core(), {}
    floats = {probe: float_gemms(int8, core) for probe, int8 in graphs.items()}
    for batch, threads, iters in ((1, 2, 8), (8, 1, 2)):
        inputs = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
        calls = {}
        for probe, int8 in graphs.items():
            request = core.compile_model(with_batch(int8, batch), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                          "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            calls[probe] = lambda request=request: request.infer({0: inputs})
        timings, per_round = interleaved(calls, rounds=args.rounds, iters=iters)
        for probe in graphs:
            ratios[probe, batch] = (timings[probe].p50, paired_ratio(per_round, "shipped", probe))
            print(f"batch {batch}, {threads} threads: {probe:16s} p50 {timings[probe].p50:8.2f} ms, "
                  f"{ratios[probe, batch][1]:.3f}x the shipped graph's speed", flush=True)
    lines = ["# OpenVINO INT8 probes: rewrites measured and not shipped (sMLPNet-T, 224)", "",
             f"`python benchmarks/openvino_int8_probes.py --rounds {args.rounds}"
             + (f" --name {args.name}" if args.name != "openvino_int8_probes" else "")
             + (f" --probes {' '.join(args.probes)}" if tuple(args.probes) != PROBES else "") + "`: each probe through the shipped "
             "recipe, compiled with no hint as shipped, timed in interleaved rounds in one process against the "
             "shipped graph. Speed is the median over rounds of shipped time / probe time (> 1: the probe is "
             "faster). Float error: the probe's float logits against the official module's (the deploy proof "
             "asks <= 1e-5). Float GEMMs: the compiled graph's convolutions and matrix products whose kernel is "
             "not INT8 (OpenVINO's performance counters).", "",
             "| probe | float logits error | float GEMMs | batch 1, 2 threads: p50 ms | speed | batch 8, 1 thread: p50 ms | speed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for probe in graphs:
        (p1, r1), (p8, r8) = ratios[probe, 1], ratios[probe, 8]
        lines.append(f"| {probe} | {float_error[probe]:.1e} | {floats[probe]} | {p1:.2f} | {r1:.3f}x | {p8:.1f} | {r8:.3f}x |")
    shipped = OpenVINOPTQConfig()
    bits, fuse, mixing = shipped.weight_bits, shipped.fuse.value, shipped.token_mixing.value
    lines += ["", f"Every graph has this CPU's default {bits}-bit weights (other_weight_bits {15 - bits}-bit ones), "
              f"its default `{mixing}` token mixing (other_token_mixing the other one) and, unless it rewrites the "
              f"fuse, its default `{fuse}` fuse (other_fuse the other one)."]
    write_result(args.name, lines, "openvino", "nncf", "torch")


if __name__ == "__main__":
    main()
