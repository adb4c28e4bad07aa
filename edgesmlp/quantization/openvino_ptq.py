"""Post-training INT8 quantization of an OpenVINO model with NNCF.

Defaults were chosen by measuring the trained bundled model (benchmarks/results/openvino_ptq_presets.md):
NNCF's default (performance) preset on the deploy form with bias correction off. NNCF 3.4's bias
correction crashes on the deploy form's left-operand MatMul (``P @ x``), so ``--bias-correction fast`` on
the deploy form is edgesmlp's own (``openvino_bias``, the same per-layer mean shift in closed form); it
barely changed the logit KL of a trained digits model (benchmarks/results/accuracy_control.md), so it stays off by
default. ``ModelType.TRANSFORMER`` (which SmoothQuant needs) collapsed a trained sMLPNet's
top-1 in our measurements, so SmoothQuant is off unless asked for. Elementwise Adds are left out of
the quantization (``quantize_sums``, see ``_ignored_scope``). Activation ranges are the min and max over
the calibration images (``activation_range``): with NNCF's default statistic and quantized Adds, a trained
digits model kept several times the logit KL divergence (benchmarks/results/accuracy_control.md).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

import numpy as np

from edgesmlp.config import choice
from edgesmlp.errors import ConfigError, MissingDependencyError
from edgesmlp.progress import foreign_output
from edgesmlp.quantization.calibrate import weight_qmax


class Preset(str, Enum):
    performance = "performance"  # symmetric weights and activations
    mixed = "mixed"  # symmetric weights, asymmetric activations


class ActivationRange(str, Enum):
    minmax = "minmax"  # the min and max over every calibration image
    histogram = "histogram"  # NNCF's histogram (MSE-fitted) range
    nncf = "nncf"  # NNCF's own default statistic


class Fuse(str, Enum):
    """What fuses the channels-last deploy form's Concat of identity and mixed branches (``deploy.TokenMix``)."""

    matmul = "matmul"  # a MatMul over channels: the CPU plugin's INT8 FullyConnected
    conv = "conv"  # the Concat permuted to NCHW and the 1x1 convolution: the plugin's INT8 Convolution


class TokenMixing(str, Enum):
    """The precision of the deploy form's axial token-mixing MatMuls (``P @ x``, two a block)."""

    int8 = "int8"  # NNCF quantizes them: the plugin's INT8 MatMul
    float = "float"  # kept out of NNCF's scope: the plugin's float MatMul, the Concat after them still INT8


class BiasCorrection(str, Enum):
    off = "off"
    fast = "fast"
    full = "full"


@dataclass(frozen=True)
class OpenVINOPTQConfig:
    preset: Preset = Preset.performance
    bias_correction: BiasCorrection = BiasCorrection.off
    smooth_quant: float | None = None  # alpha in [0, 1]; enables NNCF's transformer placement
    ignored: tuple[str, ...] = field(default_factory=tuple)  # node names (exact) to keep in FP32
    quantize_sums: bool = False  # let NNCF quantize the inputs of elementwise Adds (residual sums, folded shifts)
    activation_range: ActivationRange = ActivationRange.minmax  # how activation ranges are estimated
    # Calibration images per NNCF inference. With min-max ranges the INT8 graph is the same for any value; more is
    # faster and holds more memory (benchmarks/results/openvino_ptq_batch.md).
    calib_batch: int = 1
    # 7: NNCF's overflow fix on every layer (weights in half the INT8 range), for x86 CPUs without VNNI, whose
    # u8 x s8 kernels saturate on 8-bit weights (benchmarks/results/openvino_int8_weight_bits_avx2.md);
    # 8: NNCF's default (the fix on the first layer only). None: 7 on such a CPU, else 8.
    weight_bits: int | None = None
    # conv on x86 without VNNI, whose INT8 FullyConnected is oneDNN's slower jit_gemm_i8; matmul with VNNI, where it
    # is the faster (benchmarks/results/openvino_int8_probes_{avx2,epyc}.md, probe other_fuse). None: conv there,
    # else matmul.
    fuse: Fuse | None = None
    # float on x86 without VNNI, whose INT8 MatMul is oneDNN's jit_gemm_i8, far below the INT8 peak at the axial
    # mixing's K of 7-56, so sMLPNet-T ran faster with those MatMuls in f32 (benchmarks/results/openvino_int8_avx2.md,
    # "Its kernels against the peak"); int8 elsewhere. None: that default.
    token_mixing: TokenMixing | None = None

    def __post_init__(self) -> None:
        from edgesmlp.timing import weight_bits_for_this_cpu, x86_without_vnni

        if self.weight_bits is None:
            object.__setattr__(self, "weight_bits", weight_bits_for_this_cpu())
        if self.fuse is None:
            object.__setattr__(self, "fuse", Fuse.conv if x86_without_vnni() else Fuse.matmul)
        object.__setattr__(self, "fuse", choice(Fuse, self.fuse, "--fuse"))
        if self.token_mixing is None:
            object.__setattr__(self, "token_mixing", TokenMixing.float if x86_without_vnni() else TokenMixing.int8)
        object.__setattr__(self, "token_mixing", choice(TokenMixing, self.token_mixing, "--token-mixing"))
        weight_qmax(self.weight_bits)  # refuses anything but 7 or 8
        object.__setattr__(self, "preset", choice(Preset, self.preset, "--preset"))
        object.__setattr__(self, "bias_correction", choice(BiasCorrection, self.bias_correction, "--bias-correction"))
        object.__setattr__(self, "activation_range", choice(ActivationRange, self.activation_range,
                                                             "--activation-range"))
        object.__setattr__(self, "ignored", tuple(self.ignored))
        if isinstance(self.calib_batch, bool) or not isinstance(self.calib_batch, int) or self.calib_batch < 1:
            raise ConfigError(f"--calib-batch must be a whole number of images, 1 or more, got {self.calib_batch!r}")
        if self.calib_batch > 1 and self.activation_range is not ActivationRange.minmax:
            raise ConfigError(f"--calib-batch {self.calib_batch} needs --activation-range minmax: the "
                              f"{self.activation_range.value} ranges depend on how the images are batched")
        if self.calib_batch > 1 and self.smooth_quant is not None:
            raise ConfigError(f"--calib-batch {self.calib_batch} cannot go with NNCF's SmoothQuant, whose statistics "
                              "depend on how the images are batched: use --calib-batch 1")
        if self.smooth_quant is not None and not 0.0 <= self.smooth_quant <= 1.0:
            raise ConfigError(f"--smooth-quant alpha must be in [0, 1], got {self.smooth_quant}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preset"], d["bias_correction"], d["ignored"] = self.preset.value, self.bias_correction.value, list(self.ignored)
        d["activation_range"], d["fuse"] = self.activation_range.value, self.fuse.value
        d["token_mixing"] = self.token_mixing.value
        return d


def require_nncf():
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "INT8 quantization for OpenVINO", "pip install 'edgesmlp[workstation]'") from None
    return nncf


def check_request(config: OpenVINOPTQConfig, deploy_form: bool) -> None:
    """Everything that can be refused before any work: the runtime, and option combinations."""
    require_nncf()
    if config.calib_batch > 1 and _nncf_corrects_biases(config, deploy_form):
        raise ConfigError(f"--calib-batch {config.calib_batch} cannot go with NNCF's bias correction, whose statistics "
                          "depend on how the images are batched: use --calib-batch 1")
    if deploy_form and config.bias_correction is BiasCorrection.full:
        raise ConfigError(
            "--bias-correction full cannot run on the deploy form: NNCF's bias correction fails on its "
            "left-operand MatMul (P @ x); use --bias-correction fast (edgesmlp's own there) or --form reference"
        )


def _nncf_corrects_biases(config: OpenVINOPTQConfig, deploy_form: bool) -> bool:
    """Whether NNCF's own bias correction runs: ``full``, or ``fast`` off the deploy form (there fast is edgesmlp's
    ``openvino_bias``, as NNCF's crashes on the left-operand MatMul)."""
    return config.bias_correction is BiasCorrection.full or (
        config.bias_correction is BiasCorrection.fast and not deploy_form)


def calibration_graph(model, in_chans: int, image_size: int, config: OpenVINOPTQConfig | None = None):
    """The dynamic-batch ov.Model NNCF calibrates for ``model``: the deploy form with its token mixing channels-last
    (``deploy.channels_last_mixing``: no Reorders and INT8 ``P @ x`` in OpenVINO's CPU plugin) and fused as
    ``config.fuse`` says (this CPU's default without a config), the reference form as it is. Layer names for
    ``--ignore`` come from this graph."""
    from edgesmlp.deploy import DeploySMLPNet, channels_last_mixing
    from edgesmlp.export import to_openvino

    if isinstance(model, DeploySMLPNet):
        fuse = (config or OpenVINOPTQConfig()).fuse
        model = channels_last_mixing(model, conv_fuse=fuse is Fuse.conv)
    return to_openvino(model, in_chans, image_size, batch=-1)


def quantize_for_cpu(model, calibration: np.ndarray, config: OpenVINOPTQConfig, in_chans: int, image_size: int,
                     log=print):
    """``(graph, int8)``: NNCF INT8 of ``model``'s :func:`calibration_graph`, and that graph (the float model with the
    same layer names). Should OpenVINO's CPU plugin fail to compile the channels-last INT8 graph (2026.4 does where a
    FakeQuantize or the Concat directly follows an INT8 left MatMul; ``channels_last_mixing`` keeps the blocks it knows
    of NCHW), the NCHW deploy form is calibrated instead, and ``log`` says so."""
    from edgesmlp.deploy import DeploySMLPNet
    from edgesmlp.export import to_openvino
    from edgesmlp.runtimes.openvino import compile_error

    deploy = isinstance(model, DeploySMLPNet)
    graph = calibration_graph(model, in_chans, image_size, config)
    config = resolve_ignored(graph, config)
    log(f"quantizing for OpenVINO ({'deploy' if deploy else 'reference'} form, {len(calibration)} calibration "
        f"images, preset {config.preset.value})")
    int8 = quantize_openvino(graph, calibration, config, deploy_form=deploy)
    if deploy and (error := compile_error(int8)) is not None:
        log(f"OpenVINO cannot compile the channels-last INT8 graph ({error}): calibrating the NCHW deploy form")
        graph = to_openvino(model, in_chans, image_size, batch=-1)
        int8 = quantize_openvino(graph, calibration, config, deploy_form=deploy)
    return graph, int8


LAYER_OPS = ("Convolution", "GroupConvolution", "MatMul")


def resolve_ignored(model, config: OpenVINOPTQConfig) -> OpenVINOPTQConfig:
    """``config`` with its ``--ignore`` names (node names or module paths, ``quantize.layers``) as ``model``'s node
    names; ConfigError for a name of neither kind."""
    from edgesmlp.quantization.layers import Layer, resolve
    from edgesmlp.quantization.openvino_partial import module_of

    layers = [Layer(op.get_friendly_name(), module_of(op.get_friendly_name()), op.get_type_name())
              for op in model.get_ordered_ops() if op.get_type_name() in LAYER_OPS]
    names = {op.get_friendly_name() for op in model.get_ops()}
    known = tuple(n for n in config.ignored if n in names)  # any node NNCF can ignore, a layer or not
    rest = resolve(tuple(n for n in config.ignored if n not in names), layers)
    return replace(config, ignored=tuple(dict.fromkeys(known + rest)))


def quantize_openvino(model, calibration: np.ndarray, config: OpenVINOPTQConfig, deploy_form: bool = True):
    """Return an INT8 copy of the ov.Model ``model`` calibrated on ``calibration`` (N, C, H, W)."""
    check_request(config, deploy_form)
    config = resolve_ignored(model, config)
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ours = deploy_form and config.bias_correction is BiasCorrection.fast  # NNCF's crashes there (module doc)
    from nncf.quantization.advanced_parameters import OverflowFix

    advanced = AdvancedQuantizationParameters(disable_bias_correction=not _nncf_corrects_biases(config, deploy_form),
                                              overflow_fix=OverflowFix.ENABLE if config.weight_bits == 7
                                              else OverflowFix.FIRST_LAYER)
    if config.activation_range is not ActivationRange.nncf:
        advanced.activations_range_estimator_params = getattr(RangeEstimatorParametersSet,
                                                              config.activation_range.value.upper())
    kwargs = {}
    if config.smooth_quant is not None:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(
            convolution=config.smooth_quant, matmul=config.smooth_quant
        )
    # calib_batch images an item, normalised as NNCF asks for them (calibration may be uint8-backed Images). NNCF
    # runs one inference an item; min-max ranges are the same however the images are batched.
    b = config.calib_batch
    samples = nncf.Dataset(range(0, len(calibration), b), lambda i: calibration[i : i + b])
    # NNCF's progress bars go where ours go (progress.foreign_output); its INFO lines stay quiet.
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(max(level, logging.WARNING))
    try:
        with foreign_output():
            int8 = _nncf_quantize(nncf, model, samples, config, advanced, kwargs, kept_float_mixing(model, config))
    finally:
        nncf_log.setLevel(level)
    if ours:
        from edgesmlp.quantization.openvino_bias import correct_biases

        int8, _ = correct_biases(int8, model, calibration)
    requantize_transposed_concats(int8)
    return int8


def requantize_transposed_concats(int8) -> int:
    """Give every 1x1 Convolution fed by ``Transpose(Concat)`` (``Fuse.conv``) its own copy of the FakeQuantize the
    Concat's inputs share, between the Transpose and the Convolution; return how many were given one.

    NNCF quantizes the Concat's inputs with one unified range and nothing after them. OpenVINO's CPU plugin then
    takes the Transpose, the Convolution and its int8 weights for a weight-compressed 1x1 convolution
    (``ConvertWeightCompressedConv1x1ToMatmul``) and runs the fuse, and the MatMuls before it, in f32. A
    FakeQuantize with the same range on the transposed tensor changes no value (quantizing an already quantized
    tensor again on the same grid is the identity) and keeps the Convolution and the MatMuls INT8. Concats whose
    inputs do not all share one per-tensor FakeQuantize range are left as they are."""
    import openvino.opset13 as ops

    from edgesmlp.quantization.openvino_partial import behind_shape_ops

    count = 0
    for conv in int8.get_ordered_ops():
        if conv.get_type_name() != "Convolution":
            continue
        transpose = conv.input(0).get_source_output().get_node()
        concat = transpose.input(0).get_source_output().get_node() if transpose.get_type_name() == "Transpose" else None
        if concat is None or concat.get_type_name() != "Concat":
            continue
        quantizers = [behind_shape_ops(i.get_source_output().get_node()) for i in concat.inputs()]
        ranges = [_fq_range(q) if q.get_type_name() == "FakeQuantize" else None for q in quantizers]
        if None in ranges or len(set(ranges)) != 1:
            continue
        first = quantizers[0]
        fq = ops.fake_quantize(transpose.output(0), *(first.input(k).get_source_output() for k in range(1, 5)),
                               first.get_levels())
        fq.set_friendly_name(f"{conv.get_friendly_name()}/fq_input_0")
        conv.input(0).replace_source_output(fq.output(0))
        count += 1
    return count


def _fq_range(fq) -> tuple:
    """A per-tensor FakeQuantize's levels and its four range constants, to compare quantizers (None unless all are
    single constants: a per-channel range would not broadcast the same way after the Transpose)."""
    values = []
    for k in range(1, 5):
        source = fq.input(k).get_source_output().get_node()
        if source.get_type_name() != "Constant" or np.size(source.get_data()) != 1:
            return None
        values.append(np.asarray(source.get_data()).tobytes())
    return fq.get_levels(), *values


def axial_matmuls(model) -> tuple[str, ...]:
    """The token-mixing MatMuls of ``model`` (a deploy form's graph): those whose constant operand is a square
    matrix P, the mixing along one axis of the token grid (the fuse's and the head's weights are not square in
    sMLPNet)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or "token_mix" not in op.get_friendly_name():
            continue
        shapes = [tuple(op.input(i).get_partial_shape().to_shape()) for i in range(2)
                  if op.input_value(i).get_node().get_type_name() == "Constant"]
        if any(len(shape) == 2 and shape[0] == shape[1] for shape in shapes):
            names.append(op.get_friendly_name())
    return tuple(names)


def kept_float_mixing(model, config: OpenVINOPTQConfig) -> tuple[str, ...]:
    """The axial MatMuls ``config`` keeps out of NNCF's scope: all of them where ``token_mixing`` is float."""
    return axial_matmuls(model) if config.token_mixing is TokenMixing.float else ()


def _ignored_scope(nncf, config: OpenVINOPTQConfig, kept_float: tuple[str, ...] = ()):
    """The user's (and the budget search's) layers, ``kept_float`` (the axial MatMuls, see ``token_mixing``), and
    unless ``quantize_sums`` every Add: NNCF's FakeQuantize pairs on the residual sums and folded shifts carried a
    large share of INT8's logit KL on a trained sMLPNet and saved no time on sMLPNet-T
    (benchmarks/results/accuracy_control.md, openvino_residual_fusion.md)."""
    types = [] if config.quantize_sums else ["Add"]
    names = list(dict.fromkeys(config.ignored + kept_float))
    if not names and not types:
        return None
    return nncf.IgnoredScope(names=names, types=types, validate=False)


def _nncf_quantize(nncf, model, samples, config: OpenVINOPTQConfig, advanced, kwargs, kept_float=()):
    return nncf.quantize(
        model,
        samples,
        preset=nncf.QuantizationPreset.PERFORMANCE if config.preset is Preset.performance else nncf.QuantizationPreset.MIXED,
        subset_size=samples.get_length(),
        fast_bias_correction=config.bias_correction is not BiasCorrection.full,
        ignored_scope=_ignored_scope(nncf, config, kept_float),
        advanced_parameters=advanced,
        **kwargs,
    )
