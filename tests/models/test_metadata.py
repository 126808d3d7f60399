"""What a classifier or backbone knows about itself (checkpoint, preprocessing, spec,
feature_info) survives `.keras` save/load in a fresh process that imports only keras and
keras_resnet_suite, and reaches the exported SavedModel as `assets.extra/metadata.json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import backbones, metadata

REPO = Path(__file__).resolve().parents[2]
CIFAR20 = Path("cifar-resnet-checkpoints") / "resnet20-12fca82f.th"

# Loads the saved model in a new interpreter and writes back what it knows and computes.
RELOAD = """
import json, sys
import numpy as np
import keras
import keras_resnet_suite
from keras_resnet_suite import metadata
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
out = model.predict(x, verbose=0)
np.savez(sys.argv[3], **(out if isinstance(out, dict) else {"y": out}),
         pre=np.asarray(model.preprocess_input(x)) if hasattr(model, "preprocess_input") else 0)
json.dump({"class": type(model).__name__, "metadata": metadata.describe(model),
           "spec": repr(model.spec), "checkpoint": repr(getattr(model, "checkpoint", None)),
           "params": model.count_params()}, open(sys.argv[4], "w"))
"""


def _reload_elsewhere(model: keras.Model, x: np.ndarray, tmp_path: Path) -> tuple[dict, dict]:
    """(outputs, facts) of `model` saved as .keras and loaded in a fresh process."""
    path, inputs = tmp_path / "model.keras", tmp_path / "x.npy"
    model.save(path)
    np.save(inputs, x)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(path), str(inputs), str(tmp_path / "out.npz"),
         str(tmp_path / "facts.json")], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = dict(np.load(tmp_path / "out.npz"))
    return outputs, json.loads((tmp_path / "facts.json").read_text())


def test_a_published_classifier_reloads_with_its_checkpoint_and_preprocessing(
        shared_data, tmp_path):
    source = shared_data / CIFAR20
    if not source.exists():
        pytest.skip(f"data: {source} is absent")
    model = krs.build("resnet20", weights=str(source))
    assert model.checkpoint.name == "resnet20:akamaster" and model.preprocessing == "torch"
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = model.predict(np.asarray(model.preprocess_input(x)), verbose=0)

    # The reloaded model is fed what it preprocesses itself: same array, same logits.
    outputs, facts = _reload_elsewhere(model, np.asarray(model.preprocess_input(x)), tmp_path)
    np.testing.assert_array_equal(outputs["y"], want)
    assert facts["class"] == "ResNetModel" and facts["params"] == model.count_params() == 271_098
    assert facts["metadata"] == json.loads(json.dumps(metadata.describe(model)))
    assert facts["checkpoint"] == repr(model.checkpoint) and facts["spec"] == repr(model.spec)
    assert facts["metadata"]["checkpoint"]["file_hash"].startswith("12fca82f")
    # preprocess_input of the reloaded model on raw pixels: the same array as before saving.
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(reloaded.preprocess_input(x)),
                                  np.asarray(model.preprocess_input(x)))
    assert reloaded.checkpoint == model.checkpoint and reloaded.spec == model.spec


@pytest.mark.tf_only
def test_the_classifier_savedmodel_carries_its_preprocessing(shared_data, tmp_path):
    source = shared_data / CIFAR20
    if not source.exists():
        pytest.skip(f"data: {source} is absent")
    from keras_resnet_suite import export

    model = krs.build("resnet20", weights=str(source))
    out = export.export_saved_model(model, tmp_path / "served", mean=(125.3, 123.0, 113.9),
                                    std=(63.0, 62.1, 66.7), class_names=list("abcdefghij"))
    meta = json.loads((out / "assets.extra" / metadata.FILENAME).read_text())
    assert meta["preprocessing"] == "torch"
    assert meta["checkpoint"]["name"] == "resnet20:akamaster"
    assert meta["spec"]["depths"] == [3, 3, 3] and meta["spec"]["stem"] == "cifar"
    assert meta["serving_bytes"] == {"image_size": [32, 32], "resize": 32,
                                     "mean": pytest.approx([125.3, 123.0, 113.9]),
                                     "std": pytest.approx([63.0, 62.1, 66.7]),
                                     "class_names": list("abcdefghij")}


def test_a_backbone_reloads_with_its_spec_and_feature_info(tmp_path):
    backbone = backbones.build("resnet18", input_shape=(64, 64, 3), depths=(1, 1, 1, 1),
                               output_stride=16, return_levels=("C3", "C4", "C5"))
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    want = backbone.predict(x, verbose=0)
    outputs, facts = _reload_elsewhere(backbone, x, tmp_path)
    for level in ("C3", "C4", "C5"):
        np.testing.assert_array_equal(outputs[level], want[level])
    assert facts["metadata"] == {
        "spec": json.loads(json.dumps(metadata.describe(backbone)["spec"])),
        "feature_info": {"C3": {"channels": 128, "stride": 8},
                         "C4": {"channels": 256, "stride": 16},
                         "C5": {"channels": 512, "stride": 16}}}
    assert facts["spec"] == repr(backbone.spec) and "depths=(1, 1, 1, 1)" in facts["spec"]


def test_a_backbone_from_a_classifier_keeps_the_checkpoint(shared_data, tmp_path):
    source = shared_data / CIFAR20
    if not source.exists():
        pytest.skip(f"data: {source} is absent")
    classifier = krs.build("resnet20", weights=str(source))
    backbone = backbones.from_classifier(classifier, return_levels=("C3", "C4"))
    backbone.save(tmp_path / "b.keras")
    again = keras.saving.load_model(tmp_path / "b.keras")
    assert again.checkpoint == classifier.checkpoint and again.preprocessing == "torch"
    assert again.feature_info == {"C3": {"channels": 32, "stride": 2},
                                  "C4": {"channels": 64, "stride": 4}}


def test_a_malformed_metadata_entry_is_one_line_naming_it():
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    config = model.get_config()
    config["metadata"]["spec"]["depthz"] = [1]
    with pytest.raises(ValueError, match=r"model 'resnet20': metadata 'spec' has unknown "
                                         r"field\(s\) \['depthz'\]"):
        metadata.ResNetModel.from_config(config)
    config["metadata"] = {"colour": "blue"}
    with pytest.raises(ValueError, match=r"unknown metadata key\(s\) \['colour'\]"):
        metadata.ResNetModel.from_config(config)


def test_a_plain_model_is_unchanged_but_its_class(tmp_path):
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    assert type(model) is metadata.ResNetModel and isinstance(model, keras.Model)
    assert model.get_config()["metadata"] == {"spec": json.loads(json.dumps(
        metadata.describe(model)["spec"]))}
    assert not hasattr(model, "checkpoint") and not hasattr(model, "preprocess_input")
