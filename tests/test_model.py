import pytest
import torch

from edgesmlp import VARIANTS, ModelConfig, count_macs, count_params, create_model
from edgesmlp.errors import ConfigError
from edgesmlp.model import sMLPBlock

# Tang et al. 2021: parameters (M) and FLOPs (G multiply-accumulates) at 224, as the paper prints them.
PAPER = {
    "smlpnet_t_star": (19.2, 4.0),  # headline table
    "smlpnet_t": (24.1, 5.0),
    "smlpnet_s": (48.6, 10.3),
    "smlpnet_b": (65.9, 14.0),
    "smlpnet_t_star_global_only": (19.1, 3.9),  # Table 1
    "smlpnet_b_smlp_s234": (65.8, 13.7),  # Table 2
    "smlpnet_b_smlp_s34": (64.3, 12.4),
    "smlpnet_b_smlp_s4": (49.9, 9.5),
    "smlpnet_b_no_smlp": (45.1, 9.3),
    "smlpnet_s_sum": (33.2, 7.0),  # Table 3
    "smlpnet_s_weighted_sum": (33.3, 7.0),
}
# Rows the paper names without their size: the local-only model of Table 1 and the branch designs of Table 4.
UNSIZED = {"smlpnet_t_star_local_only", "smlpnet_t_star_no_identity", "smlpnet_t_star_sequential",
           "smlpnet_t_star_sequential_no_identity"}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_variants_match_the_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    params, macs = PAPER[name]
    assert abs(count_params(model) / 1e6 - params) <= 0.15
    assert abs(count_macs(create_model(name), 224) / 1e9 - macs) <= 0.1


def test_every_variant_is_in_the_table():
    assert set(VARIANTS) == set(PAPER) | UNSIZED


def test_official_parameter_names():
    keys = set(create_model(ModelConfig(dim=8, depths=(1, 1, 1, 1), num_classes=3, image_size=32)).state_dict())
    for key in [
        "to_patch_embedding.0.0.weight",
        "to_patch_embedding.3.0.weight",
        "token_mix.0.0.conv_merge.BN.running_var",
        "token_mix.0.0.conv_merge.Conv.weight",
        "token_mix.0.1.BN.weight",
        "token_mix.0.1.proj_h.bias",
        "token_mix.0.1.proh_w.weight",  # the official spelling
        "token_mix.3.1.fuse.weight",
        "channel_mix.0.1.weight",
        "channel_mix.0.2.net.0.weight",
        "channel_mix.0.2.net.3.bias",
        "batch_norm.num_batches_tracked",
        "mlp_head.0.weight",
    ]:
        assert key in keys, key
    assert not any("drop_path" in k or "proj_w" in k for k in keys)
    assert "token_mix.0.0.conv_merge.Conv.bias" not in keys and "token_mix.0.1.fuse.bias" not in keys


def test_custom_configuration_and_size():
    config = ModelConfig(dim=12, depths=(1, 0, 2, 1), alpha=2, num_classes=7, in_chans=1, image_size=64)
    model = create_model(config).eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    assert model.token_mix[0][1].proj_h.weight.shape[0] == 16  # 64 / 4
    assert model.token_mix[2][1].proj_h.weight.shape[0] == 4  # stage 2: 64 / 16


@pytest.mark.parametrize("size", [0, 33, 100, 225, -32])
def test_input_size_must_be_multiple_of_32(size):
    with pytest.raises(ConfigError, match="multiple of 32"):
        ModelConfig(image_size=size)


def test_unknown_variant():
    with pytest.raises(ConfigError, match="unknown variant"):
        create_model("smlpnet_xl")


@pytest.mark.parametrize("branch, axis", [("proj_h", "W"), ("proh_w", "H")])
def test_official_axes(branch, axis):
    """The official permutes make proj_h mix tokens along W and proh_w along H (SMLPNET.md)."""
    torch.manual_seed(0)
    c, n = 4, 6
    block = sMLPBlock(n, c).eval()
    block.BN = torch.nn.Identity()
    block.activation = torch.nn.Identity()
    with torch.no_grad():
        # fuse keeps only the chosen branch: slot 1 of the concat is x_h (proj_h), slot 2 is x_w (proh_w).
        slot = 1 if branch == "proj_h" else 2
        block.fuse.weight.zero_()
        block.fuse.weight[:, slot * c : (slot + 1) * c, 0, 0] = torch.eye(c)
    weight = getattr(block, branch).weight[:, :, 0, 0]
    bias = getattr(block, branch).bias
    x = torch.randn(2, c, n, n)
    if axis == "W":
        expected = torch.einsum("ow,bchw->bcho", weight, x) + bias.view(1, 1, 1, n)
    else:
        expected = torch.einsum("oh,bchw->bcow", weight, x) + bias.view(1, 1, n, 1)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
