"""Quantization-aware fine-tuning: distil the FP32 model into its fake-quantized copy.

Loss: KL(teacher || student) on temperature-softened logits, plus cross-entropy when the training
images carry labels. AdamW with a cosine schedule. The deploy form has no BatchNorm left (every BN
is folded or a fixed multiply-add), so the folds stay valid while weights train. A checkpoint is
written (atomically) after every epoch; ``resume`` continues from it. Under ``torchrun`` the same
call trains with DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgesmlp.artifacts import atomic_file
from edgesmlp.calibration.sources import ImageSet, open_images
from edgesmlp.errors import ConfigError, DataError, InputError

CHECKPOINT_FORMAT = "edgesmlp.qat/1"


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    temperature: float = 2.0
    label_weight: float = 0.5  # weight of cross-entropy against KD, when labels exist
    range_lr: float = 3e-3  # learning rate of trained activation ranges (log scale), where a target trains them
    seed: int = 0
    train: Path | None = None  # training images; None: the bundled digits train split
    resume: bool = False  # continue from the checkpoint an interrupted run left

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ConfigError(f"--epochs and --batch-size must be positive, got {self.epochs} and {self.batch_size}")
        for name in ("lr", "weight_decay", "temperature", "label_weight", "range_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name in ("lr", "temperature") and value == 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite positive number, got {value}")
        if self.label_weight > 1:
            raise ConfigError(f"label_weight must be in [0, 1], got {self.label_weight}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"] = None if self.train is None else str(self.train)
        return d


@dataclass(frozen=True)
class QATJob:
    """A QAT run's inputs, resolved before any work: images, settings, and where its checkpoint lives."""

    images: ImageSet
    config: QATConfig
    checkpoint: Path  # written after every epoch; removed when the job finishes
    identity: tuple[tuple[str, str], ...]  # what a checkpoint must match to be resumed


def prepare_qat(config: QATConfig, bundled: bool, num_classes: int, identity: dict[str, str],
                checkpoint: Path) -> QATJob:
    """Open the training images and, with ``resume``, refuse a foreign or missing checkpoint before any work."""
    if config.train is None and not bundled:
        raise DataError("--method qat needs --train images for your own weights (an ImageFolder tree, a folder or a "
                        "list file); the bundled digits fit only the bundled model")
    job = QATJob(open_images(config.train, "train", num_classes), config, checkpoint, tuple(sorted(identity.items())))
    _check_one_batch(job.images, config, distributed()[1])
    if config.resume:
        load_resumable(checkpoint, dict(job.identity))
    return job


def _check_one_batch(images: ImageSet, config: QATConfig, world: int) -> None:
    if len(images.items) < config.batch_size * world:
        raise DataError(f"{images.origin} has {len(images.items)} training images, fewer than one batch of "
                        f"{config.batch_size}{f' x {world} processes' if world > 1 else ''}: lower --batch-size")


_SETTINGS = ("--weight-bits",)  # identity entries that are quantize options, not which model and target


def model_identity(weights_sha256: str, target: str, form: str, model_config: dict,
                   weight_bits: int | None = None) -> dict[str, str]:
    identity = {"weights_sha256": weights_sha256, "target": target, "form": form,
                "model": json.dumps(model_config, sort_keys=True)}
    if weight_bits is not None:
        identity["--weight-bits"] = str(weight_bits)
    return identity


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, preprocess):
        self.items, self.preprocess, self.skipped = images.items, preprocess, []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        from edgesmlp.calibration.sources import decode

        item = self.items[i]
        x = decode(item, self.preprocess, self.skipped)
        return None if x is None else (torch.from_numpy(x), -1 if item.label is None else item.label)  # None: dropped


def _collate(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fine_tune(student, teacher, job: QATJob, preprocess, log=print) -> dict:
    """Train ``student`` in place, distilling ``teacher``; return a summary of the run."""
    images, config, checkpoint, identity = job.images, job.config, job.checkpoint, dict(job.identity)
    rank, world = distributed()
    _check_one_batch(images, config, world)
    labelled = images.labelled
    if not labelled:
        log(f"{images.origin} has no labels: fine-tuning by distillation from the FP32 model only")
    torch.manual_seed(config.seed)
    dataset = _Images(images, preprocess)
    sampler = torch.utils.data.DistributedSampler(dataset, world, rank, seed=config.seed) if world > 1 else None
    loader = torch.utils.data.DataLoader(dataset, config.batch_size, shuffle=sampler is None, sampler=sampler,
                                         drop_last=True, collate_fn=_collate,
                                         generator=torch.Generator().manual_seed(config.seed))
    model = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    optimizer = torch.optim.AdamW(_parameter_groups(student, config), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    start_epoch = _resume(checkpoint, identity, student, optimizer, schedule) if config.resume else 0
    teacher.eval()
    history = []
    for epoch in range(start_epoch, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        loss = _epoch(model, teacher, loader, optimizer, schedule, config, labelled, epoch, log)
        history.append(loss)
        if rank == 0 and checkpoint is not None:
            _save(checkpoint, identity, student, optimizer, schedule, epoch + 1)
    student.eval()
    digest = weights_digest(student)
    log(f"rank {rank}/{world} final weights sha256 {digest}")
    return {"epochs": config.epochs, "resumed_from_epoch": start_epoch, "losses": history, "world_size": world,
            "labelled": labelled, "weights_sha256": digest}


def _parameter_groups(student: torch.nn.Module, config: QATConfig) -> list[dict]:
    """Weights at ``lr``; trained activation ranges (``log_amax``) at ``range_lr``, without weight decay."""
    ranges = [p for name, p in student.named_parameters() if name.endswith("log_amax")]
    weights = [p for name, p in student.named_parameters() if not name.endswith("log_amax")]
    groups = [{"params": weights}]
    if ranges:
        groups.append({"params": ranges, "lr": config.range_lr, "weight_decay": 0.0})
    return groups


def _epoch(model, teacher, loader, optimizer, schedule, config: QATConfig, labelled: bool, epoch: int, log) -> float:
    from edgesmlp.progress import progress_bar

    model.train()
    losses, started = [], time.perf_counter()
    with progress_bar(f"QAT epoch {epoch + 1}/{config.epochs}", total=len(loader)) as advance:
        for batch in loader:
            if batch is None:
                continue
            x, y = batch
            step = time.perf_counter()
            try:
                loss = _loss(model(x), teacher, x, y, config, labelled)
                optimizer.zero_grad()
                loss.backward()
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if "out of memory" not in str(e).lower():
                    raise
                raise InputError(f"ran out of memory at --batch-size {config.batch_size}: try "
                                 f"--batch-size {max(1, config.batch_size // 2)}") from None
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            last = time.perf_counter() - step
            advance(f"loss {losses[-1]:.4f}  {last:.2f} s/step")
    if not losses:
        raise DataError(f"no training batch could be read in epoch {epoch + 1}: every image in it was unreadable "
                        "(see the skipped images); check the --train images")
    mean = sum(losses) / len(losses)
    log(f"QAT epoch {epoch + 1}/{config.epochs}: loss {mean:.4f}, {last:.2f} s/step, "
        f"{time.perf_counter() - started:.0f} s")
    return mean


def _loss(logits, teacher, x, y, config: QATConfig, labelled: bool):
    with torch.no_grad():
        target = teacher(x)
    t = config.temperature
    kd = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), reduction="batchmean",
                  log_target=True) * t * t
    if labelled:
        return (1 - config.label_weight) * kd + config.label_weight * F.cross_entropy(logits, y)
    return kd


def _save(path: Path, identity: dict, student, optimizer, schedule, epoch: int) -> None:
    state = {"format": CHECKPOINT_FORMAT, "identity": identity, "epoch": epoch, "model": student.state_dict(),
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_resumable(path: Path | None, identity: dict) -> dict:
    """The checkpoint to resume from, refused (before any work) unless it belongs to this job."""
    if path is None or not path.is_file():
        raise InputError(f"--resume: no checkpoint at {path}; run without --resume to start fresh")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint is the user's to remove
        raise InputError(f"--resume: {path} is unreadable ({type(e).__name__}); delete it and start fresh") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"--resume: {path} is not an edgesmlp QAT checkpoint; delete it and start fresh")
    if not isinstance(state.get("identity"), dict) or not isinstance(state.get("epoch"), int) or not all(
            isinstance(state.get(k), dict) for k in ("model", "optimizer", "schedule")):
        raise InputError(f"--resume: {path} is damaged (entries missing); delete it and start fresh")
    for key, value in sorted(identity.items(), key=lambda item: item[0] in _SETTINGS):  # the job before its settings
        if state["identity"].get(key) != value:
            raise InputError(f"--resume: {path} was made for another {key} ({state['identity'].get(key)!r}, this run "
                             f"is {value!r}); delete it or drop --resume")
    return state


def _resume(path: Path | None, identity: dict, student, optimizer, schedule) -> int:
    state = load_resumable(path, identity)
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["epoch"])
