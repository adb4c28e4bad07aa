"""Architecture configuration: a frozen dataclass validated on construction, and the variant table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgesmlp.errors import ConfigError

PATCH_SIZE = 4
# Patch embedding divides by 4, then three 2x downsamples: the input side must divide by 32.
SIZE_MULTIPLE = 32

# The paper's configurations (Tang et al. 2021, Table 2); names follow timm's convention.
VARIANTS: dict[str, dict] = {
    "smlpnet_t_star": dict(dim=80, depths=(2, 8, 14, 2), alpha=2),
    "smlpnet_t": dict(dim=80, depths=(2, 8, 14, 2), alpha=3),
    "smlpnet_s": dict(dim=96, depths=(2, 10, 24, 2), alpha=3),
    "smlpnet_b": dict(dim=112, depths=(2, 10, 24, 2), alpha=3),
}


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 80
    depths: tuple[int, ...] = (2, 8, 14, 2)
    alpha: int = 3
    num_classes: int = 1000
    in_chans: int = 3
    image_size: int = 224

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
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

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "ModelConfig":
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)}")
        return cls(**{**VARIANTS[name], **overrides})

    @property
    def variant(self) -> str | None:
        """The paper variant with this dim/depths/alpha, or None for a custom network."""
        for name, arch in VARIANTS.items():
            if (self.dim, self.depths, self.alpha) == (arch["dim"], arch["depths"], arch["alpha"]):
                return name
        return None

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.dim * 2**i for i in range(len(self.depths)))

    @property
    def grids(self) -> tuple[int, ...]:
        """Token grid side per stage (56, 28, 14, 7 at 224)."""
        return tuple(self.image_size // PATCH_SIZE // 2**i for i in range(len(self.depths)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"] = list(self.depths)
        return d
