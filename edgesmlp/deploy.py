"""The deploy form of sMLPNet: the same math with no transposes, folded norms, and 1x1-conv FFNs.

The official graph mixes tokens as permute -> 1x1 conv -> permute back (four transposes a block) and
runs its FFN behind two more permutes. Here the axial mixing is a MatMul on the NCHW tensor itself:

* official ``proj_h`` (N x N) mixes along W:  ``x @ P_h^T + b_h``  (weight on the right, bias on W)
* official ``proh_w`` (N x N) mixes along H:  ``P_w @ x + b_w``    (weight on the left, bias on H)

and the channel MLP is LayerNorm over the channel axis then two 1x1 convolutions. INT8 runtimes fuse
1x1 convolutions far better than transposed MatMuls; that is where the speed comes from.

OpenVINO's CPU plugin is the exception: its convolutions keep tensors channels-last in memory, so NCHW
MatMuls cost layout Reorders around every block, and it has no INT8 kernel for ``P @ x`` there. For its
INT8 graph :func:`channels_last_mixing` runs the same mixing on an NHWC view (two permutes a block that
the plugin turns into no-ops), which it executes entirely in INT8 with no Reorders.

Every tensor INT8 quantizes passes through a :class:`QuantPoint` (the identity in float): the Q/DQ
builder finds the same tensors in the exported graph by its placement rules, and QAT swaps these
points for fake quantizers, so the trained graph is this forward, for every variant.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgesmlp.config import Branches, Fusion, ModelConfig
from edgesmlp.fold import ScaleShift, check_equivalent, example_inputs, fold_all
from edgesmlp.model import HEAD, STEM, block_layers, sMLPNet

DEPLOY_RTOL = 1e-5


class QuantPoint(nn.Identity):
    """A tensor INT8 quantizes (per tensor); the identity until QAT puts a fake quantizer here."""


class AxialMix(nn.Module):
    """Token mixing along W (weight on the right) and along H (weight on the left), no transposes."""

    def __init__(self, grid: int):
        super().__init__()
        self.weight_w = nn.Parameter(torch.zeros(grid, grid))  # P_h^T: x @ weight_w mixes along W
        self.bias_w = nn.Parameter(torch.zeros(grid))  # broadcasts on the last (W) axis
        self.weight_h = nn.Parameter(torch.zeros(grid, grid))  # P_w: weight_h @ x mixes along H
        self.bias_h = nn.Parameter(torch.zeros(grid, 1))  # broadcasts on the H axis

    def along_w(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight_w) + self.bias_w

    def along_h(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight_h, x) + self.bias_h

    # The same two mixings on an NHWC tensor (channels_last_mixing): both weights on the left.
    def along_w_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight_w.t(), x) + self.bias_w[:, None]  # batched over N, H

    def along_h_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        # The bias is added before the view back to NHWC: OpenVINO then fuses the MatMul's dequantization, the
        # bias and the next quantizer into one op, faster than adding it after the view (openvino_int8_probes*.md).
        n, h, w, c = x.shape
        return (torch.matmul(self.weight_h, x.reshape(n, h, w * c)) + self.bias_h).view(n, h, w, c)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (affine already folded into the next conv)."""

    channels_last = False  # set by set_channels_last(): normalize the (N, H*W, C) view

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # OpenVINO's CPU MVN kernel normalizes trailing axes only: over axis 1 of NCHW it is decomposed into
            # two ReduceMeans and two elementwise passes, while the (N, H*W, C) view (its permutes no-ops on the
            # plugin's channels-last memory) runs as one MVN node with the next quantizer fused in, which is
            # faster (benchmarks/results/openvino_int8.md).
            n, c, h, w = x.shape
            return self._normalize(x.permute(0, 2, 3, 1).reshape(n, h * w, c), -1).view(n, h, w, c).permute(0, 3, 1, 2)
        return self._normalize(x, 1)

    def _normalize(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        # Written as (x - mean) / sqrt(var + eps): the pattern OpenVINO fuses into one MVN op.
        centred = x - x.mean(dim=dim, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(dim=dim, keepdim=True) + self.eps)


class TokenMix(nn.Module):
    """The depthwise-conv block (if present) then the sMLP block (if present), as one residual branch."""

    channels_last = False  # set by channels_last_mixing(): the fc-fused mixing runs on an NHWC view
    conv_fuse = False  # set by channels_last_mixing(conv_fuse=True): that view's Concat is fused by the 1x1 conv

    def __init__(self, channels: int, grid: int, config: ModelConfig, smlp: bool):
        super().__init__()
        self.fusion, self.branches, self.identity = config.fusion, config.branches, config.identity
        self.act = nn.GELU()
        self.pre = self.dwconv = self.mix = self.smlp_pre = self.fuse = None
        if config.dwconv:
            self.pre = ScaleShift(torch.ones(channels), torch.zeros(channels))  # DWConvBlock BN
            self.dw_in = QuantPoint()
            self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=True)  # + sMLPBlock BN
        if smlp:
            if not config.dwconv:  # nothing to fold the sMLPBlock BN into: it stays a multiply-add
                self.smlp_pre = ScaleShift(torch.ones(channels), torch.zeros(channels))
            self.mix_in = QuantPoint()  # the MatMuls' input (and the identity branch into an fc fusion)
            self.mix_in_h = QuantPoint()  # the H-mixing MatMul's own input, where a weighted sum scales it apart
            self.mix = AxialMix(grid)
            if config.branches is Branches.sequential:
                self.mid = QuantPoint()  # the W-mixed tensor, input of the H-mixing MatMul
            if config.fusion is Fusion.fc:
                self.fuse_in = QuantPoint()  # the mixed branches into the Concat (one scale with mix_in)
                self.fuse = nn.Conv2d(config.branch_count * channels, channels, 1, bias=False)
            elif config.fusion is Fusion.weighted_sum:
                self.register_buffer("branch_weight", torch.ones(config.branch_count, 1, channels, 1, 1))
        self.residual = QuantPoint()  # the skip input of this branch's Add, quantized where a Conv ends the branch

    @property
    def ends_in_conv(self) -> bool:
        """Whether the branch's last op is a Conv (TensorRT fuses the residual Add into it)."""
        return self.fuse is not None or self.mix is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        if self.dwconv is not None:
            a = self.dwconv(self.dw_in(self.act(self.pre(x))))
        if self.mix is None:
            return a
        a = self.act(self.smlp_pre(a) if self.smlp_pre is not None else a)
        if self.fusion is Fusion.weighted_sum:
            return self._weighted_sum(a)
        qa = self.mix_in(a)
        if self.channels_last:
            return self._mix_channels_last(qa)
        if self.branches is Branches.parallel:
            mixed = [self.mix.along_w(qa), self.mix.along_h(qa)]
        else:
            mixed = [self.mix.along_h(self.mid(self.mix.along_w(qa)))]
        if self.fuse is not None:
            return self.fuse(torch.cat([qa] * self.identity + [self.fuse_in(m) for m in mixed], dim=1))
        return sum(mixed, a) if self.identity else sum(mixed[1:], mixed[0])

    def _mix_channels_last(self, qa: torch.Tensor) -> torch.Tensor:
        """The same fc-fused mixing on the NHWC view of ``qa``: both axial MatMuls take their weight on the left
        (W-mixing batched over H, H-mixing over the flattened W*C axis) and the fuse is a MatMul over channels, so
        OpenVINO's CPU plugin runs all three in INT8 on the layout its convolutions use, with no Reorders."""
        x = qa.permute(0, 2, 3, 1)
        if self.branches is Branches.parallel:
            mixed = [self.mix.along_w_nhwc(x), self.mix.along_h_nhwc(x)]
        else:
            mixed = [self.mix.along_h_nhwc(self.mid(self.mix.along_w_nhwc(x)))]
        cat = torch.cat([x] * self.identity + [self.fuse_in(m) for m in mixed], dim=-1)
        if self.conv_fuse:
            # The plugin's INT8 1x1-convolution kernel in place of its INT8 FullyConnected one: on x86 without VNNI
            # the latter is oneDNN's slower jit_gemm_i8 (benchmarks/results/openvino_int8_probes_avx2.md); see
            # quantize.openvino_ptq.requantize_transposed_concats for the FakeQuantize that keeps it INT8.
            return self.fuse(cat.permute(0, 3, 1, 2))
        return torch.matmul(cat, self.fuse.weight[:, :, 0, 0].t()).permute(0, 3, 1, 2)

    def _weighted_sum(self, a: torch.Tensor) -> torch.Tensor:
        """sum_j w_j * branch_j, with each mixed branch's per-channel weight moved onto its MatMul input (it
        commutes with token mixing) and the weighted biases added last: OpenVINO's CPU plugin fails to compile
        INT8 MatMuls followed by a per-channel multiply or add when the token grid is 1 (data size != OC)."""
        weights = self.branch_weight
        w1, *rest = weights[int(self.identity):]
        if self.branches is Branches.parallel:
            parts = [torch.matmul(self.mix_in(a * w1), self.mix.weight_w),
                     torch.matmul(self.mix.weight_h, self.mix_in_h(a * rest[0]))]
            bias = w1 * self.mix.bias_w + rest[0] * self.mix.bias_h
        else:  # w1 (P_h (x P_w + b_w) + b_h): the inner bias, carried through P_h, joins the outer one
            inner = torch.matmul(self.mix_in(a * w1), self.mix.weight_w)
            parts = [torch.matmul(self.mix.weight_h, self.mid(inner))]
            carried = self.mix.weight_h.sum(dim=1, keepdim=True) * self.mix.bias_w  # (N, N): P_h @ (1 b_w^T)
            bias = w1 * (carried + self.mix.bias_h)
        if self.identity:
            parts.insert(0, weights[0] * a)
        return sum(parts[1:], parts[0]) + bias


class ChannelMix(nn.Module):
    def __init__(self, channels: int, hidden: int, eps: float):
        super().__init__()
        self.norm = ChannelLayerNorm(eps)
        self.fc1_in, self.fc2_in, self.residual = QuantPoint(), QuantPoint(), QuantPoint()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    ends_in_conv = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc2_in(self.act(self.fc1(self.fc1_in(self.norm(x))))))


class DeploySMLPNet(nn.Module):
    """Deploy form; build it with :func:`to_deploy`, which copies and proves the weights."""

    def __init__(self, config: ModelConfig, eps: float = 1e-5):
        super().__init__()
        self.config = config
        self.stems = nn.ModuleList()
        self.stem_in = nn.ModuleList()
        self.token_mix = nn.ModuleList()
        self.channel_mix = nn.ModuleList()
        for i, (channels, grid) in enumerate(zip(config.channels, config.grids)):
            in_ch, k = (config.in_chans, 4) if i == 0 else (channels // 2, 2)
            self.stems.append(nn.Conv2d(in_ch, channels, k, k, bias=False))
            self.stem_in.append(QuantPoint())
            for _ in range(config.depths[i]):
                self.token_mix.append(TokenMix(channels, grid, config, config.has_smlp(i)))
                self.channel_mix.append(ChannelMix(channels, channels * config.alpha, eps))
        self.head_in = QuantPoint()
        self.head = nn.Linear(config.channels[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = 0
        for i, depth in enumerate(self.config.depths):
            x = self.stems[i](self.stem_in[i](x))
            for _ in range(depth):
                for branch in (self.token_mix[block], self.channel_mix[block]):
                    x = branch.residual(x) + branch(x)
                block += 1
        return self.head(self.head_in(self.pool(x)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The global average pool (a method, so that a ranking can score its input's quantization)."""
        return x.mean(dim=(2, 3))


def _copy_token_mix(tm: TokenMix, folded: nn.Module, names: dict[str, str]) -> None:
    layer = folded.get_submodule
    if tm.dwconv is not None:
        tm.pre.scale.copy_(layer(names["dw_bn"]).scale)
        tm.pre.shift.copy_(layer(names["dw_bn"]).shift)
        tm.dwconv.weight.copy_(layer(names["dwconv"]).weight)
        conv_bias = layer(names["dwconv"]).bias
        tm.dwconv.bias.copy_(conv_bias if conv_bias is not None else torch.zeros_like(tm.dwconv.bias))
    if tm.mix is None:
        return
    if tm.smlp_pre is not None:
        tm.smlp_pre.scale.copy_(layer(names["smlp_bn"]).scale)
        tm.smlp_pre.shift.copy_(layer(names["smlp_bn"]).shift)
    # Official proj_h mixes along W (see model.py): out[..., o] = sum_w P[o, w] x[..., w] + b[o].
    tm.mix.weight_w.copy_(layer(names["proj_h"]).weight[:, :, 0, 0].t())
    tm.mix.bias_w.copy_(layer(names["proj_h"]).bias)
    # Official proh_w mixes along H: out[..., o, :] = sum_h P[o, h] x[..., h, :] + b[o].
    tm.mix.weight_h.copy_(layer(names["proh_w"]).weight[:, :, 0, 0])
    tm.mix.bias_h.copy_(layer(names["proh_w"]).bias.view(-1, 1))
    if tm.fuse is not None:
        tm.fuse.weight.copy_(layer(names["fuse"]).weight)
    elif tm.fusion is Fusion.weighted_sum:
        tm.branch_weight.copy_(folded.get_parameter(names["branch_weight"]).view_as(tm.branch_weight))


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
        names, cm = block_layers(k), deploy.channel_mix[k]
        _copy_token_mix(deploy.token_mix[k], folded, names)
        cm.fc1.weight.copy_(layer(names["fc1"]).weight[:, :, None, None])
        cm.fc1.bias.copy_(layer(names["fc1"]).bias)
        cm.fc2.weight.copy_(layer(names["fc2"]).weight[:, :, None, None])
        cm.fc2.bias.copy_(layer(names["fc2"]).bias)
    deploy.head.weight.copy_(layer(HEAD["fc"]).weight)
    deploy.head.bias.copy_(layer(HEAD["fc"]).bias)
    check_equivalent(expected, deploy, inputs, "the deploy form", rtol)
    return deploy


@torch.no_grad()
def channels_last_mixing(model: DeploySMLPNet, inputs: torch.Tensor | None = None,
                         rtol: float = DEPLOY_RTOL, conv_fuse: bool = False) -> DeploySMLPNet:
    """A copy of ``model`` (sharing its weights) whose fc-fused token mixing and channel norms run on NHWC views
    (:func:`set_channels_last`); raise FoldError unless the logits match.

    For OpenVINO INT8 only: there the NCHW mixing costs four layout Reorders a block and leaves ``P @ x`` in float
    (slower: benchmarks/results/openvino_int8.md), while in float at bf16 this form is the slower
    one, so FP32 artifacts keep the NCHW form. Blocks without an fc fusion are left as they are, and so are blocks
    whose mixing biases are all zero: OpenVINO folds the Add away, and 2026.4 then fails to compile the INT8 left
    MatMul feeding the Concat directly ("any_of(scale.size(), OC, 1U)").

    ``conv_fuse``: the channels-last Concat is permuted back to NCHW and fused by the 1x1 convolution, not by a
    MatMul over channels (OpenVINOPTQConfig.fuse)."""
    inputs = example_inputs(model) if inputs is None else inputs
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}  # a new module tree on the same weights
    out = set_channels_last(copy.deepcopy(model, memo=shared).eval(), conv_fuse=conv_fuse)
    check_equivalent(model.eval()(inputs), out, inputs, "channels-last mixing and norms", rtol)
    return out


def set_channels_last(model: DeploySMLPNet, enabled: bool = True, conv_fuse: bool = False) -> DeploySMLPNet:
    """Switch ``model``'s fc-fused token mixing to the NHWC view in place, where OpenVINO can compile it (non-zero
    mixing biases, see :func:`channels_last_mixing`), and every channel LayerNorm to its (N, H*W, C) view; return
    it. Unproved: for QAT's student, whose fake quantizers sit at the same tensors in either layout; float models
    go through :func:`channels_last_mixing`. ``enabled=False`` switches every block back to NCHW; ``conv_fuse``
    fuses the channels-last blocks' Concat by the 1x1 convolution (see :func:`channels_last_mixing`), except on a
    1x1 token grid: there the Transpose before it is a Reshape, the GEMM is one row whichever kernel runs it, and
    OpenVINO 2026.4 cannot compile that convolution in f32 once its residual sum is also a model output (as the
    block cosines of ``sensitivity`` make it: "Cannot get descriptor for edge")."""
    for tm in model.token_mix:
        tm.channels_last = enabled and tm.fuse is not None and bool(tm.mix.bias_w.any()) and bool(tm.mix.bias_h.any())
        tm.conv_fuse = conv_fuse and tm.channels_last and tm.mix.weight_w.shape[0] > 1
    for cm in model.channel_mix:
        cm.norm.channels_last = enabled
    return model
