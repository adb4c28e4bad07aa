"""Normalisation folding plan (what `inspect` reports); the folds themselves live beside it."""

from __future__ import annotations

from dataclasses import dataclass

from edgesmlp.model import sMLPNet


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
        sites.append(FoldSite(
            f"token_mix.{k}.0.conv_merge.BN", "BatchNorm2d", None,
            "precedes a GELU on the residual stream: kept as one per-channel multiply-add",
        ))
        sites.append(FoldSite(
            f"token_mix.{k}.1.BN", "BatchNorm2d", f"token_mix.{k}.0.conv_merge.Conv",
            "folds into the depthwise conv that feeds it (the conv gains a bias)",
        ))
        sites.append(FoldSite(
            f"channel_mix.{k}.1", "LayerNorm", f"channel_mix.{k}.2.net.0",
            "affine folds into the first FFN Linear; the normalisation itself stays",
        ))
    sites.append(FoldSite("batch_norm", "BatchNorm2d", "mlp_head.0", "folds through the mean pool into the head"))
    return sites
