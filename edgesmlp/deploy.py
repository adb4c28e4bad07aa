"""The deploy form of sMLPNet: the same math with no transposes, folded norms, and 1x1-conv FFNs.

The official graph mixes tokens as permute -> 1x1 conv -> permute back (four transposes a block) and
runs its FFN behind two more permutes. Here the axial mixing is a MatMul on the NCHW tensor itself:

* official ``proj_h`` (N x N) mixes along W:  ``x @ P_h^T + b_h``  (weight on the right, bias on W)
* official ``proh_w`` (N x N) mixes along H:  ``P_w @ x + b_w``    (weight on the left, bias on H)

and the channel MLP is LayerNorm over the channel axis then two 1x1 convolutions. INT8 runtimes fuse
1x1 convolutions far better than transposed MatMuls; that is where the speed comes from.
"""

from __future__ import annotations

import torch
from torch import nn

from edgesmlp.config import ModelConfig
from edgesmlp.fold import ScaleShift, check_equivalent, example_inputs, fold_all
from edgesmlp.model import HEAD, STEM, block_layers, sMLPNet

DEPLOY_RTOL = 1e-5


class AxialMix(nn.Module):
    """Token mixing along W (weight on the right) and along H (weight on the left), no transposes."""

    def __init__(self, grid: int):
        super().__init__()
        self.weight_w = nn.Parameter(torch.zeros(grid, grid))  # P_h^T: x @ weight_w mixes along W
        self.bias_w = nn.Parameter(torch.zeros(grid))  # broadcasts on the last (W) axis
        self.weight_h = nn.Parameter(torch.zeros(grid, grid))  # P_w: weight_h @ x mixes along H
        self.bias_h = nn.Parameter(torch.zeros(grid, 1))  # broadcasts on the H axis

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.matmul(x, self.weight_w) + self.bias_w, torch.matmul(self.weight_h, x) + self.bias_h


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (affine already folded into the next conv)."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written as (x - mean) / sqrt(var + eps): the pattern OpenVINO fuses into one MVN op.
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(dim=1, keepdim=True) + self.eps)


class TokenMix(nn.Module):
    def __init__(self, channels: int, grid: int):
        super().__init__()
        self.pre = ScaleShift(torch.ones(channels), torch.zeros(channels))  # DWConvBlock BN
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=True)  # + sMLPBlock BN
        self.mix = AxialMix(grid)
        self.fuse = nn.Conv2d(3 * channels, channels, 1, bias=False)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.dwconv(self.act(self.pre(x))))
        along_w, along_h = self.mix(a)
        return self.fuse(torch.cat([a, along_w, along_h], dim=1))


class ChannelMix(nn.Module):
    def __init__(self, channels: int, hidden: int, eps: float):
        super().__init__()
        self.norm = ChannelLayerNorm(eps)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class DeploySMLPNet(nn.Module):
    """Deploy form; build it with :func:`to_deploy`, which copies and proves the weights."""

    def __init__(self, config: ModelConfig, eps: float = 1e-5):
        super().__init__()
        self.config = config
        self.depths = config.depths
        self.stems = nn.ModuleList()
        self.token_mix = nn.ModuleList()
        self.channel_mix = nn.ModuleList()
        for i, (channels, grid) in enumerate(zip(config.channels, config.grids)):
            in_ch, k = (config.in_chans, 4) if i == 0 else (channels // 2, 2)
            self.stems.append(nn.Conv2d(in_ch, channels, k, k, bias=False))
            for _ in range(config.depths[i]):
                self.token_mix.append(TokenMix(channels, grid))
                self.channel_mix.append(ChannelMix(channels, channels * config.alpha, eps))
        self.head = nn.Linear(config.channels[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = 0
        for i, depth in enumerate(self.depths):
            x = self.stems[i](x)
            for _ in range(depth):
                x = x + self.token_mix[block](x)
                x = x + self.channel_mix[block](x)
                block += 1
        return self.head(x.mean(dim=(2, 3)))


@torch.no_grad()
def to_deploy(model: sMLPNet, inputs: torch.Tensor | None = None, rtol: float = DEPLOY_RTOL) -> DeploySMLPNet:
    """Fold ``model`` and copy it into the deploy form; raise FoldError unless the logits match."""
    inputs = example_inputs(model) if inputs is None else inputs
    expected = model.eval()(inputs)  # the original's logits, shared by every proof below
    folded, _ = fold_all(model, inputs, expected)
    layer = folded.get_submodule
    eps = layer(block_layers(0)["norm"]).eps if len(folded.token_mix) else 1e-5
    deploy = DeploySMLPNet(model.config, eps=eps).eval()
    for i in range(len(deploy.stems)):
        deploy.stems[i].weight.copy_(layer(STEM.format(i=i)).weight)
    for k in range(len(deploy.token_mix)):
        names, tm, cm = block_layers(k), deploy.token_mix[k], deploy.channel_mix[k]
        tm.pre.scale.copy_(layer(names["dw_bn"]).scale)
        tm.pre.shift.copy_(layer(names["dw_bn"]).shift)
        tm.dwconv.weight.copy_(layer(names["dwconv"]).weight)
        tm.dwconv.bias.copy_(layer(names["dwconv"]).bias)
        # Official proj_h mixes along W (see model.py): out[..., o] = sum_w P[o, w] x[..., w] + b[o].
        tm.mix.weight_w.copy_(layer(names["proj_h"]).weight[:, :, 0, 0].t())
        tm.mix.bias_w.copy_(layer(names["proj_h"]).bias)
        # Official proh_w mixes along H: out[..., o, :] = sum_h P[o, h] x[..., h, :] + b[o].
        tm.mix.weight_h.copy_(layer(names["proh_w"]).weight[:, :, 0, 0])
        tm.mix.bias_h.copy_(layer(names["proh_w"]).bias.view(-1, 1))
        tm.fuse.weight.copy_(layer(names["fuse"]).weight)
        cm.fc1.weight.copy_(layer(names["fc1"]).weight[:, :, None, None])
        cm.fc1.bias.copy_(layer(names["fc1"]).bias)
        cm.fc2.weight.copy_(layer(names["fc2"]).weight[:, :, None, None])
        cm.fc2.bias.copy_(layer(names["fc2"]).bias)
    deploy.head.weight.copy_(layer(HEAD["fc"]).weight)
    deploy.head.bias.copy_(layer(HEAD["fc"]).bias)
    check_equivalent(expected, deploy, inputs, "the deploy form", rtol)
    return deploy
