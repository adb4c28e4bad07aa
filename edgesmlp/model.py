"""sMLPNet (Tang et al. 2021) with the official module tree and parameter names.

The names match microsoft/SPACH ``models/smlp.py`` exactly, including the ``proh_w`` spelling,
so an official state dict loads with ``strict=True``. The axial permutes are the official ones:
``proj_h`` sees W on its channel axis and so mixes tokens along W; ``proh_w`` mixes along H.
Drop-path is omitted: it is the identity at inference and carries no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from edgesmlp.config import PATCH_SIZE, Branches, Fusion, ModelConfig


STEM = "to_patch_embedding.{i}.0"
HEAD = {"norm": "batch_norm", "fc": "mlp_head.0"}


def block_layers(k: int) -> dict[str, str]:
    """Block ``k``'s layers by role, as official module paths: the one description fold, deploy and inspect share.

    A variant without the depthwise-conv block or the sMLP block has ``nn.Identity`` in that slot of
    ``token_mix[k]``, so every layer that exists keeps its official name (see :func:`has_layer`).
    """
    return {
        "dw_bn": f"token_mix.{k}.0.conv_merge.BN",  # BN -> GELU -> depthwise conv (cannot fold: a GELU follows)
        "dwconv": f"token_mix.{k}.0.conv_merge.Conv",
        "smlp_bn": f"token_mix.{k}.1.BN",  # folds into the depthwise conv before it
        "proj_h": f"token_mix.{k}.1.proj_h",  # mixes tokens along W (the official permute)
        "proh_w": f"token_mix.{k}.1.proh_w",  # mixes tokens along H
        "fuse": f"token_mix.{k}.1.fuse",  # fusion fc only
        "branch_weight": f"token_mix.{k}.1.branch_weight",  # fusion weighted_sum only (a parameter)
        "norm": f"channel_mix.{k}.1",  # LayerNorm; its affine folds into fc1
        "fc1": f"channel_mix.{k}.2.net.0",
        "fc2": f"channel_mix.{k}.2.net.3",
    }


def has_layer(model: nn.Module, path: str) -> bool:
    """Whether ``path`` names a layer (or parameter) of ``model``: variants leave some out."""
    try:
        model.get_submodule(path)
    except AttributeError:
        try:
            model.get_parameter(path)
        except AttributeError:
            return False
    return True


class Permute(nn.Module):
    """Stands in for einops' ``Rearrange`` in ``channel_mix`` (index 0 and 3; no parameters)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BN_Activ_Conv(nn.Module):  # noqa: N801 - official name
    """BatchNorm -> GELU -> depthwise 3x3 conv (the official ``conv_merge``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.BN = nn.BatchNorm2d(channels)
        self.Activation = nn.GELU()
        self.Conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv(self.Activation(self.BN(x)))


class DWConvBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_merge = BN_Activ_Conv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_merge(x)


class sMLPBlock(nn.Module):  # noqa: N801 - official name
    """BN -> GELU, then the identity, W-mixing (``proj_h``) and H-mixing (``proh_w``) branches, joined by ``fuse``.

    The official block is parallel with the identity and an fc fusion; the paper's ablations change the
    fusion (sum, weighted sum), drop the identity, or chain the two mixes (``proh_w`` on ``proj_h``'s output).
    """

    def __init__(self, grid: int, channels: int, config: ModelConfig | None = None):
        super().__init__()
        config = config or ModelConfig()
        self.channels = channels
        self.fusion, self.branches, self.identity = config.fusion, config.branches, config.identity
        self.activation = nn.GELU()
        self.BN = nn.BatchNorm2d(channels)
        self.proj_h = nn.Conv2d(grid, grid, 1)
        self.proh_w = nn.Conv2d(grid, grid, 1)
        if config.fusion is Fusion.fc:
            self.fuse = nn.Conv2d(channels * config.branch_count, channels, 1, bias=False)
        elif config.fusion is Fusion.weighted_sum:
            self.branch_weight = nn.Parameter(torch.ones(config.branch_count, channels))

    def mix_w(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_h(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def mix_h(self, x: torch.Tensor) -> torch.Tensor:
        return self.proh_w(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.BN(x))
        if self.branches is Branches.parallel:
            mixed = [self.mix_w(x), self.mix_h(x)]
        else:
            mixed = [self.mix_h(self.mix_w(x))]
        parts = [x] * self.identity + mixed
        if self.fusion is Fusion.fc:
            return self.fuse(torch.cat(parts, dim=1))
        if self.fusion is Fusion.weighted_sum:
            parts = [w.view(1, -1, 1, 1) * p for w, p in zip(self.branch_weight, parts)]
        return sum(parts[1:], parts[0])


class sMLPNet(nn.Module):  # noqa: N801 - official name
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.to_patch_embedding = nn.ModuleList()
        self.token_mix = nn.ModuleList()
        self.channel_mix = nn.ModuleList()
        for i, (channels, grid) in enumerate(zip(config.channels, config.grids)):
            if i == 0:
                embed = nn.Conv2d(config.in_chans, channels, PATCH_SIZE, PATCH_SIZE, bias=False)
            else:
                embed = nn.Conv2d(channels // 2, channels, 2, 2, bias=False)
            self.to_patch_embedding.append(nn.Sequential(embed))
            for _ in range(config.depths[i]):
                self.token_mix.append(nn.Sequential(  # Identity keeps the official index of what is there
                    DWConvBlock(channels) if config.dwconv else nn.Identity(),
                    sMLPBlock(grid, channels, config) if config.has_smlp(i) else nn.Identity(),
                ))
                self.channel_mix.append(
                    nn.Sequential(
                        Permute(0, 2, 3, 1),
                        nn.LayerNorm(channels),
                        FeedForward(channels, channels * config.alpha),
                        Permute(0, 3, 1, 2),
                    )
                )
        self.batch_norm = nn.BatchNorm2d(config.channels[-1])
        self.mlp_head = nn.Sequential(nn.Linear(config.channels[-1], config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = 0
        for i, depth in enumerate(self.config.depths):
            x = self.to_patch_embedding[i](x)
            for _ in range(depth):
                x = x + self.token_mix[block](x)
                x = x + self.channel_mix[block](x)
                block += 1
        x = self.batch_norm(x)
        return self.mlp_head(x.mean(dim=[2, 3]).flatten(1))


def create_model(name_or_config: str | ModelConfig = "smlpnet_t", **overrides) -> sMLPNet:
    """Build an sMLPNet from a variant name (``smlpnet_t``) or a :class:`ModelConfig`."""
    if isinstance(name_or_config, ModelConfig):
        return sMLPNet(name_or_config)
    return sMLPNet(ModelConfig.from_variant(name_or_config, **overrides))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image through every Conv2d and Linear (the usual FLOPs figure)."""
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        model(torch.zeros(1, in_chans, image_size, image_size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
