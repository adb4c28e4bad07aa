"""Image preprocessing as a checkpoint was trained: timm/DeiT evaluation defaults, in Pillow + numpy (no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from edgesmlp.errors import ConfigError, ImageTooLarge

MAX_PIXELS = 64_000_000  # per image, decoded (sources) or resized (here); Pillow refuses only beyond about 179 million
MAX_RESIZE_SIDE = 16_384  # image_size / crop_pct past this would resize every image past the cap
MAX_IMAGE_SIDE = 2048  # 300 calibration images at 2048 hold 3.8 GB of pixels; at 8192 they would not fit in memory
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


PREPROCESS_SCHEMA = "edgesmlp.preprocess/1"  # in a checkpoint's metadata; a record without it is version 1
_FIELD_TYPES = {"image_size": (int,), "crop_pct": (int, float), "interpolation": (str,), "mean": (list, tuple),
                "std": (list, tuple)}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``image_size / crop_pct``, centre-crop, scale to [0, 1], normalise."""

    image_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"--crop-pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"--interpolation {self.interpolation!r} unknown: use one of {', '.join(INTERPOLATIONS)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std, self.crop_pct)):
            raise ConfigError(f"--mean, --std and --crop-pct must be finite numbers, got mean {self.mean}, std "
                              f"{self.std}, crop-pct {self.crop_pct}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError("--mean and --std need the same number of values, and every std must be positive")
        if any(s < 1e-3 for s in self.std):  # pixels are in [0, 1]: a smaller std makes inputs past 1,000
            raise ConfigError(f"--std {','.join(f'{s:g}' for s in self.std)}: each std is on [0, 1] pixels, as "
                              "ImageNet's 0.229; below 0.001 the inputs blow up. Give the std the model was trained with")
        if not 0 < self.image_size <= MAX_IMAGE_SIDE:
            raise ConfigError(f"image size {self.image_size} (--image-size, or the checkpoint's recorded one) is past "
                              f"{MAX_IMAGE_SIDE}: its calibration images alone would not fit in memory; give the size "
                              "the model was trained at")
        if self.resize_side > MAX_RESIZE_SIDE:
            raise ConfigError(f"image size {self.image_size} with --crop-pct {self.crop_pct:g} resizes every image to "
                              f"{self.resize_side} pixels a side, past {MAX_RESIZE_SIDE}: give a crop-pct near 0.875")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def resize_side(self) -> int:
        """The shorter side images are resized to before the centre crop."""
        return math.floor(self.image_size / self.crop_pct)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """A float32 (C, H, W) array."""
        return normalize(self.pixels(image), self.mean, self.std)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The resized and cropped image as a uint8 (C, H, W) array, before scaling and normalising."""
        image = to_model_mode(image, self.channels)
        size = self.image_size
        if image.size != (size, size) or self.crop_pct != 1.0:
            scale = self.resize_side
            w, h = image.size
            if w <= h:
                new = (scale, max(scale, round(h * scale / w)))
            else:
                new = (max(scale, round(w * scale / h)), scale)
            if new[0] * new[1] > MAX_PIXELS:  # a 1,000,000 x 1 strip resizes to billions of pixels
                raise ImageTooLarge(f"{w}x{h} pixels resize to {new[0]}x{new[1]} before the crop, over the "
                                    f"{MAX_PIXELS // 10**6}-megapixel cap: crop it nearer to square")
            image = image.resize(new, INTERPOLATIONS[self.interpolation])
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_record(self) -> dict:
        """What a checkpoint's metadata records: the fields and the schema they follow."""
        return {"schema": PREPROCESS_SCHEMA, **self.to_dict()}

    @classmethod
    def from_record(cls, record, where: str) -> "Preprocess":
        """A recorded preprocessing (a checkpoint's metadata, a manifest), checked field by field: the schema version,
        unknown fields, each field's type; a ConfigError naming ``where`` and the field."""
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: the preprocessing record is a {type(record).__name__}, not an object")
        record = dict(record)
        schema = record.pop("schema", PREPROCESS_SCHEMA)
        if schema != PREPROCESS_SCHEMA:
            raise ConfigError(f"{where}: the preprocessing record follows {schema!r:.60}; this edgesmlp reads "
                              f"{PREPROCESS_SCHEMA!r}: upgrade edgesmlp, or re-save the weights with this one")
        unknown = sorted(set(record) - set(_FIELD_TYPES))
        if unknown:
            raise ConfigError(f"{where}: the preprocessing record has unknown field {unknown[0]!r:.40} (it knows "
                              f"{', '.join(_FIELD_TYPES)})")
        for name, kinds in _FIELD_TYPES.items():
            value = record.get(name)
            numbers = name in ("mean", "std") and isinstance(value, kinds) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                      or (name in ("mean", "std") and not numbers)):
                raise ConfigError(f"{where}: the preprocessing field {name!r} is {value!r:.60}, not "
                                  f"{'a list of numbers' if name in ('mean', 'std') else kinds[0].__name__}")
        return cls(**record)


def normalize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 pixels (..., C, H, W) scaled to [0, 1] and normalised, as float32."""
    shape = (len(mean), 1, 1)
    scaled = pixels.astype(np.float32) / 255.0
    return (scaled - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)


@dataclass(frozen=True, eq=False)
class Images:
    """Preprocessed images kept as their uint8 pixels, a quarter of the float32 array's memory (1,000 images at
    224 are 144 MiB, not 574), and normalised to float32 (N, C, H, W) when indexed or iterated: a read-only
    stand-in for that array wherever it is sliced, iterated or passed to numpy."""

    pixels: np.ndarray  # (N, C, H, W) uint8
    mean: tuple[float, ...]
    std: tuple[float, ...]

    dtype = np.dtype(np.float32)
    ndim = 4

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key) -> np.ndarray:
        return normalize(self.pixels[key], self.mean, self.std)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self[:]
        return array if dtype is None else array.astype(dtype, copy=False)


def to_model_mode(image: Image.Image, channels: int) -> Image.Image:
    """Greyscale, palette, RGBA, CMYK and 16-bit images all become 8-bit L or RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array * (255.0 / peak)).round().clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white, as browsers and most training pipelines show transparent images.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")
