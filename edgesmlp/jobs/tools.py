"""The small jobs: export one ONNX, describe a checkpoint or a variant, lint a Q/DQ graph, write the bundled digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def export(output: Path, weights=None, image_size: int | None = None, batch: int = 1, dynamic_batch: bool = False,
           form: str = "deploy", variant: str | None = None, ema: bool = False, force: bool = False):
    """FP32 ONNX of ``form``, checked by onnx.checker and proven against the official PyTorch graph in ONNX
    Runtime; returns ``export.ExportResult`` (path, opset, batch, max_abs_diff)."""
    from edgesmlp.artifacts import check_apart
    from edgesmlp.checkpoint import check_image_size, load_checkpoint
    from edgesmlp.errors import InputError, OutputExistsError
    from edgesmlp.export import export_onnx

    output = Path(output)
    if output.exists() and not output.is_file():
        raise InputError(f"cannot write {output}: it is not a regular file; give -o an .onnx file name")
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists: pass --force to overwrite it")
    ckpt = load_checkpoint(weights, variant=variant, ema=ema)
    check_image_size(ckpt, image_size)
    check_apart(output, {"--weights": weights if isinstance(weights, (str, Path)) else None})
    model = ckpt.model
    if form == "deploy":
        from edgesmlp.deploy import to_deploy

        model = to_deploy(ckpt.model)
    return export_onnx(model, output, ckpt.config.image_size, ckpt.config.in_chans, batch=batch,
                       dynamic_batch=dynamic_batch, reference=ckpt.model)


def inspect(weights=None, arch: str | None = None, variant: str | None = None, ema: bool = False):
    """What a checkpoint holds (a dict), or with ``arch`` a variant of the paper without weights ('list': all)."""
    from edgesmlp.errors import ConfigError
    from edgesmlp.jobs import describe

    if arch is None:
        from edgesmlp.checkpoint import load_checkpoint

        return describe.describe(load_checkpoint(weights, variant=variant, ema=ema))
    if weights is not None:
        raise ConfigError("--arch describes a variant without weights: drop either WEIGHTS or --arch")
    return describe.list_arches() if arch == "list" else describe.describe_arch(arch)


@dataclass(frozen=True)
class Lint:
    """The findings of ``lint_qdq`` on one graph, and the float types its tensors have."""

    findings: tuple
    float_types: dict

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)


def lint_qdq(model: Path) -> Lint:
    from edgesmlp.quantization.qdq_lint import float_types, lint_model, load_onnx

    graph = load_onnx(model)
    return Lint(tuple(lint_model(graph)), float_types(graph))


def digits(output: Path, force: bool = False) -> dict[str, int]:
    """The bundled digits splits as PNG ImageFolder trees; images per split."""
    from edgesmlp.calibration.digits import write_imagefolders

    return write_imagefolders(output, force=force)
