"""The first-order layer ranking (one forward and one backward pass) agrees with the exact one (the model run
once per layer) on a trained model, and the budget search can rank with it."""

import numpy as np
import onnx
import pytest

from edgesmlp import bundled
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.quantization.budget import Budget, choose, meets
from edgesmlp.quantization.first_order import first_order_scores, rank_by_first_order
from edgesmlp.quantization.partial import QDQPartial
from edgesmlp.quantization.qdq import quantize_qdq
from edgesmlp.quantization.sensitivity import per_layer


@pytest.fixture(scope="module")
def fragile_graph(fragile_digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("first_order")
    ckpt = load_checkpoint(fragile_digits[0])
    deploy = to_deploy(ckpt.model)
    calib = bundled.split_tensors("calib")[0].numpy()
    export_onnx(deploy, folder / "fp32.onnx", 32, dynamic_batch=True, reference=ckpt.model)
    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", calib)
    graph = QDQPartial(onnx.load(str(folder / "fp32.onnx")), onnx.load(str(folder / "int8.onnx")))
    return deploy, calib, graph, bundled.split_tensors("val")[0].numpy()[:128]


def _ranks(values):
    return np.argsort(np.argsort(values))


def test_first_order_scores_rank_layers_as_the_exact_one_layer_kl_does(fragile_graph):
    deploy, calib, graph, x = fragile_graph
    scores = first_order_scores(deploy, calib, x)
    assert {layer.module for layer in graph.layers} <= set(scores)  # every Q/DQ layer has a score, by module path
    _, rows = per_layer(graph, x, in_float=False)
    exact = [r.alone_kl for r in rows]
    approx = [scores[r.module] for r in rows]
    spearman = np.corrcoef(_ranks(exact), _ranks(approx))[0, 1]
    assert spearman > 0.7, spearman  # 0.84 when written
    top = {r.module for r in rows[:8]}
    assert len(top & set(sorted(scores, key=scores.get, reverse=True)[:8])) >= 4
    # the same order of magnitude as the KL it approximates (a second-order expansion of it)
    ratio = np.median(np.array(approx) / np.maximum(exact, 1e-12))
    assert 0.2 < ratio < 5, ratio


def test_openvino_layers_rank_to_first_order_as_their_exact_kl_does(fragile_digits):
    """OpenVINO's INT8 graph quantizes inputs the Q/DQ one does not (the norms', the pool's) and names its axial
    MatMuls by block (token_mix.0/MatMul_1): every one of its layers gets a score, ranked as the exact one ranks."""
    from edgesmlp.quantization.openvino_partial import OpenVINOPartial, first_order_keys
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_for_cpu

    ckpt = load_checkpoint(fragile_digits[0])
    deploy, c = to_deploy(ckpt.model), ckpt.config
    calib, x = bundled.split_tensors("calib")[0].numpy(), bundled.split_tensors("val")[0].numpy()[:128]
    config = OpenVINOPTQConfig()
    fp32, int8 = quantize_for_cpu(deploy, calib, config, c.in_chans, c.image_size, lambda line: None)
    graph = OpenVINOPartial(fp32, int8, 2)
    scores = first_order_scores(deploy, calib, x, "max", weight_bits=config.weight_bits, quantized_inputs=True)
    keys = first_order_keys(graph.layers, scores)
    assert set(keys) == {layer.name for layer in graph.layers} and len(set(keys.values())) == len(keys)
    assert {graph.layers[i].op for i in range(len(graph.layers))} >= {"MVN", "ReduceMean", "MatMul", "DWConv"}
    _, rows = per_layer(graph, x, in_float=False)
    exact, approx = [r.alone_kl for r in rows], [scores[keys[r.layer]] for r in rows]
    spearman = np.corrcoef(_ranks(exact), _ranks(approx))[0, 1]
    assert spearman > 0.7, spearman  # 0.86 when written
    order = rank_by_first_order(graph.layers, scores, keys)
    assert len({r.layer for r in rows[:8]} & set(order[:8])) >= 5  # 7 when written


def test_the_search_ranks_to_first_order_when_given_the_ranker(fragile_digits, fragile_graph):
    from edgesmlp.calibration.sources import load_tensors, open_images
    from edgesmlp.errors import BudgetError

    deploy, calib, graph, _ = fragile_graph
    search = load_tensors(open_images(fragile_digits[2]).sample(400, 0), bundled.PREPROCESS).x
    budget = Budget(max_drop=None, min_agreement=99.9, max_float=0.3)  # above what full INT8 expects here
    called = []

    def rank(images):
        called.append(len(images))
        return rank_by_first_order(graph.layers, first_order_scores(deploy, calib, images))

    try:
        choice = choose(graph, search, None, budget, log=lambda line: None, certify=False, rank=rank)
    except BudgetError as e:  # out of reach is an answer too: the ranking was still this one
        assert "out of reach" in str(e)
    else:
        assert choice.ranking_method == "first-order" and choice.rank_seconds > 0
        assert meets(budget, choice.reached, certify=False) and len(choice.ranking) == len(graph.layers)
    assert called == [128]
    assert rank_by_first_order(graph.layers, {}) is None  # an unknown layer leaves it to the exact ranking
