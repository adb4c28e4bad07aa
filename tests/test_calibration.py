import numpy as np
import pytest
from PIL import Image

from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import load_tensors, open_images
from edgesmlp.errors import ConfigError, DataError

PRE = Preprocess(image_size=32, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)


def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def rgb(size=(40, 30), value=128):
    return Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))


def test_imagefolder_labels_follow_sorted_class_names(tmp_path):
    for cls in ("cat", "ant", "bee"):
        save(tmp_path / cls / "a.png", rgb())
    images = open_images(tmp_path, num_classes=3)
    assert images.kind == "imagefolder" and images.classes == ("ant", "bee", "cat")
    assert [i.label for i in images.items] == [0, 1, 2]


def test_integer_class_folders_are_indices(tmp_path):
    save(tmp_path / "7" / "a.png", rgb())
    save(tmp_path / "2" / "b.png", rgb())
    assert sorted(i.label for i in open_images(tmp_path, num_classes=10).items) == [2, 7]
    with pytest.raises(DataError, match="class folder '7'.*only 5 classes"):
        open_images(tmp_path, num_classes=5)


def test_class_count_mismatch(tmp_path):
    for cls in ("a", "b", "c"):
        save(tmp_path / cls / "x.png", rgb())
    with pytest.raises(DataError, match="3 class folders but the model has 10"):
        open_images(tmp_path, num_classes=10)


def test_flat_folder_is_unlabelled(tmp_path):
    save(tmp_path / "x.jpg", rgb())
    save(tmp_path / "y.png", rgb())
    (tmp_path / "notes.txt").write_text("ignored")
    images = open_images(tmp_path)
    assert images.kind == "flat" and not images.labelled and len(images.items) == 2


def test_list_file(tmp_path):
    save(tmp_path / "img" / "a.png", rgb())
    save(tmp_path / "img" / "b.png", rgb())
    (tmp_path / "list.csv").write_text("path,label\n# comment\nimg/a.png,3\nimg/b.png,1\n")
    images = open_images(tmp_path / "list.csv", num_classes=5)
    assert [i.label for i in images.items] == [3, 1]
    (tmp_path / "bad.txt").write_text("img/a.png,seven\n")
    with pytest.raises(DataError, match="bad.txt:1: label 'seven'"):
        open_images(tmp_path / "bad.txt")
    (tmp_path / "range.txt").write_text("img/a.png,9\n")
    with pytest.raises(DataError, match="outside the model's classes"):
        open_images(tmp_path / "range.txt", num_classes=5)


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d / "nope", "no such file"),
    (lambda d: d, "holds no images"),
    (lambda d: (d / "w.pth").write_bytes(b"x") and d / "w.pth", "not an image list"),
    (lambda d: (d / "e.txt").write_text("# nothing\n") and d / "e.txt", "lists no images"),
])
def test_missing_or_empty_sources(tmp_path, make, pattern):
    with pytest.raises(DataError, match=pattern):
        open_images(make(tmp_path))


def test_sampling_is_deterministic(tmp_path):
    for i in range(20):
        save(tmp_path / f"{i:02d}.png", rgb(value=i))
    images = open_images(tmp_path)
    a, b = images.sample(5, seed=1), images.sample(5, seed=1)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert images.sample(5, seed=2).fingerprint() != a.fingerprint()
    assert images.sample(100) is images


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    save(tmp_path / "good.png", rgb())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    loaded = load_tensors(open_images(tmp_path), PRE)
    assert loaded.x.shape == (1, 3, 32, 32)
    assert sorted(k.rsplit("/", 1)[1] for k, _ in loaded.skipped) == ["broken.png", "truncated.png"]


def test_only_corrupt_images_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of its 2 images could be read"):
        load_tensors(open_images(tmp_path), PRE)


def test_mixed_sizes_and_modes(tmp_path):
    save(tmp_path / "grey.png", Image.fromarray(np.full((50, 20), 200, np.uint8), "L"))
    save(tmp_path / "rgba.png", Image.new("RGBA", (31, 64), (10, 20, 30, 0)))
    save(tmp_path / "cmyk.jpg", Image.new("CMYK", (64, 48), (0, 255, 0, 0)))
    save(tmp_path / "deep.png", Image.fromarray(np.full((40, 40), 60000, np.uint16)))
    save(tmp_path / "palette.gif", Image.new("P", (33, 33), 3))
    loaded = load_tensors(open_images(tmp_path), Preprocess(image_size=32))
    assert loaded.x.shape == (5, 3, 32, 32) and not loaded.skipped
    assert np.isfinite(loaded.x).all()
    by_name = dict(zip((k.rsplit("/", 1)[1] for k in loaded.keys), loaded.x))
    white = (1.0 - np.array((0.485, 0.456, 0.406))) / np.array((0.229, 0.224, 0.225))
    np.testing.assert_allclose(by_name["rgba.png"][:, 5, 5], white, atol=1e-4, rtol=0)  # transparent -> white
    expected_deep = (round(60000 / 65535 * 255) / 255 - 0.485) / 0.229
    assert abs(by_name["deep.png"][0, 5, 5].item() - expected_deep) < 1e-4  # 16-bit scaled, not clipped


def test_preprocess_matches_imagenet_eval_recipe():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    out = Preprocess(image_size=224)(image)
    assert out.shape == (3, 224, 224)
    # resize shorter side to floor(224 / 0.875) = 256 with bicubic, then centre-crop 224
    resized = image.resize((341, 256), Image.Resampling.BICUBIC)
    left, top = (341 - 224) // 2, (256 - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255
    expected = (crop - np.array((0.485, 0.456, 0.406), np.float32)) / np.array((0.229, 0.224, 0.225), np.float32)
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-5)


def test_loaded_images_are_uint8_pixels_normalised_exactly_as_preprocess(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)))
    pre = Preprocess(image_size=32)
    loaded = load_tensors(open_images(tmp_path), pre)
    assert loaded.x.pixels.dtype == np.uint8 and loaded.x.pixels.shape == (3, 3, 32, 32)  # a quarter of float32
    expected = np.stack([pre(Image.open(tmp_path / f"{i}.png")) for i in range(3)])
    assert loaded.x.dtype == np.float32 and loaded.x.shape == expected.shape and len(loaded.x) == 3
    np.testing.assert_array_equal(np.asarray(loaded.x), expected)  # bit-identical, not merely close
    np.testing.assert_array_equal(loaded.x[1:3], expected[1:3])
    np.testing.assert_array_equal(np.stack(list(loaded.x)), expected)


def test_image_at_input_size_passes_unchanged():
    pixels = np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)
    out = PRE(Image.fromarray(pixels))
    np.testing.assert_allclose(out, (pixels.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, atol=1e-6)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(crop_pct=0.0), "crop-pct"),
    (dict(crop_pct=1.5), "crop-pct"),
    (dict(interpolation="cubic"), "interpolation"),
    (dict(mean=(0.5,), std=(0.5, 0.5)), "same number"),
    (dict(std=(0.0, 1.0, 1.0)), "positive"),
])
def test_bad_preprocess_options(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Preprocess(**kwargs)


@pytest.mark.parametrize("options, fragment", [
    ({"image_size": 8192}, "image size 8192"), ({"crop_pct": 0.0001}, "past 16384"), ({"std": (1e-40,) * 3}, "0.001"),
])
def test_preprocessing_that_would_exhaust_memory_is_refused(options, fragment):
    """A recorded image size of 8192, a crop-pct of 0.0001 or a std of 1e-40 ran out of memory or blew up the
    inputs late in the run; each is refused where the preprocessing is built."""
    from edgesmlp.calibration.preprocess import Preprocess
    from edgesmlp.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        Preprocess(**options)
