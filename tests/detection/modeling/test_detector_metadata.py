"""A detector from a converted checkpoint keeps what it knows (architecture, class names,
official category ids) through `.keras` save/load in a fresh process, and its SavedModel
carries the same facts in `assets.extra/metadata.json` beside `label_map.pbtxt`."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from detector_helpers import tiny_detector
from parity.seeded import load_skeleton, seeded_state

from detection import FasterRCNN
from detection.checkpoints import pretrained

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.tf_only]

# A new interpreter that imports only keras and detection (its FasterRCNN registers the class).
RELOAD = """
import json, sys
import numpy as np
import keras
from detection import FasterRCNN
model = keras.saving.load_model(sys.argv[1])
out = model(np.load(sys.argv[2]), training=False)  # eager: a third of predict's tracing time
np.savez(sys.argv[3], **{k: keras.ops.convert_to_numpy(v) for k, v in out.items()})
json.dump({"class": type(model).__name__, "architecture": repr(model.architecture),
           "class_names": model.class_names, "category_ids": model.category_ids,
           "build_overrides": model.build_overrides}, open(sys.argv[4], "w"))
"""


def test_a_pretrained_detector_reloads_naming_its_classes(tmp_path):
    state = seeded_state(load_skeleton("d2_r50_fpn"), seed=0)
    source = tmp_path / "model_final.pkl"
    with open(source, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f)
    del state
    # Fewer proposals than the preset's 1000: the same code, a tenth of the memory on 2 cores.
    model = FasterRCNN.from_checkpoint(source, (128, 160), score_threshold=0.0,
                                       rpn_pre_nms_topk=(100, 100), rpn_post_nms_topk=(50, 50))
    assert model.class_names[0] == "person" and model.category_ids[-1] == 90
    images = np.random.default_rng(0).uniform(0, 255, (1, 128, 160, 3)).astype("float32")
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}
    model.save(tmp_path / "detector.keras")
    np.save(tmp_path / "x.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "detector.keras"), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npz"), str(tmp_path / "facts.json")], cwd=REPO,
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    got = dict(np.load(tmp_path / "out.npz"))
    assert int(want["num_detections"][0]) > 0
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts == {"class": "FasterRCNN", "architecture": repr(model.architecture),
                     "class_names": model.class_names, "category_ids": model.category_ids,
                     "build_overrides": {"score_threshold": 0.0, "rpn_pre_nms_topk": [100, 100],
                                         "rpn_post_nms_topk": [50, 50]}}
    assert len(facts["class_names"]) == 80 and facts["category_ids"][:3] == [1, 2, 3]


def test_a_detector_savedmodel_carries_its_metadata(tmp_path):
    from detection.export import export_saved_model

    model = tiny_detector("c4", num_classes=3)
    arch = pretrained.Architecture("detectron2", "detectron2", "resnet50", "c4", 3, None, "toy")
    model.architecture, model.build_overrides = arch, {}
    model.class_names, model.category_ids = ["cat", "N/A", "dog"], [7, 8, 9]
    again = type(model).from_config(model.get_config())
    assert again.architecture == arch and again.class_names == ["cat", "N/A", "dog"]
    out = export_saved_model(model, tmp_path / "saved")
    meta = json.loads((out / "assets.extra" / "metadata.json").read_text())
    assert meta == {"architecture": dataclasses.asdict(arch), "build_overrides": {},
                    "category_ids": [7, 8, 9], "class_names": ["cat", "N/A", "dog"]}
    assert "N/A" not in (out / "assets.extra" / "label_map.pbtxt").read_text()


def test_a_malformed_detector_metadata_is_one_line_naming_it():
    model = tiny_detector("c4", num_classes=3)
    config = {**model.get_config(), "metadata": {"colours": ["red"]}}
    with pytest.raises(ValueError, match=r"metadata must be a dict with keys among "
                                         r"\['architecture', .*\], got \['colours'\]"):
        type(model).from_config(config)
    # Deserializing consumes the parts' configs, so each try starts from a fresh one.
    config = {**model.get_config(), "metadata": {"architecture": {"library": "torchvision",
                                                                  "depth": 50}}}
    with pytest.raises(ValueError, match=r"metadata 'architecture' is not a valid "
                                         r"Architecture: .*'depth'"):
        type(model).from_config(config)
