"""Architecture configuration: a frozen dataclass validated on construction, and the variant table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from edgesmlp.errors import ConfigError

PATCH_SIZE = 4
# Patch embedding divides by 4, then three 2x downsamples: the input side must divide by 32.
SIZE_MULTIPLE = 32


class Fusion(str, Enum):
    """How the sMLP block joins its branches (paper Table 3)."""

    fc = "fc"  # official: concat, then a 1x1 conv (`fuse`) back to C channels
    sum = "sum"  # the branches added, no fuse layer
    weighted_sum = "weighted_sum"  # a learned per-channel weight for each branch (`branch_weight`), then the sum


class Branches(str, Enum):
    """How the two token-mixing branches are arranged (paper Table 4)."""

    parallel = "parallel"  # official: mixing along W and along H, both from the same input
    sequential = "sequential"  # the H-mixing (`proh_w`) applied to the output of the W-mixing (`proj_h`)


ALL_STAGES = (1, 2, 3, 4)

# The paper's configurations (Tang et al. 2021): the four headline models (Table 5) and the ablations
# of Tables 1-4. Names follow timm's convention; stage numbers count from 1 as the paper does.
_T_STAR = dict(dim=80, depths=(2, 8, 14, 2), alpha=2)
_S = dict(dim=96, depths=(2, 10, 24, 2), alpha=3)
_B = dict(dim=112, depths=(2, 10, 24, 2), alpha=3)
VARIANTS: dict[str, dict] = {
    "smlpnet_t_star": _T_STAR,
    "smlpnet_t": dict(dim=80, depths=(2, 8, 14, 2), alpha=3),
    "smlpnet_s": _S,
    "smlpnet_b": _B,
    # Table 1: local (depthwise conv) and global (sMLP) token mixing
    "smlpnet_t_star_global_only": {**_T_STAR, "dwconv": False},
    "smlpnet_t_star_local_only": {**_T_STAR, "smlp_stages": ()},
    # Table 2: sMLP only in the last stages of sMLPNet-B
    "smlpnet_b_smlp_s234": {**_B, "smlp_stages": (2, 3, 4)},
    "smlpnet_b_smlp_s34": {**_B, "smlp_stages": (3, 4)},
    "smlpnet_b_smlp_s4": {**_B, "smlp_stages": (4,)},
    "smlpnet_b_no_smlp": {**_B, "smlp_stages": ()},
    # Table 3: fusion of the branches on sMLPNet-S
    "smlpnet_s_sum": {**_S, "fusion": "sum"},
    "smlpnet_s_weighted_sum": {**_S, "fusion": "weighted_sum"},
    # Table 4: branch design on sMLPNet-T*
    "smlpnet_t_star_no_identity": {**_T_STAR, "identity": False},
    "smlpnet_t_star_sequential": {**_T_STAR, "branches": "sequential"},
    "smlpnet_t_star_sequential_no_identity": {**_T_STAR, "branches": "sequential", "identity": False},
}
HEADLINE = ("smlpnet_t_star", "smlpnet_t", "smlpnet_s", "smlpnet_b")
ARCH_FIELDS = ("dim", "depths", "alpha", "fusion", "smlp_stages", "dwconv", "branches", "identity")


def choice(kind: type[Enum], value, name: str):
    """``value`` as a member of ``kind``, or a ConfigError naming the option ``name`` and the choices."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} {value!r} unknown: use {', '.join(m.value for m in kind)}") from None


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 80
    depths: tuple[int, ...] = (2, 8, 14, 2)
    alpha: int = 3
    num_classes: int = 1000
    in_chans: int = 3
    image_size: int = 224
    fusion: Fusion = Fusion.fc
    smlp_stages: tuple[int, ...] = ALL_STAGES  # stages (1-4) whose blocks have the sMLP block
    dwconv: bool = True  # each block has the depthwise-conv block (local token mixing)
    branches: Branches = Branches.parallel
    identity: bool = True  # the sMLP block keeps its input as a branch

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        # A stage with no blocks has no sMLP to speak of: only stages with blocks are listed.
        object.__setattr__(self, "smlp_stages", tuple(sorted(
            {int(s) for s in self.smlp_stages if not 1 <= int(s) <= len(self.depths) or self.depths[int(s) - 1]})))
        object.__setattr__(self, "fusion", choice(Fusion, self.fusion, "fusion"))
        object.__setattr__(self, "branches", choice(Branches, self.branches, "branches"))
        if self.image_size <= 0 or self.image_size % SIZE_MULTIPLE:
            raise ConfigError(
                f"image size {self.image_size} is not a positive multiple of {SIZE_MULTIPLE}: "
                f"use e.g. {max(SIZE_MULTIPLE, round(self.image_size / SIZE_MULTIPLE) * SIZE_MULTIPLE)}"
            )
        for name in ("dim", "alpha", "num_classes", "in_chans"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if len(self.depths) != 4 or any(d < 0 for d in self.depths):
            raise ConfigError(f"depths must be four non-negative block counts, got {list(self.depths)}")
        if any(s not in ALL_STAGES for s in self.smlp_stages):
            raise ConfigError(f"smlp_stages are stage numbers 1-4, got {list(self.smlp_stages)}")
        if not self.dwconv and any(d and i + 1 not in self.smlp_stages for i, d in enumerate(self.depths)):
            raise ConfigError("without the depthwise-conv block every stage needs the sMLP block: a block must "
                              "mix tokens somehow")

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "ModelConfig":
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)}")
        return cls(**{**VARIANTS[name], **overrides})

    def arch(self) -> dict:
        """The fields that make the architecture (not the classes, channels or input size)."""
        return {name: getattr(self, name) for name in ARCH_FIELDS}

    @property
    def variant(self) -> str | None:
        """The paper variant with this architecture, or None for a custom network."""
        for name in VARIANTS:
            if ModelConfig.from_variant(name).arch() == self.arch():
                return name
        return None

    def has_smlp(self, stage: int) -> bool:
        """Whether stage ``stage`` (0-based, as the module lists count) has the sMLP block."""
        return stage + 1 in self.smlp_stages

    @property
    def branch_count(self) -> int:
        """Tensors the sMLP block joins: the identity (if kept) and one (sequential) or two (parallel) mixes."""
        return int(self.identity) + (2 if self.branches is Branches.parallel else 1)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.dim * 2**i for i in range(len(self.depths)))

    @property
    def grids(self) -> tuple[int, ...]:
        """Token grid side per stage (56, 28, 14, 7 at 224)."""
        return tuple(self.image_size // PATCH_SIZE // 2**i for i in range(len(self.depths)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"], d["smlp_stages"] = list(self.depths), list(self.smlp_stages)
        d["fusion"], d["branches"] = self.fusion.value, self.branches.value
        return d
