import os
import pickle

import pytest
import torch

from edgesmlp import create_model
from edgesmlp.checkpoint import check_variant, infer_config, load_checkpoint, save_safetensors
from edgesmlp.errors import CheckpointError
from tests.conftest import SMALL


def assert_same_weights(model, state):
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_training_checkpoint_prefers_model(training_checkpoint):
    path, model, ema = training_checkpoint
    ckpt = load_checkpoint(path)
    assert ckpt.weights == "model" and ckpt.epoch == 7
    assert ckpt.config == SMALL
    assert ckpt.metadata["args"]["model"] == "smlpnet_t"
    assert_same_weights(ckpt.model, model.state_dict())
    assert not ckpt.model.training


def test_training_checkpoint_ema_on_request(training_checkpoint):
    path, model, ema = training_checkpoint
    ckpt = load_checkpoint(path, ema=True)
    assert ckpt.weights == "model_ema"
    assert_same_weights(ckpt.model, ema.state_dict())


def test_ema_missing_is_clear(small_model, tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"model": small_model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="no 'model_ema'.*drop --ema"):
        load_checkpoint(path, ema=True)


@pytest.mark.parametrize("layout", ["model", "bare", "module.", "_orig_mod.", "_orig_mod.module.", "state_dict"])
def test_layouts(small_model, tmp_path, layout):
    state = small_model.state_dict()
    if layout.endswith("."):
        obj = {layout + k: v for k, v in state.items()}
    elif layout == "bare":
        obj = state
    else:
        obj = {layout: state}
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config == SMALL
    assert_same_weights(ckpt.model, state)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ckpt.model(x), small_model(x))


def test_safetensors(small_model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(small_model.state_dict(), path, {"note": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["note"] == "x"
    assert_same_weights(ckpt.model, small_model.state_dict())


def test_architecture_inferred_for_every_variant():
    for name in ("smlpnet_t", "smlpnet_s", "smlpnet_t_star"):
        with torch.device("meta"):
            state = create_model(name).state_dict()
        config = infer_config(state)
        assert config.variant == name and config.image_size == 224 and config.num_classes == 1000


def test_named_variant_that_does_not_fit_names_key_and_shapes(tmp_path):
    path = tmp_path / "tstar.pth"
    torch.save(create_model("smlpnet_t_star").state_dict(), path)
    assert load_checkpoint(path, variant="smlpnet_t_star").config.variant == "smlpnet_t_star"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, variant="smlpnet_t")
    msg = str(e.value)
    assert "channel_mix.0.2.net.0.weight" in msg and "[160, 80]" in msg and "[240, 80]" in msg
    assert "smlpnet_t_star" in msg


def test_named_variant_on_custom_weights(small_model):
    with pytest.raises(CheckpointError, match="to_patch_embedding.0.0.weight.*\\[8, 3, 4, 4\\].*\\[96, 3, 4, 4\\]"):
        check_variant(small_model.state_dict(), "smlpnet_s", SMALL)


# --- bad input: one clear error each, nothing executed -------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pth")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "e.pth")


def test_truncated_file(training_checkpoint, tmp_path):
    path, _, _ = training_checkpoint
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_truncated_safetensors(small_model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(small_model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello, these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_other_network(tmp_path):
    resnet_like = {
        "conv1.weight": torch.randn(64, 3, 7, 7),
        "bn1.weight": torch.ones(64),
        "bn1.running_var": torch.ones(64),
        "fc.weight": torch.randn(1000, 512),
    }
    path = tmp_path / "resnet.pth"
    torch.save(resnet_like, path)
    with pytest.raises(CheckpointError, match="not an sMLPNet checkpoint.*conv1.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize("key, index, value", [("token_mix.1.1.proj_h.weight", (0, 0), float("nan")),
                                               ("batch_norm.running_var", 3, float("inf"))])  # BN statistics too
def test_non_finite_weights(small_model, tmp_path, key, index, value):
    state = small_model.state_dict()
    state[key][index] = value
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{key}.*NaN or Inf"):
        load_checkpoint(path)


def test_weights_implying_a_bad_input_size(small_model, tmp_path):
    state = small_model.state_dict()
    for k in list(state):  # a token grid of 9 at stage 0 means a 36x36 input
        if k.startswith("token_mix.0.1.proj_h") or k.startswith("token_mix.0.1.proh_w"):
            shape = (9, 9, 1, 1) if k.endswith("weight") else (9,)
            state[k] = torch.randn(shape)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="multiple of 32"):
        load_checkpoint(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_runs(small_model, tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": small_model.state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused.*(system|posix)"):
        load_checkpoint(path)
    assert not marker.exists()
    # The payload is real: plain pickle would have run it.
    with open(path, "rb"):
        pass
    raw = pickle.dumps(_Payload(marker))
    pickle.loads(raw)
    assert marker.exists()
