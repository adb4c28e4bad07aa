import collections

import numpy as np
import onnx
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgesmlp import ModelConfig, create_model
from edgesmlp.deploy import DeploySMLPNet, channels_last_mixing, to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.fold import check_equivalent
from edgesmlp.model import sMLPNet
from tests.conftest import randomize_norms


def test_deploy_form_matches_reference(small_model):
    deploy = to_deploy(small_model)
    assert isinstance(deploy, DeploySMLPNet)
    x = torch.randn(3, 3, 32, 32)
    assert check_equivalent(small_model, deploy, x, "deploy") <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smlpnet_t_star", "smlpnet_t", "smlpnet_s", "smlpnet_b"])
def test_every_variant(name):
    torch.manual_seed(0)
    model = randomize_norms(create_model(name), seed=3)
    x = torch.randn(1, 3, 224, 224)
    deploy = to_deploy(model, x)
    assert check_equivalent(model, deploy, torch.randn(1, 3, 224, 224), name) <= 1e-5
    assert check_equivalent(model, channels_last_mixing(deploy, x), torch.randn(1, 3, 224, 224), name) <= 1e-5


@settings(max_examples=12, deadline=None, derandomize=True)  # same examples on every CI run
@example(dim=8, depths=(0, 0, 0, 0), alpha=1, classes=1, in_chans=1, size=32, seed=26)  # one class: tiny logit range
@given(
    dim=st.integers(2, 12),
    depths=st.tuples(*[st.integers(0, 2)] * 4),
    alpha=st.integers(1, 4),
    classes=st.integers(1, 12),
    in_chans=st.integers(1, 4),
    size=st.sampled_from([32, 64, 96]),
    seed=st.integers(0, 1000),
)
def test_random_configurations(dim, depths, alpha, classes, in_chans, size, seed):
    config = ModelConfig(dim=dim, depths=depths, alpha=alpha, num_classes=classes, in_chans=in_chans, image_size=size)
    torch.manual_seed(seed)
    model = randomize_norms(sMLPNet(config), seed=seed)
    x = torch.randn(2, in_chans, size, size)
    assert check_equivalent(model, to_deploy(model, x), x, "deploy") <= 1e-5


def test_axes_are_not_swapped(small_model):
    """Swapping the two axial weights gives a different model: the test above would catch the mix-up."""
    deploy = to_deploy(small_model)
    with torch.no_grad():
        for tm in deploy.token_mix:
            w, h = tm.mix.weight_w.clone(), tm.mix.weight_h.clone()
            tm.mix.weight_w.copy_(h.t())
            tm.mix.weight_h.copy_(w.t())
    x = torch.randn(2, 3, 32, 32)
    assert (small_model(x) - deploy(x)).abs().max() > 1e-3


def test_exported_deploy_graph_has_no_transposes_and_runs_everywhere(small_model, tmp_path):
    import openvino as ov

    path = tmp_path / "deploy.onnx"
    result = export_onnx(to_deploy(small_model), path, 32, reference=small_model, dynamic_batch=True)
    assert result.max_abs_diff <= 1e-4
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["Transpose"] == 0 and ops["MatMul"] == 2 * 5 and ops["Concat"] == 5
    assert ops["BatchNormalization"] == 0 and ops["LayerNormalization"] == 0
    x = torch.randn(4, 3, 32, 32)
    expected = small_model(x).detach().numpy()
    # OpenVINO's CPU plugin runs bf16 by default on CPUs that have it; FP32 must be asked for.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-4)


def test_reference_export_keeps_the_official_graph(small_model, tmp_path):
    path = tmp_path / "ref.onnx"
    export_onnx(small_model, path, 32)
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["Transpose"] > 0


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    fusion=st.sampled_from(["fc", "sum", "weighted_sum"]),
    smlp_stages=st.sets(st.integers(1, 4)),
    dwconv=st.booleans(),
    branches=st.sampled_from(["parallel", "sequential"]),
    identity=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_random_designs(fusion, smlp_stages, dwconv, branches, identity, seed):
    """Any mix of the paper's design choices folds into a deploy form with the same logits."""
    stages = tuple(smlp_stages) if dwconv else (1, 2, 3, 4)
    config = ModelConfig(dim=6, depths=(1, 1, 1, 1), alpha=2, num_classes=4, image_size=32, fusion=fusion,
                         smlp_stages=stages, dwconv=dwconv, branches=branches, identity=identity)
    torch.manual_seed(seed)
    model = randomize_norms(sMLPNet(config), seed=seed)
    x = torch.randn(2, 3, 32, 32)
    deploy = to_deploy(model, x)
    assert check_equivalent(model, deploy, x, "deploy") <= 1e-5
    channels_last = channels_last_mixing(deploy, x)
    assert check_equivalent(model, channels_last, torch.randn(2, 3, 32, 32), "channels last") <= 1e-5
    assert [tm.channels_last for tm in channels_last.token_mix] == [
        tm.fuse is not None and bool(tm.mix.bias_w.any() and tm.mix.bias_h.any()) for tm in deploy.token_mix]
    assert not any(tm.channels_last for tm in deploy.token_mix)  # a new model: the deploy form is unchanged
