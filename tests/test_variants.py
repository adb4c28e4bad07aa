"""The paper's whole family (Tables 1-4): every variant loads with its design inferred, folds, deploys without
transposes, exports, quantizes for both targets (lint-clean Q/DQ, NNCF INT8 IR) and trains with QAT."""

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.cli import app
from edgesmlp.config import VARIANTS, ModelConfig
from edgesmlp.deploy import to_deploy
from edgesmlp.errors import CheckpointError
from edgesmlp.export import export_onnx, to_openvino
from edgesmlp.fold import check_equivalent
from edgesmlp.model import sMLPNet
from edgesmlp.quantization.calibrate import CalibMethod
from edgesmlp.quantization.fakequant import QATDeploySMLPNet
from edgesmlp.quantization.qdq import QDQConfig, plan_qdq, quantize_qdq
from edgesmlp.quantization.qdq_lint import lint_qdq
from edgesmlp.runtimes.onnxruntime import emulation_runner
from tests.conftest import randomize_norms

NAMES = sorted(VARIANTS)
# Shapes alone cannot tell these apart (two joined branches either way): --variant decides.
NEEDS_NAME = {"smlpnet_t_star_no_identity", "smlpnet_t_star_sequential"}


def small(name: str) -> sMLPNet:
    """The variant's design on a small configuration, with trained-looking norms and branch weights."""
    torch.manual_seed(0)
    config = ModelConfig.from_variant(name, dim=8, depths=(1, 1, 2, 1), num_classes=5, image_size=32)
    model = randomize_norms(sMLPNet(config), seed=1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("branch_weight"):
                p.copy_(torch.rand(p.shape) + 0.5)
    return model.eval()


def calibration(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(set(NAMES) - NEEDS_NAME))
def test_loading_infers_the_design(name, tmp_path):
    model = small(name)
    path = tmp_path / "weights.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config.arch() == model.config.arch()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ckpt.model(x), model(x))


@pytest.mark.parametrize("name", sorted(NEEDS_NAME))
def test_the_variant_name_settles_what_shapes_cannot(name, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": sMLPNet(ModelConfig.from_variant(name)).state_dict()}, path)
    assert load_checkpoint(path, variant=name).config.variant == name


@pytest.mark.parametrize("name", sorted(NEEDS_NAME))
def test_ambiguous_shapes_ask_for_the_variant(name, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(small(name).state_dict(), path)
    with pytest.raises(CheckpointError, match="--variant"):
        load_checkpoint(path)


def test_full_size_checkpoints_are_named(tmp_path):
    for name in ("smlpnet_t_star_global_only", "smlpnet_t_star_local_only"):
        path = tmp_path / f"{name}.pth"
        torch.save({"model": sMLPNet(ModelConfig.from_variant(name)).state_dict()}, path)
        assert load_checkpoint(path).config.variant == name


@pytest.mark.parametrize(("have", "claim", "says"), [
    ("smlpnet_s", "smlpnet_s_sum", "the file has 'token_mix.0.1.fuse.weight'"),
    ("smlpnet_s_sum", "smlpnet_s", "smlpnet_s has 'token_mix.0.1.fuse.weight'"),
    ("smlpnet_s_sum", "smlpnet_s_weighted_sum", "smlpnet_s_weighted_sum has 'token_mix.0.1.branch_weight'"),
    ("smlpnet_b", "smlpnet_b_smlp_s234", "the file has 'token_mix.0.1.BN.weight'"),
    ("smlpnet_t_star_global_only", "smlpnet_t_star", "smlpnet_t_star has 'token_mix.0.0.conv_merge.BN.weight'"),
])
def test_a_named_variant_that_does_not_fit_says_which_keys_differ(have, claim, says, tmp_path):
    config = {k: v for k, v in VARIANTS[have].items() if k not in ("dim", "depths", "alpha")}
    dims = dict(dim=VARIANTS[claim]["dim"], depths=VARIANTS[claim]["depths"], alpha=VARIANTS[claim]["alpha"])
    with torch.device("meta"):
        model = sMLPNet(ModelConfig(**dims, **config))
    state = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}  # shapes are all loading reads first
    from edgesmlp.checkpoint import check_variant, infer_config

    with pytest.raises(CheckpointError, match="is not " + claim) as caught:
        check_variant(state, claim, infer_config(state, "w.pth"), "w.pth")
    assert says in str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_fold_deploy_export_and_jetson_qdq(name, tmp_path):
    model = small(name)
    x = torch.randn(3, 3, 32, 32)
    deploy = to_deploy(model)
    assert check_equivalent(model, deploy, x, name) <= 1e-5
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(deploy, fp32, 32, dynamic_batch=True, reference=model)
    assert not {"Transpose"} & {n.op_type for n in onnx.load(str(fp32)).graph.node}
    plan = plan_qdq(onnx.load(str(fp32)))
    blocks = len(model.token_mix)
    # Every residual Add whose branch ends in a Conv is fused (the FFN always; token mixing unless a sum ends it).
    assert len(plan.residuals) == blocks * (1 + (model.config.fusion.value == "fc" or not model.config.smlp_stages))
    assert len(plan.shared) == sum(1 for k, tm in enumerate(deploy.token_mix) if tm.fuse is not None
                                   and model.config.branch_count > 1)
    qdq = tmp_path / "int8.onnx"
    quantize_qdq(fp32, qdq, calibration(), QDQConfig(method="max"))
    assert [str(f) for f in lint_qdq(qdq) if f.severity == "error"] == []
    # QAT's fake quantization sits exactly where the Q/DQ graph quantizes: calibrated alike, it computes
    # the same logits as ONNX Runtime running the Q/DQ ONNX (most images to float rounding; an image where one
    # value lands on a rounding tie differs a little). A quantizer placed elsewhere would move every image.
    student = QATDeploySMLPNet(deploy)
    student.calibrate(torch.from_numpy(calibration()), CalibMethod.max)
    probe = calibration(8)
    with torch.no_grad():
        fake = student.eval()(torch.from_numpy(probe)).numpy()
    real = emulation_runner(qdq)(probe)  # the graph's math on this CPU (unfused where integer kernels saturate)
    per_image = np.abs(fake - real).max(axis=1) / np.abs(real).max()
    assert np.median(per_image) <= 1e-5 and per_image.max() <= 0.05


# Designs beyond the paper's rows that stress OpenVINO's fusions most: weighted sums with each branch layout.
WEIGHTED = [dict(fusion="weighted_sum", branches=b, identity=i) for b in ("parallel", "sequential") for i in (True, False)]


@pytest.mark.parametrize("name", NAMES + WEIGHTED, ids=NAMES + [f"weighted-{d['branches']}-{d['identity']}"
                                                               for d in WEIGHTED])
def test_openvino_int8(name):
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_openvino
    from edgesmlp.runtimes.openvino import OpenVINORunner

    if isinstance(name, dict):
        torch.manual_seed(0)
        model = randomize_norms(sMLPNet(ModelConfig(dim=8, depths=(1, 1, 2, 1), num_classes=5, image_size=32,
                                                    **name)), seed=1)
    else:
        model = small(name)
    fp32 = to_openvino(to_deploy(model), 3, 32)
    int8 = quantize_openvino(fp32, calibration(), OpenVINOPTQConfig())
    assert sum(op.get_type_name() == "FakeQuantize" for op in int8.get_ops()) > 0
    probe = calibration(8)
    expected, got = model(torch.from_numpy(probe)).detach().numpy(), OpenVINORunner(int8, 8)(probe)
    cosine = (expected * got).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.95  # a random dim-8 network on noise: INT8 stays close


@pytest.mark.parametrize("name", NAMES)
def test_qat_trains_and_exports(name, tmp_path):
    deploy = to_deploy(small(name))
    student = QATDeploySMLPNet(deploy, learn_ranges=True)
    student.calibrate(torch.from_numpy(calibration()), CalibMethod.percentile)
    before = {k: v.clone() for k, v in student.float_model().state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    x = torch.from_numpy(calibration(8))
    student.train()
    loss = torch.nn.functional.mse_loss(student(x), deploy(x).detach() + 1)
    loss.backward()
    optimizer.step()
    tuned = student.float_model()
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())  # the weights trained
    assert not any("parametrizations" in k or "amax" in k for k in tuned.state_dict())  # a plain deploy form
    # the same class as to_deploy's, which test_fold_deploy_export_and_jetson_qdq exports for every variant
    assert type(tuned) is type(deploy) and not any(torch.nn.utils.parametrize.is_parametrized(m) for m in tuned.modules())
    converted = to_openvino(student.eval(), 3, 32)  # the fake-quantized graph, as OpenVINO QAT ships it
    assert sum(op.get_type_name() == "FakeQuantize" for op in converted.get_ops()) > 0


def test_inspect_describes_and_lists_the_family():
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["inspect", "--arch", "list", "--json"]).stdout)
    assert [row["variant"] for row in listed] == list(VARIANTS)
    result = runner.invoke(app, ["inspect", "--arch", "smlpnet_b_smlp_s34", "--json"])
    info = json.loads(result.stdout)
    assert info["config"]["smlp_stages"] == [3, 4] and abs(info["params"] / 1e6 - 64.3) <= 0.15
    assert abs(info["macs"] / 1e9 - 12.4) <= 0.1
    text = runner.invoke(app, ["inspect", "--arch", "smlpnet_s_weighted_sum"]).stdout
    assert "fusion weighted_sum" in text and "33.28 M" in text
    wrong = runner.invoke(app, ["inspect", "--arch", "smlpnet_x"])
    assert wrong.exit_code == 2 and "unknown variant" in wrong.output


@pytest.mark.slow
@pytest.mark.parametrize(("name", "target", "method"), [
    ("smlpnet_s_weighted_sum", "openvino", "ptq"),
    ("smlpnet_t_star_global_only", "jetson", "ptq"),
    ("smlpnet_t_star_local_only", "jetson", "qat"),
])
def test_a_variant_checkpoint_through_quantize(name, target, method, digits_tree, tmp_path):
    """The user's path: a checkpoint of an ablation variant, `edgesmlp quantize` for a target, the report."""
    config = ModelConfig.from_variant(name, dim=8, depths=(1, 1, 2, 1), num_classes=10, image_size=32)
    torch.manual_seed(0)
    weights = tmp_path / f"{name}.pth"
    torch.save({"model": randomize_norms(sMLPNet(config), seed=2).state_dict()}, weights)
    args = ["quantize", "-t", target, "-w", str(weights), "-o", str(tmp_path / "out"), "--calib-size", "32",
            "--calib", str(digits_tree / "calib"), "--val", str(digits_tree / "val"),
            "--latency-seconds", "0", "--max-drop", "100", "--method", method]
    if method == "qat":
        args += ["--epochs", "1", "--train", str(digits_tree / "train")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / target / "report.json").read_text())
    assert report["model"]["config"]["fusion"] == config.fusion.value
    assert report["model"]["config"]["dwconv"] == config.dwconv
    rows = {r["precision"]: r for r in report["results"]}
    assert rows["int8"]["agreement"] is not None and rows["int8"]["cosine"] > 0.9
    if target == "jetson":
        assert [str(f) for f in lint_qdq(tmp_path / "out" / "jetson" / "model_int8_qdq.onnx")
                if f.severity == "error"] == []
