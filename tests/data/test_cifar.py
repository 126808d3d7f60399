"""CIFAR readers (binary, pickle, archive, folder), the seeded stream and paper augmentation."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnet_suite.data import augment, cifar, load_cifar_arrays


def test_binary_release_decodes_planes_and_labels(binary_release, fake_cifar):
    images, labels = fake_cifar
    xtr, ytr, xte, yte, names, report = load_cifar_arrays(binary_release)
    np.testing.assert_array_equal(xtr, images[:30])
    np.testing.assert_array_equal(ytr, labels[:30])
    np.testing.assert_array_equal(xte, images[30:])
    np.testing.assert_array_equal(yte, labels[30:])
    assert names == [f"c{i}" for i in range(10)]
    assert report.loaded == {"train": 30, "test": 6} and report.num_skipped == 0


def test_pickle_release_equals_binary(pickle_release, fake_cifar):
    images, labels = fake_cifar
    xtr, ytr, xte, yte, names, _ = load_cifar_arrays(pickle_release)
    np.testing.assert_array_equal(xtr, images[:30])
    np.testing.assert_array_equal(yte, labels[30:])
    assert names[0] == "p0"


def test_cifar100_binary_uses_fine_label(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    for name, n in (("train.bin", 4), ("test.bin", 2)):
        coarse = rng.integers(0, 20, n).astype(np.uint8)
        fine = rng.integers(0, 100, n).astype(np.uint8)
        pix = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        np.concatenate([coarse[:, None], fine[:, None], pix], 1).tofile(d / name)
        if name == "train.bin":
            expect_fine, expect_px = fine, pix
    xtr, ytr, *_ = load_cifar_arrays(tmp_path, num_classes=100)
    np.testing.assert_array_equal(ytr, expect_fine)
    # pixel (row 0, col 1) of image 0: R plane offset 1, G plane offset 1025, B plane 2049
    np.testing.assert_array_equal(xtr[0, 0, 1], expect_px[0, [1, 1025, 2049]])


def test_truncated_binary_batch_is_skipped_and_named(binary_release):
    path = binary_release / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    xtr, *_, report = load_cifar_arrays(binary_release)
    assert len(xtr) == 24
    assert report.num_skipped == 1 and report.skipped[0][0] == str(path)
    assert "multiple of the 3073-byte record" in report.skipped[0][1]


def test_damaged_pickle_batch_is_skipped_and_named(pickle_release):
    path = pickle_release / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(b"not a pickle")
    xtr, *_, report = load_cifar_arrays(pickle_release)
    assert len(xtr) == 24 and report.skipped[0][0] == str(path)
    assert "unreadable batch" in report.summary()


def test_archive_is_extracted_once(pickle_archive, tmp_path, monkeypatch, fake_cifar):
    cache = tmp_path / "cache"
    xtr, *_ = load_cifar_arrays(pickle_archive, cache=cache)
    np.testing.assert_array_equal(xtr, fake_cifar[0][:30])
    (extracted,) = [p for p in cache.iterdir() if p.is_dir()]
    assert not any(".tmp-" in p.name for p in cache.iterdir())

    def boom(*a, **k):
        raise AssertionError("archive extracted twice")

    monkeypatch.setattr(tarfile, "open", boom)
    xtr2, *_ = load_cifar_arrays(pickle_archive, cache=cache)
    np.testing.assert_array_equal(xtr, xtr2)


def test_unsafe_archive_member_is_refused(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="unsafe archive member"):
        load_cifar_arrays(bad, cache=tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()


def _write_jpeg(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)


def test_folder_skips_corrupt_non_image_and_wrong_size(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for split, n in (("train", 3), ("test", 1)):
        for c in ("cat", "dog"):
            for i in range(n):
                _write_jpeg(
                    root / split / c / f"{i}.jpg", rng.integers(0, 256, (32, 32, 3), np.uint8)
                )
    good = (root / "train" / "cat" / "0.jpg").read_bytes()
    (root / "train" / "cat" / "trunc.jpg").write_bytes(good[: len(good) // 3])
    (root / "train" / "dog" / "notes.jpg").write_text("this is not an image")
    _write_jpeg(root / "train" / "dog" / "big.jpg", np.zeros((40, 40, 3), np.uint8))
    xtr, ytr, xte, yte, names, report = load_cifar_arrays(root, num_classes=2, cache=tmp_path / "c")
    assert names == ["cat", "dog"] and xtr.shape == (6, 32, 32, 3) and len(xte) == 2
    np.testing.assert_array_equal(np.bincount(ytr), [3, 3])
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in report.skipped}
    assert set(reasons) == {"trunc.jpg", "notes.jpg", "big.jpg"}
    assert "corrupt image" in reasons["trunc.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "40x40" in reasons["big.jpg"]
    # The decoded arrays and the report are cached; a second load gives the same.
    again = load_cifar_arrays(root, num_classes=2, cache=tmp_path / "c")
    np.testing.assert_array_equal(again[0], xtr)
    assert again[-1].num_skipped == 3


def test_missing_and_unrecognised_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cifar(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no CIFAR data"):
        cifar(tmp_path / "empty")
    with pytest.raises(ValueError, match="normalization"):
        cifar(tmp_path, normalization="zscore")


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_stream_is_seeded_resumable_and_covers_each_epoch(binary_release, fake_cifar):
    a = cifar(binary_release, batch_size=4, seed=3)
    b = cifar(binary_release, batch_size=4, seed=3)
    c = cifar(binary_release, batch_size=4, seed=4)
    assert a.steps_per_epoch == 7  # 30 // 4, the remainder of each permutation dropped
    first = _batches(a.train, 10)
    for (x1, y1), (x2, y2) in zip(first, _batches(b.train, 10), strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], _batches(c.train, 1)[0][0])
    resumed = _batches(cifar(binary_release, batch_size=4, seed=3, start_step=8).train, 2)
    np.testing.assert_array_equal(resumed[0][0], first[8][0])
    np.testing.assert_array_equal(resumed[1][1], first[9][1])
    # one epoch draws 28 distinct images; epochs differ in order
    labels0 = np.concatenate([y for _, y in first[:7]])
    labels1 = np.concatenate([y for _, y in first[7:10]])
    assert len(labels0) == 28 and not np.array_equal(labels0[:12], labels1)


def test_pixel_mean_and_channel_normalisation(binary_release, fake_cifar):
    images = fake_cifar[0]
    d = cifar(binary_release, batch_size=4, normalization="pixel_mean")
    mean = images[:30].astype(np.float64).mean(0)
    np.testing.assert_allclose(d.mean, mean, atol=1e-4)
    x, _ = next(iter(d.test))
    np.testing.assert_allclose(x.numpy(), images[30:34] - mean, atol=1e-3)
    d = cifar(binary_release, batch_size=4, normalization="channel", augment_train=False)
    x = np.concatenate([b.numpy() for b, _ in d.train.take(7)])
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1.0, atol=0.05)


def test_pad_crop_flip_is_a_window_of_the_zero_padded_image():
    image = tf.random.uniform([32, 32, 3], 1.0, 2.0, seed=1)  # never 0, so padding is visible
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    seen_flip = seen_pad = False
    for s in range(20):
        out = augment.pad_crop_flip(image, tf.constant([7, s], tf.int64)).numpy()
        assert out.shape == (32, 32, 3)
        hits = []
        for flip in (False, True):
            src = padded[:, ::-1] if flip else padded
            hits += [
                (flip, i, j)
                for i in range(9)
                for j in range(9)
                if np.array_equal(src[i : i + 32, j : j + 32], out)
            ]
        assert hits, "output is not a 32x32 window of the padded image or its mirror"
        seen_flip |= hits[0][0]
        seen_pad |= bool((out == 0).any())
    assert seen_flip and seen_pad


def test_real_cifar_jpegs_from_a_slice_of_the_shared_tarball(shared_data, tmp_path):
    """Real JPEGs of the published archive, repacked small so the test stays fast."""
    small = tmp_path / "mini.tar.gz"
    counts: dict = {}
    with (
        tarfile.open(shared_data / "cifar10-jpeg.tar.gz", "r:gz") as src,
        tarfile.open(small, "w:gz") as dst,
    ):
        for m in src:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if counts.get(key, 0) < 3:
                counts[key] = counts.get(key, 0) + 1
                dst.addfile(m, src.extractfile(m))
            if len(counts) == 20 and min(counts.values()) == 3:
                break
    d = cifar(small, batch_size=10, cache=tmp_path / "cache")
    assert d.num_train == 30 and d.num_test == 30 and d.report.num_skipped == 0
    assert d.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    x, y = next(iter(d.train))
    assert x.shape == (10, 32, 32, 3) and x.dtype == tf.float32 and y.shape == (10,)
