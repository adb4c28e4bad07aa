import pytest
import torch
from torch import nn

from edgesmlp.errors import FoldError
from edgesmlp.fold import (
    FOLDS,
    ScaleShift,
    check_equivalent,
    example_inputs,
    fold_all,
    fold_dwconv_bn,
    fold_head_bn,
    fold_layernorm_affine,
    keep_dwblock_bn_as_scale_shift,
)


@pytest.mark.parametrize("name, fold", FOLDS)
def test_each_fold_is_exact_and_returns_a_new_model(small_model, name, fold):
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    folded = fold(small_model)
    assert folded is not small_model
    for k, v in small_model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the original at {k}"
    assert check_equivalent(small_model, folded, example_inputs(small_model), name) <= 1e-5


def test_folds_change_the_structure(small_model):
    folded = fold_dwconv_bn(small_model)
    assert isinstance(folded.token_mix[0][1].BN, nn.Identity)
    assert folded.token_mix[0][0].conv_merge.Conv.bias is not None
    assert isinstance(fold_head_bn(small_model).batch_norm, nn.Identity)
    assert not fold_layernorm_affine(small_model).channel_mix[0][1].elementwise_affine
    assert isinstance(keep_dwblock_bn_as_scale_shift(small_model).token_mix[0][0].conv_merge.BN, ScaleShift)


def test_fold_all(small_model):
    folded, errors = fold_all(small_model)
    assert len(errors) == len(FOLDS) and max(errors.values()) <= 1e-5
    assert not any(isinstance(m, (nn.BatchNorm2d,)) for m in folded.modules())


@pytest.mark.parametrize(
    "layer", ["token_mix.1.1.BN", "token_mix.0.0.conv_merge.BN", "batch_norm"]
)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_degenerate_statistics_are_refused_by_name(small_model, layer, value):
    bn = small_model.get_submodule(layer)
    with torch.no_grad():
        bn.running_var[2] = value
    with pytest.raises(FoldError, match=layer.replace(".", "\\.") + ".*running_var\\[2\\]"):
        fold_all(small_model)


def test_nan_mean_is_refused(small_model):
    with torch.no_grad():
        small_model.batch_norm.running_mean[0] = float("nan")
    with pytest.raises(FoldError, match="batch_norm"):
        fold_head_bn(small_model)


def test_check_equivalent_catches_a_wrong_model(small_model):
    broken = fold_head_bn(small_model)
    with torch.no_grad():
        broken.mlp_head[0].bias += 0.01
    with pytest.raises(FoldError, match="changed the logits"):
        check_equivalent(small_model, broken, example_inputs(small_model), "a broken fold")
