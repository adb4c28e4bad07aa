"""Fold normalisation into neighbouring layers: what can fold (`fold_plan`) and the folds themselves.

Each fold deep-copies the model, rewrites it under ``torch.no_grad()``, and returns the copy;
``fold_all`` proves every step against the original logits and raises :class:`FoldError` if one
drifts. Degenerate BatchNorm statistics (NaN, zero or negative variance) are refused by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgesmlp.errors import FoldError
from edgesmlp.model import HEAD, block_layers, has_layer, sMLPNet


@dataclass(frozen=True)
class FoldSite:
    layer: str  # the norm's parameter prefix in the official state dict
    kind: str  # BatchNorm2d or LayerNorm
    into: str | None  # the layer it folds into, or None where it cannot fold
    note: str


def fold_plan(model: sMLPNet) -> list[FoldSite]:
    """Every BatchNorm / LayerNorm of ``model`` and where (or why not) it folds."""
    sites = []
    for k in range(len(model.token_mix)):
        layer = block_layers(k)
        if has_layer(model, layer["dw_bn"]):
            sites.append(FoldSite(layer["dw_bn"], "BatchNorm2d", None,
                                  "precedes a GELU on the residual stream: kept as one per-channel multiply-add"))
        if has_layer(model, layer["smlp_bn"]) and has_layer(model, layer["dwconv"]):
            sites.append(FoldSite(layer["smlp_bn"], "BatchNorm2d", layer["dwconv"],
                                  "folds into the depthwise conv that feeds it (the conv gains a bias)"))
        elif has_layer(model, layer["smlp_bn"]):
            sites.append(FoldSite(layer["smlp_bn"], "BatchNorm2d", None, "no depthwise conv before it (global-only "
                                  "variant) and a GELU after it: kept as one per-channel multiply-add"))
        sites.append(FoldSite(layer["norm"], "LayerNorm", layer["fc1"],
                              "affine folds into the first FFN Linear; the normalisation itself stays"))
    sites.append(FoldSite(HEAD["norm"], "BatchNorm2d", HEAD["fc"], "folds through the mean pool into the head"))
    return sites


# --- the folds: each returns a new model and proves it computes the same logits -----------------------

FOLD_RTOL = 1e-5  # max |logit diff| allowed, relative to the reference logits' range


class ScaleShift(nn.Module):
    """An inference BatchNorm as one per-channel multiply-add (for the BN that cannot fold)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def bn_scale_shift(bn: nn.BatchNorm2d, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift in eval mode; refuses degenerate statistics."""
    var, mean = bn.running_var, bn.running_mean
    if var is None or mean is None:
        raise FoldError(f"{name} has no running statistics (track_running_stats=False): it cannot be folded")
    bad = ~torch.isfinite(var) | ~torch.isfinite(mean) | (var <= 0)
    if bad.any():
        channel = int(bad.nonzero()[0])
        raise FoldError(
            f"{name}: running_var[{channel}] = {var[channel].item():g}, running_mean[{channel}] = "
            f"{mean[channel].item():g}; a BatchNorm needs finite statistics and positive variance to fold - "
            "the checkpoint's statistics are broken (re-estimate them on training data)"
        )
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -mean * scale + (bn.bias if bn.affine else 0.0)
    return scale.detach(), shift.detach()


@torch.no_grad()
def fold_dwconv_bn(model: sMLPNet) -> nn.Module:
    """Fold each sMLPBlock's BatchNorm into the depthwise conv that feeds it; the conv gains a bias."""
    model = copy.deepcopy(model).eval()
    for k in range(len(model.token_mix)):
        layer = block_layers(k)
        if not (has_layer(model, layer["smlp_bn"]) and has_layer(model, layer["dwconv"])):
            continue  # a variant without one of the two: the BN (if any) stays a multiply-add
        bn = model.get_submodule(layer["smlp_bn"])
        if isinstance(bn, nn.Identity):
            continue
        conv = model.get_submodule(layer["dwconv"])
        scale, shift = bn_scale_shift(bn, layer["smlp_bn"])
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(shift + (conv.bias * scale if conv.bias is not None else 0.0))
        model.set_submodule(layer["dwconv"], fused)
        model.set_submodule(layer["smlp_bn"], nn.Identity())
    return model


@torch.no_grad()
def fold_head_bn(model: sMLPNet) -> nn.Module:
    """Fold the final ``batch_norm`` through the (linear) mean pool into ``mlp_head``."""
    model = copy.deepcopy(model).eval()
    bn = model.get_submodule(HEAD["norm"])
    if isinstance(bn, nn.Identity):
        return model
    scale, shift = bn_scale_shift(bn, HEAD["norm"])
    head = model.get_submodule(HEAD["fc"])
    head.bias.copy_(head.bias + head.weight @ shift)
    head.weight.copy_(head.weight * scale.view(1, -1))
    model.set_submodule(HEAD["norm"], nn.Identity())
    return model


@torch.no_grad()
def fold_layernorm_affine(model: sMLPNet) -> nn.Module:
    """Fold each channel-mix LayerNorm's weight and bias into the first Linear of its FFN."""
    model = copy.deepcopy(model).eval()
    for k in range(len(model.channel_mix)):
        layer = block_layers(k)
        norm, fc1 = model.get_submodule(layer["norm"]), model.get_submodule(layer["fc1"])
        if not norm.elementwise_affine:
            continue
        fc1.bias.copy_(fc1.bias + fc1.weight @ norm.bias)
        fc1.weight.copy_(fc1.weight * norm.weight.view(1, -1))
        model.set_submodule(layer["norm"], nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False))
    return model


@torch.no_grad()
def keep_dwblock_bn_as_scale_shift(model: sMLPNet) -> nn.Module:
    """The BatchNorms left before a GELU (the DWConvBlock's, and the sMLPBlock's where no depthwise conv
    precedes it): each becomes one per-channel multiply-add."""
    model = copy.deepcopy(model).eval()
    for k in range(len(model.token_mix)):
        for role in ("dw_bn", "smlp_bn"):
            name = block_layers(k)[role]
            if has_layer(model, name) and isinstance(bn := model.get_submodule(name), nn.BatchNorm2d):
                model.set_submodule(name, ScaleShift(*bn_scale_shift(bn, name)))
    return model


@torch.no_grad()
def check_equivalent(
    reference: nn.Module | torch.Tensor, candidate: nn.Module, inputs: torch.Tensor, what: str,
    rtol: float = FOLD_RTOL,
) -> float:
    """Return max |logit diff| relative to the logits' scale; raise :class:`FoldError` above ``rtol``.

    ``reference`` is the original model or its logits on ``inputs`` (computed once by callers that
    prove several candidates). The scale is the larger of the logit range and the largest |logit|:
    with one class (or near-equal logits) the range alone can be tiny while float32 rounding still
    scales with the logits' size.
    """
    expected = reference if isinstance(reference, torch.Tensor) else reference.eval()(inputs)
    got = candidate.eval()(inputs)
    span = max(float(expected.max() - expected.min()), float(expected.abs().max())) or 1.0
    relative = float((expected - got).abs().max()) / span
    if not relative <= rtol:
        raise FoldError(f"{what} changed the logits: max |diff| is {relative:.3g} of their range (allowed {rtol:g})")
    return relative


def example_inputs(model: sMLPNet, batch: int = 4, seed: int = 0) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.in_chans, c.image_size, c.image_size, generator=torch.Generator().manual_seed(seed))


def check_statistics(model: nn.Module) -> None:
    """Refuse, by layer name, any BatchNorm whose statistics cannot fold (before anything runs)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            bn_scale_shift(module, name)


FOLDS = (
    ("sMLPBlock BatchNorm -> depthwise conv", fold_dwconv_bn),
    ("head batch_norm -> mlp_head", fold_head_bn),
    ("LayerNorm affine -> FFN fc1", fold_layernorm_affine),
    ("BatchNorm before GELU -> per-channel multiply-add", keep_dwblock_bn_as_scale_shift),
)


@torch.no_grad()
def fold_all(model: sMLPNet, inputs: torch.Tensor | None = None,
             expected: torch.Tensor | None = None) -> tuple[nn.Module, dict[str, float]]:
    """Apply every fold in turn, proving each against the original logits; return the model and errors."""
    check_statistics(model)
    inputs = example_inputs(model) if inputs is None else inputs
    expected = model.eval()(inputs) if expected is None else expected  # the original, run once
    errors = {}
    current = model.eval()
    for name, fold in FOLDS:
        folded = fold(current)
        errors[name] = check_equivalent(expected, folded, inputs, name)
        current = folded
    return current, errors
