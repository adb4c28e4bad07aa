"""Load the sMLPNet weights users have, without ever running code from the file.

Accepted: a DeiT-style training checkpoint (``model``, ``model_ema``, ``optimizer``, ``epoch``,
``args`` as an ``argparse.Namespace``), a dict with only ``model`` or ``state_dict``, a bare state
dict, ``module.`` / ``_orig_mod.`` prefixes, and ``.safetensors``. The architecture is inferred
from the tensor shapes, so naming the variant is optional.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgesmlp.artifacts import atomic_file, sha256_file
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.config import PATCH_SIZE, SIZE_MULTIPLE, VARIANTS, Branches, Fusion, ModelConfig
from edgesmlp.errors import CheckpointError, ConfigError
from edgesmlp.model import block_layers, sMLPNet

PREFIXES = ("module.", "_orig_mod.")
EMBED_KEY = "to_patch_embedding.0.0.weight"


@dataclass
class Checkpoint:
    """A loaded model and what the file said about itself."""

    model: sMLPNet
    config: ModelConfig
    path: Path
    sha256: str
    weights: str  # which entry the weights came from: model, model_ema, state_dict or (bare)
    preprocess: Preprocess
    epoch: int | None = None
    metadata: dict = field(default_factory=dict)
    bundled: bool = False


IN_MEMORY = Path("(in-memory model)")  # the path a Checkpoint of a model given in memory names


def load_checkpoint(path: str | Path | torch.nn.Module | Checkpoint | None = None, variant: str | None = None,
                    ema: bool = False) -> Checkpoint:
    """Load ``path`` (the bundled digits model when None; a model in memory as it is) into an eval-mode
    :class:`sMLPNet`."""
    from edgesmlp import bundled

    if isinstance(path, Checkpoint):
        return path
    if isinstance(path, torch.nn.Module):
        return from_model(path, variant)
    is_bundled = path is None
    path = bundled.weights_path() if path is None else Path(path)
    _check_file(path)
    if path.suffix != ".safetensors":
        _check_zip_crcs(path)
    raw, file_meta = _read_safetensors(path) if path.suffix == ".safetensors" else (_read_torch(path), {})
    state, weights = _select_state_dict(raw, path, ema)
    state = clean_state_dict(state)
    _check_tensors(state, path)
    config = infer_config(state, path, variant)
    if variant is not None:
        check_variant(state, variant, config, path)
    model = sMLPNet(config)
    _check_keys(model, state, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    if "preprocess" in file_meta:
        preprocess = _recorded_preprocess(file_meta["preprocess"], path)
    else:
        preprocess = default_preprocess(config)
    metadata = dict(file_meta)
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    args = raw.get("args") if isinstance(raw, dict) else None
    if isinstance(args, argparse.Namespace):
        metadata["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return Checkpoint(
        model=model,
        config=config,
        path=path,
        sha256=sha256_file(path),
        weights=weights,
        preprocess=preprocess,
        epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
        metadata=metadata,
        bundled=is_bundled,
    )


def from_model(module: torch.nn.Module, variant: str | None = None) -> Checkpoint:
    """A copy of an sMLPNet given in memory (its weights in the official names), as if loaded from a file."""
    import hashlib

    state = clean_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
    _check_tensors(state, IN_MEMORY)
    config = infer_config(state, IN_MEMORY, variant)
    model = sMLPNet(config)
    _check_keys(model, state, IN_MEMORY)
    model.load_state_dict(state, strict=True)
    model.eval()
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return Checkpoint(model, config, IN_MEMORY, digest.hexdigest(), "(in memory)", default_preprocess(config))


def default_preprocess(config: ModelConfig) -> Preprocess:
    """ImageNet's evaluation recipe; a model of other than 3 input channels gets a neutral 0.5/0.5."""
    neutral = {} if config.in_chans == 3 else {"mean": (0.5,) * config.in_chans, "std": (0.5,) * config.in_chans}
    return Preprocess(image_size=config.image_size, **neutral)


def _recorded_preprocess(text: str, path: Path) -> Preprocess:
    """The preprocessing a safetensors file records in its metadata, or a CheckpointError naming the file."""
    from edgesmlp.artifacts import strict_json

    try:
        return Preprocess.from_record(strict_json(text), str(path))
    except ConfigError as e:
        raise CheckpointError(f"{e}: re-save the weights with valid metadata, or as a .pth without it") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: its recorded preprocessing cannot be used ({str(e)[:120]}): re-save the weights "
                              "with valid metadata, or as a .pth without it") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path, or omit --weights to use the bundled model")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: give the weights file inside it (.pth, .pt or .safetensors)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish; fetch it again")


def _brief(text: str, limit: int = 120) -> str:
    """The first line of a library's message, cut to ``limit`` characters."""
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _check_zip_crcs(path: Path) -> None:
    """A PyTorch checkpoint is a zip: verify every member's CRC-32, which torch.load does not."""
    if not zipfile.is_zipfile(path):
        return  # a legacy (pre-1.6) pickle file, or not a checkpoint at all: the reader says which
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({_brief(str(e)) or type(e).__name__}); "
                              "fetch the file again") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: {bad} fails its CRC-32 check (the bytes changed after it was "
                              "written); fetch the file again")


def _read_torch(path: Path) -> object:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            name = found.group(1)
            raise CheckpointError(
                f"{path} was refused: it pickles {name}, which could run code when loaded; edgesmlp loads only "
                "tensors and plain data - re-save just the weights (torch.save(model.state_dict(), ...) or safetensors)"
            ) from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        reason = _brief(detail.group(1).strip() if detail else text)
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or is corrupt ({reason}); give a .pth/.pt/.safetensors weights file"
        ) from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}); fetch the file again") from None
    except RuntimeError as e:
        first = _brief(str(e)) or type(e).__name__
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({first}); fetch the file again") from None
    except Exception as e:  # noqa: BLE001 - any other reader failure is a bad file, said in one line
        first = _brief(str(e)) or type(e).__name__
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or is corrupt ({type(e).__name__}: {first}); "
            "give a .pth/.pt/.safetensors weights file"
        ) from None


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        first = _brief(str(e)) or type(e).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({first}); fetch it again") from None


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _select_state_dict(raw: object, path: Path, ema: bool) -> tuple[dict, str]:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict or training checkpoint")
    if ema:
        if not _is_state_dict(raw.get("model_ema")):
            raise CheckpointError(f"{path} has no 'model_ema' weights: drop --ema to use its 'model' weights")
        return raw["model_ema"], "model_ema"
    for key in ("model", "state_dict", "model_ema"):
        if _is_state_dict(raw.get(key)):
            return raw[key], key
    if _is_state_dict(raw):
        return raw, "(bare)"
    keys = ", ".join(list(map(str, raw))[:6])
    raise CheckpointError(f"{path} has no weights: expected a state dict or a 'model' entry, found keys {keys}")


def clean_state_dict(state: dict) -> dict:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def _check_tensors(state: dict, path: Path) -> None:
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(
                f"{path}: tensor '{key}' holds NaN or Inf - the training run diverged or the file is corrupt; "
                "use an earlier checkpoint"
            )
        if key.endswith("running_var") and value.is_floating_point() and (value <= 0).any():
            channel = int((value <= 0).nonzero()[0][0])
            raise CheckpointError(
                f"{path}: '{key}'[{channel}] = {value.flatten()[channel].item():g}, but a BatchNorm variance is "
                "positive - the statistics are broken: re-estimate them on training data, or use another checkpoint"
            )


def infer_config(state: dict, path: Path | str = "weights", variant: str | None = None) -> ModelConfig:
    """Read the architecture off the keys and tensor shapes: dim, depths, alpha, classes, input channels and
    size, and the paper's ablation choices (which blocks exist, the fusion, the branches).

    Where shapes cannot tell two designs apart (two joined branches: parallel without the identity, or
    sequential with it; a plain sum of branches), ``variant`` decides, else the official design is taken
    when it fits and an ambiguity that remains is refused.
    """
    if EMBED_KEY not in state:
        sample = ", ".join(list(state)[:4])
        raise CheckpointError(f"{path} is not an sMLPNet checkpoint: no '{EMBED_KEY}' (its keys start {sample})")
    embed = state[EMBED_KEY]
    if embed.ndim != 4 or tuple(embed.shape[2:]) != (PATCH_SIZE, PATCH_SIZE):
        raise CheckpointError(f"{path}: '{EMBED_KEY}' has shape {list(embed.shape)}, not an sMLPNet 4x4 patch embedding")
    dim, in_chans = int(embed.shape[0]), int(embed.shape[1])
    stages = sum(f"to_patch_embedding.{i}.0.weight" in state for i in range(8))
    blocks = [k for k in range(len(state)) if f"{block_layers(k)['fc1']}.weight" in state]
    depths = [0] * max(stages, 1)
    found = _BlockSurvey()
    for k in blocks:
        fc1 = state[f"{block_layers(k)['fc1']}.weight"]
        channels = int(fc1.shape[1])
        stage = (channels // dim).bit_length() - 1
        if channels != dim * 2**stage or stage >= len(depths):
            raise CheckpointError(f"{path}: block {k} has {channels} channels, which fits no stage of dim {dim}")
        depths[stage] += 1
        found.add(state, k, stage, channels, int(fc1.shape[0]) // channels, path)
    head = state.get("mlp_head.0.weight")
    if head is None:
        raise CheckpointError(f"{path} is not a complete sMLPNet checkpoint: 'mlp_head.0.weight' is missing")
    try:
        return ModelConfig(
            dim=dim, depths=tuple(depths), alpha=found.alpha or 3, num_classes=int(head.shape[0]), in_chans=in_chans,
            image_size=found.image_size or 224, **found.design(path, variant),
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: the weights describe an unusable network ({e})") from None


@dataclass
class _BlockSurvey:
    """What the blocks of a state dict show, block by block, and whether they agree."""

    alpha: int | None = None
    image_size: int | None = None
    dwconv: set = field(default_factory=set)
    smlp_by_stage: dict = field(default_factory=dict)
    fusion: set = field(default_factory=set)
    branch_count: set = field(default_factory=set)

    def add(self, state: dict, k: int, stage: int, channels: int, alpha: int, path) -> None:
        names = block_layers(k)
        self.alpha = self.alpha or alpha
        self.dwconv.add(f"{names['dwconv']}.weight" in state)
        smlp = f"{names['proj_h']}.weight" in state
        if self.smlp_by_stage.setdefault(stage, smlp) != smlp:
            raise CheckpointError(f"{path}: block {k} differs from the other blocks of stage {stage + 1} in having an "
                                  "sMLP block; edgesmlp takes sMLP per stage, as the paper does")
        if not smlp:
            return
        self.image_size = self.image_size or int(state[f"{names['proj_h']}.weight"].shape[0]) * PATCH_SIZE * 2**stage
        if f"{names['fuse']}.weight" in state:
            self.fusion.add(Fusion.fc)
            self.branch_count.add(int(state[f"{names['fuse']}.weight"].shape[1]) // channels)
        elif names["branch_weight"] in state:
            self.fusion.add(Fusion.weighted_sum)
            self.branch_count.add(int(state[names["branch_weight"]].shape[0]))
        else:
            self.fusion.add(Fusion.sum)

    def design(self, path, variant: str | None) -> dict:
        if len(self.dwconv) > 1:
            raise CheckpointError(f"{path}: some blocks have the depthwise-conv block and some do not; edgesmlp "
                                  "takes it in every block or in none")
        if len(self.fusion) > 1 or len(self.branch_count) > 1:
            raise CheckpointError(f"{path}: the sMLP blocks join their branches in different ways "
                                  f"({', '.join(sorted(f.value for f in self.fusion))}); they must all be the same")
        design = {"dwconv": self.dwconv != {False},
                  "smlp_stages": tuple(s + 1 for s, on in self.smlp_by_stage.items() if on)}
        if not self.fusion:
            return design
        design["fusion"] = next(iter(self.fusion))
        readings = [r for r in BRANCH_READINGS if not self.branch_count or r[0] in self.branch_count]
        if not readings:
            raise CheckpointError(f"{path}: the sMLP blocks join {next(iter(self.branch_count))} branches; an sMLP "
                                  "block joins 1, 2 or 3")
        named = VARIANTS.get(variant or "", {})
        wanted = (named.get("branches", Branches.parallel), named.get("identity", True))
        chosen = [r for r in readings if (Branches(r[1]), r[2]) == (Branches(wanted[0]), wanted[1])]
        if not chosen and variant is None and len(readings) > 1:
            options = " or ".join(f"{b} branches {'with' if i else 'without'} the identity" for _, b, i in readings)
            raise CheckpointError(f"{path}: the shapes fit {options}; say which with --variant (e.g. "
                                  "smlpnet_t_star_no_identity or smlpnet_t_star_sequential)")
        _, design["branches"], design["identity"] = (chosen or readings)[0]
        return design


# (joined branch count, branches, identity): what an sMLP block's fuse width can mean.
BRANCH_READINGS = ((3, "parallel", True), (2, "parallel", False), (2, "sequential", True), (1, "sequential", False))


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in sMLPNet(config).state_dict().items()}


def check_variant(state: dict, variant: str, config: ModelConfig, path: Path | str = "weights") -> None:
    """Raise naming the keys that differ when the weights are not ``variant``."""
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}, or omit it")
    wanted = ModelConfig.from_variant(
        variant, num_classes=config.num_classes, in_chans=config.in_chans, image_size=config.image_size
    )
    if wanted == config:
        return
    found = config.variant or (f"a custom sMLPNet (dim {config.dim}, depths {list(config.depths)}, alpha "
                               f"{config.alpha})")
    expected = _expected_shapes(wanted)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    parts = []
    if wrong:
        parts.append(f"'{wrong[0]}' is {list(state[wrong[0]].shape)} in the file but {list(expected[wrong[0]])} in "
                     f"{variant}")
    if missing:
        parts.append(f"{variant} has '{missing[0]}' (and {len(missing) - 1} more keys) that the file lacks")
    if extra:
        parts.append(f"the file has '{extra[0]}' (and {len(extra) - 1} more keys) that {variant} lacks")
    differs = "; ".join(parts) or f"its design differs ({_design_difference(config, wanted)})"
    raise CheckpointError(f"{path} is not {variant}: {differs} (the weights are {found}); drop --variant")


def _design_difference(have: ModelConfig, want: ModelConfig) -> str:
    return ", ".join(f"{k} {getattr(have, k)} vs {getattr(want, k)}" for k in have.arch()
                     if have.arch()[k] != want.arch()[k])


def _check_keys(model: sMLPNet, state: dict, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""))
        if wrong:
            parts.append(f"'{wrong[0]}' is {list(state[wrong[0]].shape)}, expected {list(expected[wrong[0]])}")
        raise CheckpointError(f"{path} does not match the sMLPNet its shapes describe: {'; '.join(parts)}")


def check_image_size(ckpt: Checkpoint, size: int | None) -> None:
    """Refuse an --image-size the weights cannot run: the sparse-MLP weights fix the token grid."""
    if size is None:
        return
    if size <= 0 or size % SIZE_MULTIPLE:
        raise ConfigError(f"--image-size {size} is not a positive multiple of {SIZE_MULTIPLE}")
    trained = ckpt.config.image_size
    if size != trained:
        raise ConfigError(f"--image-size {size} does not match the weights: {ckpt.path} was trained at "
                          f"{trained}x{trained}, and its sparse-MLP weights fix the token grid; use {trained} or omit "
                          "the option")


def save_safetensors(state: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata or {})


def save_trained_digits(model, info: dict, path) -> None:
    """Write a model of the bundled design as safetensors whose metadata carries the architecture, the
    preprocessing and the training record (what ``scripts/train_digits.py`` writes)."""
    from edgesmlp import bundled

    metadata = {
        "config": json.dumps(bundled.CONFIG.to_dict()),
        "preprocess": json.dumps(bundled.PREPROCESS.to_record()),
        "training": json.dumps({**info, "data": "sklearn digits, train split (997 images)"}),
    }
    save_safetensors(model.state_dict(), str(path), metadata)
