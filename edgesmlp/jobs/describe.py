"""What `edgesmlp inspect` reports about a loaded checkpoint."""

from __future__ import annotations

import re

from edgesmlp.checkpoint import Checkpoint
from edgesmlp.fold import fold_all, fold_plan
from edgesmlp.model import count_macs, count_params


def describe(ckpt: Checkpoint) -> dict:
    config = ckpt.config
    sites = fold_plan(ckpt.model)
    _, fold_errors = fold_all(ckpt.model)
    return {
        "path": str(ckpt.path),
        "bundled": ckpt.bundled,
        "sha256": ckpt.sha256,
        "variant": config.variant or "custom",
        "config": config.to_dict(),
        "input_size": [config.in_chans, config.image_size, config.image_size],
        "token_grids": list(config.grids),
        "num_classes": config.num_classes,
        "params": count_params(ckpt.model),
        "macs": count_macs(ckpt.model, config.image_size, config.in_chans),
        "weights_taken": ckpt.weights,
        "epoch": ckpt.epoch,
        "preprocess": ckpt.preprocess.to_dict(),
        "foldable": [vars(s) for s in sites if s.into],
        "not_foldable": [vars(s) for s in sites if not s.into],
        "folded": [{"fold": name, "max_rel_logit_diff": err} for name, err in fold_errors.items()],
        "metadata": ckpt.metadata,
    }


def describe_arch(name: str) -> dict:
    """A named variant without weights: its config, parameters and MACs at its input size (224)."""
    import torch

    from edgesmlp.config import ModelConfig
    from edgesmlp.model import create_model

    config = ModelConfig.from_variant(name)
    with torch.device("meta"):
        params = count_params(create_model(config))
    return {"variant": name, "config": config.to_dict(), "params": params,
            "macs": count_macs(create_model(config), config.image_size, config.in_chans)}


def list_arches() -> list[dict]:
    """The family: each variant's name and the design choices that set it apart from the official one."""
    from edgesmlp.config import VARIANTS, ModelConfig

    official = ModelConfig().arch()
    rows = []
    for name in VARIANTS:
        arch = ModelConfig.from_variant(name).arch()
        changes = {k: v for k, v in arch.items() if k not in ("dim", "depths", "alpha") and v != official[k]}
        rows.append({"variant": name, "dim": arch["dim"], "depths": list(arch["depths"]), "alpha": arch["alpha"],
                     "changes": {k: getattr(v, "value", v) if not isinstance(v, tuple) else list(v)
                                 for k, v in changes.items()}})
    return rows


def render_arch(info: dict) -> str:
    c = info["config"]
    return "\n".join([
        f"variant      {info['variant']}  dim {c['dim']}, depths {c['depths']}, alpha {c['alpha']}",
        f"design       fusion {c['fusion']}, sMLP in stages {c['smlp_stages'] or 'none'}, depthwise conv "
        f"{'yes' if c['dwconv'] else 'no'}, {c['branches']} branches, identity {'yes' if c['identity'] else 'no'}",
        f"input        {c['in_chans']} x {c['image_size']} x {c['image_size']}, {c['num_classes']} classes",
        f"parameters   {info['params'] / 1e6:.2f} M",
        f"MACs         {_macs(info['macs'])} per image",
    ])


def render_arch_list(rows: list[dict]) -> str:
    lines = [f"{'variant':40s} {'dim':>4s}  {'depths':14s} alpha  differs from the official design"]
    for r in rows:
        changes = ", ".join(f"{k} {v}" for k, v in r["changes"].items()) or "-"
        lines.append(f"{r['variant']:40s} {r['dim']:4d}  {str(r['depths']):14s} {r['alpha']:5d}  {changes}")
    return "\n".join(lines)


def _macs(macs: int) -> str:
    return f"{macs / 1e9:.2f} G" if macs >= 1e8 else f"{macs / 1e6:.1f} M"


def render(info: dict) -> str:
    c = info["config"]
    lines = [
        f"weights      {info['path']}{'  (bundled digits model)' if info['bundled'] else ''}",
        f"sha256       {info['sha256']}",
        f"taken from   {info['weights_taken']}" + (f"  (epoch {info['epoch']})" if info["epoch"] is not None else ""),
        f"variant      {info['variant']}  dim {c['dim']}, depths {c['depths']}, alpha {c['alpha']}",
        f"design       fusion {c['fusion']}, sMLP in stages {c['smlp_stages'] or 'none'}, depthwise conv "
        f"{'yes' if c['dwconv'] else 'no'}, {c['branches']} branches, identity {'yes' if c['identity'] else 'no'}",
        f"input        {' x '.join(map(str, info['input_size']))}  (token grids {info['token_grids']})",
        f"classes      {info['num_classes']}",
        f"parameters   {info['params'] / 1e6:.2f} M",
        f"MACs         {_macs(info['macs'])} per image",
        f"preprocess   crop_pct {info['preprocess']['crop_pct']}, {info['preprocess']['interpolation']}, "
        f"mean {info['preprocess']['mean']}, std {info['preprocess']['std']}",
        f"foldable     {len(info['foldable'])} norms:",
    ]
    kinds: dict[str, int] = {}
    for site in info["foldable"]:
        into = re.sub(r"\.\d+\.", ".k.", site["into"], count=1)
        key = f"{site['kind']} -> {into}: {site['note']}"
        kinds[key] = kinds.get(key, 0) + 1
    lines += [f"  {n:3d} x {key}" for key, n in kinds.items()]
    lines.append(f"kept         {len(info['not_foldable'])} BatchNorms before GELU (per-channel multiply-add)")
    lines.append("folded       (each proven against the unfolded logits; diff relative to the logit range)")
    lines += [f"  {f['fold']:52s} {f['max_rel_logit_diff']:.1e}" for f in info["folded"]]
    for key in ("training",):
        if key in info["metadata"]:
            lines.append(f"{key:12s} {info['metadata'][key]}")
    return "\n".join(lines)
