"""SavedModel export: parity with Keras in a process that cannot import this project, the
encoded-image signature, BN folding, saved_model_cli, bad arguments."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_bytes

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("SavedModel export is TensorFlow-only", allow_module_level=True)

import keras_resnet_suite as krs  # noqa: E402
from keras_resnet_suite import export  # noqa: E402
from keras_resnet_suite.data import augment  # noqa: E402

CLEAN_LOADER = r"""
import json, sys
import numpy as np
for _name in ("keras_resnet_suite", "detection"):
    sys.modules[_name] = None  # importing the project fails here, installed or not
import tensorflow as tf
args = json.loads(sys.argv[1])
out = {}
for name, path in args["models"].items():
    loaded = tf.saved_model.load(path)
    sigs = loaded.signatures
    out[name + "/signatures"] = np.array(sorted(sigs.keys()))
    f = sigs["serving_default"]
    out[name + "/inputs"] = np.array(sorted(f.structured_input_signature[1]))
    images = np.load(args["images"])
    for n in (1, len(images)):  # dynamic batch
        r = f(images=tf.constant(images[:n]))
        for k, v in r.items():
            v = v.numpy()
            out[f"{name}/default{n}/{k}"] = v.astype(str) if v.dtype == object else v
    blobs = [open(p, "rb").read() for p in args["files"]]
    r = sigs["serving_bytes"](image_bytes=tf.constant(blobs))
    for k, v in r.items():
        v = v.numpy()
        out[f"{name}/bytes/{k}"] = v.astype(str) if v.dtype == object else v
np.savez(args["result"], **out)
"""


def _random_statistics(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so folding and parity are tested."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = w.path.rsplit("/", 1)[-1]
        if name == "moving_variance":
            w.assign(rng.uniform(0.5, 2.0, w.shape))
        elif name in ("moving_mean", "beta"):
            w.assign(rng.normal(0.0, 0.3, w.shape))
        elif name == "gamma":
            w.assign(rng.uniform(0.5, 1.5, w.shape))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """resnet20 exported plain and BN-folded, then loaded by a clean `python -I` process."""
    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("export")
    model = _random_statistics(krs.build("resnet20"))
    rng = np.random.default_rng(1)
    mean = rng.uniform(100, 150, (32, 32, 3)).astype(np.float32)  # a per-pixel mean image
    std = np.array([60.0, 62.0, 65.0], np.float32)
    names = [f"class{i}" for i in range(10)]
    export.export_saved_model(model, tmp / "plain", mean=mean, std=std, class_names=names,
                              fold_bn=False)
    export.export_saved_model(model, tmp / "folded", mean=mean, std=std, top_k=3)  # folds
    images = rng.normal(0, 1, (3, 32, 32, 3)).astype(np.float32)
    np.save(tmp / "images.npy", images)
    raw = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
           rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)]  # fmt: skip
    files = []
    for i, r in enumerate(raw):
        files.append(tmp / f"img{i}.png")
        files[-1].write_bytes(png_bytes(r))
    args = {"models": {"plain": str(tmp / "plain"), "folded": str(tmp / "folded")},
            "images": str(tmp / "images.npy"), "files": [str(f) for f in files],
            "result": str(tmp / "result.npz")}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_LOADER, json.dumps(args)],
                          cwd=tmp, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp / "result.npz") as z:
        result = {k: z[k] for k in z.files}
    return {"model": model, "images": images, "raw": raw, "mean": mean, "std": std,
            "result": result, "dir": tmp, "names": names}  # fmt: skip


def test_clean_process_matches_keras(exported):
    r, images = exported["result"], exported["images"]
    expected = np.asarray(exported["model"](images, training=False))
    for n in (1, 3):
        plain = r[f"plain/default{n}/probabilities"]
        assert plain.shape == (n, 10)
        assert np.abs(plain - expected[:n]).max() <= 1e-5
        assert np.abs(r[f"folded/default{n}/probabilities"] - expected[:n]).max() <= 1e-4
    assert list(r["plain/signatures"]) == ["serving_bytes", "serving_default"]
    assert list(r["plain/inputs"]) == ["images"]


def test_named_top_k_outputs(exported):
    r = exported["result"]
    probs = r["plain/default3/probabilities"]
    order = np.argsort(-probs, axis=1)
    np.testing.assert_array_equal(r["plain/default3/top_k_classes"], order[:, :5])
    np.testing.assert_allclose(r["plain/default3/top_k_probabilities"],
                               np.take_along_axis(probs, order[:, :5], 1), rtol=1e-6)  # fmt: skip
    labels = r["plain/default3/top_k_labels"].astype(str)
    np.testing.assert_array_equal(labels, np.array(exported["names"])[order[:, :5]])
    assert r["folded/default3/top_k_classes"].shape == (3, 3)  # top_k=3
    assert "folded/default3/top_k_labels" not in r  # no class names given
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_bytes_signature_preprocesses_in_graph(exported):
    """Decoding, shorter-side resize, centre crop and (x - mean) / std happen in the graph."""
    r, mean, std = exported["result"], exported["mean"], exported["std"]
    small, large = exported["raw"]
    # a 32x32 image needs no resizing: exactly the normalised pixels
    x0 = (small.astype(np.float32) - mean) / std
    # 40x48: shorter side 40 -> 32 (32x38), then the centre 32x32 crop
    resized = augment.resize_shorter_side(large, 32)
    x1 = (np.asarray(augment.center_crop(resized, 32)) - mean) / std
    expected = np.asarray(exported["model"](np.stack([x0, x1]), training=False))
    assert np.abs(r["plain/bytes/probabilities"] - expected).max() <= 1e-5
    assert np.abs(r["folded/bytes/probabilities"] - expected).max() <= 1e-4


def test_fold_batchnorm_removes_every_conv_bn_pair():
    keras.utils.set_random_seed(0)
    model = _random_statistics(krs.build("resnet20"), seed=3)
    folded, count = export.fold_batchnorm(model)
    assert count == 19  # the stem + 2 per block x 9 (option A shortcuts have no conv)
    x = np.random.default_rng(0).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    assert np.abs(np.asarray(folded(x, training=False)) - ref).max() <= 1e-4
    block = folded.get_layer("conv2_x").blocks[0]
    kinds = [type(layer).__name__ for layer in block.branch]
    assert kinds == ["Conv2D", "ReLU", "Conv2D"]
    assert model.get_layer("conv2_x").blocks[0].branch[1].name == "bn1"  # original untouched


def test_fold_batchnorm_matches_hand_formula():
    """W' = W g / sqrt(v + eps), b' = beta - m g / sqrt(v + eps), on one BasicBlock conv."""
    model = _random_statistics(krs.build("resnet20"), seed=4)
    folded, _ = export.fold_batchnorm(model)
    conv, bn = model.get_layer("conv1").chain[0], model.get_layer("conv1").chain[1]
    new = folded.get_layer("conv1").chain[0]
    g, b = np.asarray(bn.gamma), np.asarray(bn.beta)
    m, v = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    scale = g / np.sqrt(v + bn.epsilon)
    np.testing.assert_allclose(np.asarray(new.kernel), np.asarray(conv.kernel) * scale, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new.bias), b - m * scale, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("saved_model_cli") is None and
                    not (Path(sys.executable).parent / "saved_model_cli").exists(),
                    reason="saved_model_cli is not installed")  # fmt: skip
def test_saved_model_cli_lists_signatures(exported):
    exe = shutil.which("saved_model_cli") or str(Path(sys.executable).parent / "saved_model_cli")
    proc = subprocess.run([exe, "show", "--dir", str(exported["dir"] / "plain"), "--all"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                 "inputs['images']", "inputs['image_bytes']", "outputs['probabilities']",
                 "outputs['top_k_classes']", "(-1, 32, 32, 3)"):  # fmt: skip
        assert text in proc.stdout, text


def test_bad_arguments_are_named(tmp_path):
    model = krs.build("resnet20")
    with pytest.raises(ValueError, match="class_names has 3 names for 10 classes"):
        export.export_saved_model(model, tmp_path / "x", class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        export.export_saved_model(model, tmp_path / "x", top_k=0)
    dynamic = krs.build("resnet20", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="fixed input size"):
        export.export_saved_model(dynamic, tmp_path / "x")
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no Conv2D -> BatchNormalization"):
        export.fold_batchnorm(plain)
    with pytest.raises(ValueError, match="no Conv2D -> BatchNormalization"):
        export.export_saved_model(plain, tmp_path / "x", fold_bn=True)
    assert not (tmp_path / "x").exists()


def test_default_export_folds_where_it_can(tmp_path):
    # Folded by default: no BN op is left to take a slow path for some batch size on some CPU.
    import tensorflow as tf

    def ops(path):
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        return {n.op for f in fn.graph.as_graph_def().library.function for n in f.node_def}

    model = krs.build("resnet20")
    export.export_saved_model(model, tmp_path / "ours")
    export.export_saved_model(model, tmp_path / "unfolded", fold_bn=False)
    assert "FusedBatchNormV3" in ops(tmp_path / "unfolded")
    assert not {"FusedBatchNormV3", "Rsqrt"} & ops(tmp_path / "ours")
    assert "Conv2D" in ops(tmp_path / "ours")
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    export.export_saved_model(plain, tmp_path / "plain")  # nothing to fold: served as it is
    assert (tmp_path / "plain" / "saved_model.pb").is_file()
