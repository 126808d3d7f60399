"""Pretrained-detector checkpoint plumbing: the registry (names, URLs, hashes, did-you-mean),
download once + verify + offline message, resolving names and paths, the restricted
detectron2 pickle reader, torchvision `.pth` reading without PyTorch and key normalisation,
and the COCO class tables against real annotations. No network, no PyTorch needed."""

import collections
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from detection import checkpoints
from detection.checkpoints import coco_classes, registry
from tests.weights.test_torch_file import _global_call, tensor, torch_save

# --- the registry ---------------------------------------------------------------------------

EXPECTED = {  # name: (box AP, backbone, head, preset)
    "torchvision/fasterrcnn_resnet50_fpn": (37.0, "resnet50", "fpn", "torchvision"),
    "torchvision/fasterrcnn_resnet50_fpn_v2": (46.7, "resnet50", "fpn", "torchvision_v2"),
    "detectron2/faster_rcnn_R_50_C4_1x": (35.7, "resnet50", "c4", "detectron2"),
    "detectron2/faster_rcnn_R_50_C4_3x": (38.4, "resnet50", "c4", "detectron2"),
    "detectron2/faster_rcnn_R_101_C4_3x": (41.1, "resnet101", "c4", "detectron2"),
    "detectron2/faster_rcnn_R_50_FPN_3x": (40.2, "resnet50", "fpn", "detectron2"),
    "detectron2/faster_rcnn_R_101_FPN_3x": (42.0, "resnet101", "fpn", "detectron2"),
    "torchvision/maskrcnn_resnet50_fpn": (37.9, "resnet50", "fpn", "torchvision"),
    "torchvision/maskrcnn_resnet50_fpn_v2": (47.4, "resnet50", "fpn", "torchvision_v2"),
    "detectron2/mask_rcnn_R_50_C4_1x": (36.8, "resnet50", "c4", "detectron2"),
    "detectron2/mask_rcnn_R_50_C4_3x": (39.8, "resnet50", "c4", "detectron2"),
    "detectron2/mask_rcnn_R_101_C4_3x": (42.6, "resnet101", "c4", "detectron2"),
    "detectron2/mask_rcnn_R_50_FPN_1x": (38.6, "resnet50", "fpn", "detectron2"),
    "detectron2/mask_rcnn_R_50_FPN_3x": (41.0, "resnet50", "fpn", "detectron2"),
    "detectron2/mask_rcnn_R_101_FPN_3x": (42.9, "resnet101", "fpn", "detectron2"),
}
# Mask AP of the Mask R-CNN checkpoints: torchvision's `mask_map`, detectron2's MODEL_ZOO.md.
MASK_AP = {"torchvision/maskrcnn_resnet50_fpn": 34.6, "torchvision/maskrcnn_resnet50_fpn_v2": 41.8,
           "detectron2/mask_rcnn_R_50_C4_1x": 32.2, "detectron2/mask_rcnn_R_50_C4_3x": 34.4,
           "detectron2/mask_rcnn_R_101_C4_3x": 36.7, "detectron2/mask_rcnn_R_50_FPN_1x": 35.2,
           "detectron2/mask_rcnn_R_50_FPN_3x": 37.2, "detectron2/mask_rcnn_R_101_FPN_3x": 38.6}


def test_registry_names_urls_hashes_and_metadata():
    assert checkpoints.names() == sorted(EXPECTED)
    for name, (ap, backbone, head, preset) in EXPECTED.items():
        c = checkpoints.get(name)
        assert (c.name, c.box_ap, c.backbone, c.head, c.preset) == (name, ap, backbone, head,
                                                                     preset)
        assert c.library == name.split("/")[0] and c.url.startswith("https://")
        assert (c.mask_ap, c.masks) == (MASK_AP.get(name), name in MASK_AP)
        if c.library == "torchvision":  # the file name carries the sha256 prefix
            assert re.fullmatch(r"[0-9a-f]{8}", c.file_hash) and c.hash_algorithm == "sha256"
            assert c.url == f"https://download.pytorch.org/models/{c.filename}"
            assert c.filename.endswith(f"_coco-{c.file_hash}.pth")
            assert c.variant == ("v2" if name.endswith("_v2") else "v1")
            assert (c.class_layout, c.num_classes) == ("coco91", 90)
        else:  # MODEL_ZOO.md: the file name contains its md5 prefix
            config = name.split("/")[1]
            assert re.fullmatch(r"[0-9a-f]{6}", c.file_hash) and c.hash_algorithm == "md5"
            folder = "COCO-InstanceSegmentation" if c.masks else "COCO-Detection"
            assert c.source == f"{folder}/{config}.yaml"
            assert re.fullmatch(rf"https://dl\.fbaipublicfiles\.com/detectron2/{folder}/"
                                rf"{config}/\d{{9}}/model_final_{c.file_hash}\.pkl", c.url)
            assert c.filename.startswith(f"detectron2-{config}-") and c.variant is None
            assert (c.class_layout, c.num_classes) == ("coco80", 80)
    assert len({c.filename for c in checkpoints.CHECKPOINTS.values()}) == len(EXPECTED)


def test_unknown_name_lists_the_known_ones_with_a_did_you_mean():
    with pytest.raises(ValueError, match=r"Did you mean 'detectron2/faster_rcnn_R_50_FPN_3x'\?"
                                         r" Known: .*torchvision/fasterrcnn_resnet50_fpn_v2"):
        checkpoints.get("detectron2/faster_rcnn_R_50_FPN_1x")
    with pytest.raises(ValueError, match="Did you mean 'torchvision/fasterrcnn_resnet50_fpn'"):
        checkpoints.get("fasterrcnn_resnet50_fpn")  # without the library
    with pytest.raises(ValueError, match="no detector checkpoint named 'yolo'. Known"):
        checkpoints.resolve("yolo")


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A detectron2-style checkpoint "published" at a file:// URL with its true md5 prefix."""
    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(tmp_path / "cache"))
    path = tmp_path / "server" / "faster_rcnn_R_50_C4_1x" / "123456789" / "model_final.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"model": {"proposal_generator.w": np.ones(2)}}))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()[:6]
    final = path.with_name(f"model_final_{md5}.pkl")
    path.rename(final)
    ckpt = registry.DetectorCheckpoint(
        "detectron2/local", "detectron2", final.as_uri(), md5, "md5", 35.7, "resnet50", "c4",
        None, "detectron2", "coco80")
    monkeypatch.setitem(registry.CHECKPOINTS, ckpt.name, ckpt)
    return ckpt, final


def _cached(ckpt):
    return os.path.join(os.environ["KRS_WEIGHTS_DIR"], "downloads", ckpt.filename)


def test_download_once_verify_and_resolve(served):
    ckpt, final = served
    path = checkpoints.fetch_checkpoint("detectron2/local")
    assert path == _cached(ckpt) and os.path.basename(path).endswith(final.name)
    final.unlink()  # later uses need no server
    assert checkpoints.resolve("detectron2/local") == (ckpt, path)
    assert checkpoints.resolve(ckpt) == (ckpt, path)
    assert checkpoints.resolve(path) == (ckpt, path)  # the published file, given as a path
    assert checkpoints.read_checkpoint(path)[0] == "detectron2"


def test_offline_error_names_the_url_and_where_to_put_the_file(served, monkeypatch):
    ckpt, _ = served

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError, match=f"could not download {re.escape(ckpt.url)} .*place it at "
                                      f"{re.escape(_cached(ckpt))}.*KRS_WEIGHTS_DIR"):
        checkpoints.fetch_checkpoint(ckpt)


def test_hash_mismatch_is_refused(served, monkeypatch):
    ckpt, _ = served
    bad = registry.DetectorCheckpoint(**{**ckpt.__dict__, "file_hash": "000000"})
    with pytest.raises(ValueError, match=f"{re.escape(_cached(ckpt))}: md5 [0-9a-f]{{32}} does "
                                         "not match 000000 published for detectron2/local"):
        checkpoints.fetch_checkpoint(bad)
    assert checkpoints.resolve(_cached(ckpt)) == (ckpt, _cached(ckpt))
    monkeypatch.setitem(registry.CHECKPOINTS, ckpt.name, bad)  # a local copy that is not it
    assert checkpoints.resolve(_cached(ckpt)) == (None, _cached(ckpt))


def test_resolve_local_files_and_missing_paths(tmp_path):
    own = tmp_path / "finetuned.pkl"
    own.write_bytes(pickle.dumps({"model": {"backbone.bottom_up.stem.conv1.weight": np.ones(1)}}))
    assert checkpoints.resolve(own) == (None, str(own))
    for missing in (tmp_path / "nothing.pth", str(tmp_path / "nothing"), "model_final.pkl"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            checkpoints.resolve(missing)


# --- detectron2 pickles ---------------------------------------------------------------------

STATE = {"backbone.bottom_up.stem.conv1.weight": np.arange(24.0).reshape(2, 3, 2, 2),
         "roi_heads.box_predictor.cls_score.bias": np.linspace(0, 1, 81).astype(np.float32),
         "proposal_generator.anchor_generator.cell_anchors.0": np.ones((3, 4), np.float16),
         "roi_heads.counts": np.arange(5, dtype=np.int64)}


def _as_numpy1(blob: bytes) -> bytes:
    """The pickle as numpy 1.x writes it (module `numpy.core`; GLOBAL opcodes only)."""
    assert b"numpy._core" in blob
    return blob.replace(b"numpy._core", b"numpy.core")


@pytest.mark.parametrize("protocol,numpy1", [(2, False), (3, False), (5, False), (2, True),
                                             (4, False), (3, True)])
def test_detectron2_pickle_round_trip(tmp_path, protocol, numpy1):
    data = {"model": collections.OrderedDict(STATE), "__author__": "Detectron2 Model Zoo",
            "matching_heuristics": True}
    blob = pickle.dumps(data, protocol=protocol)
    path = tmp_path / "model_final_abcdef.pkl"
    path.write_bytes(_as_numpy1(blob) if numpy1 else blob)
    state = checkpoints.read_detectron2_pkl(path)
    assert list(state) == list(STATE)
    for key, value in STATE.items():
        expected_dtype = np.float32 if value.dtype.kind == "f" else value.dtype
        assert state[key].dtype == expected_dtype
        np.testing.assert_array_equal(state[key], value.astype(expected_dtype))
    library, read = checkpoints.read_checkpoint(path)
    assert library == "detectron2" and list(read) == list(STATE)


def test_detectron_blobs_drop_momentum(tmp_path):
    path = tmp_path / "detectron.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.ones(3), "conv1_w_momentum":
                                             np.zeros(3), "scalar": np.float64(2.0)}}, protocol=2))
    state = checkpoints.read_detectron2_pkl(path)
    assert sorted(state) == ["conv1_w", "scalar"] and state["scalar"].dtype == np.float32


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    witness = tmp_path / "pwned"
    path = tmp_path / "model_final_evil00.pkl"
    path.write_bytes(_global_call("os", "system", f"touch {witness}"))
    with pytest.raises(checkpoints.UnsafePickleError,
                       match=f"{re.escape(str(path))}: refused: .*global 'os.system'"):
        checkpoints.read_detectron2_pkl(path)
    with pytest.raises(checkpoints.UnsafePickleError, match="'os.system'"):
        checkpoints.read_checkpoint(path)
    assert not witness.exists()


def test_pickles_that_are_no_state_dict_are_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"__author__": "someone", "weights": {}}))
    with pytest.raises(ValueError, match=r"x.pkl: refused: .*'model'.*\['__author__', 'weights'"):
        checkpoints.read_detectron2_pkl(path)
    path.write_bytes(pickle.dumps({"model": {"a": np.array(["text"], dtype=object)}}))
    with pytest.raises(ValueError, match="x.pkl: .*dtype 'O8' is not a plain number type"):
        checkpoints.read_detectron2_pkl(path)
    path.write_bytes(pickle.dumps({"model": {"a": "text", "b": np.zeros(2, "float32")}}))
    with pytest.raises(ValueError, match="non-array entries: .*'a'"):
        checkpoints.read_detectron2_pkl(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="x.pkl: not a readable detectron2 .pkl"):
        checkpoints.read_detectron2_pkl(path)


# --- torchvision files ----------------------------------------------------------------------

OLD_KEYS = {  # torchvision < 0.13 names (the 2019 COCO v1 file) -> torchvision 0.29 names
    "backbone.body.conv1.weight": "backbone.body.conv1.weight",
    "backbone.body.layer1.0.bn1.running_mean": "backbone.body.layer1.0.bn1.running_mean",
    "backbone.fpn.inner_blocks.0.weight": "backbone.fpn.inner_blocks.0.0.weight",
    "backbone.fpn.inner_blocks.3.bias": "backbone.fpn.inner_blocks.3.0.bias",
    "backbone.fpn.layer_blocks.2.weight": "backbone.fpn.layer_blocks.2.0.weight",
    "rpn.head.conv.weight": "rpn.head.conv.0.0.weight",
    "rpn.head.conv.bias": "rpn.head.conv.0.0.bias",
    "rpn.head.cls_logits.weight": "rpn.head.cls_logits.weight",
    "roi_heads.box_head.fc6.weight": "roi_heads.box_head.fc6.weight",
    "roi_heads.box_predictor.bbox_pred.bias": "roi_heads.box_predictor.bbox_pred.bias",
}
V2_KEYS = ["backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.inner_blocks.0.1.weight",
           "backbone.fpn.inner_blocks.0.1.running_var", "rpn.head.conv.0.0.weight",
           "rpn.head.conv.1.0.weight", "roi_heads.box_head.0.0.weight"]


def test_torchvision_keys_are_normalised_to_current_names():
    old = {k: np.full(1, i) for i, k in enumerate(OLD_KEYS)}
    old["module.backbone.fpn.inner_blocks.1.weight"] = np.zeros(1)
    old["backbone.body.bn1.num_batches_tracked"] = np.zeros((), np.int64)
    new = checkpoints.normalize_torchvision_keys(old)
    assert set(new) == set(OLD_KEYS.values()) | {"backbone.fpn.inner_blocks.1.0.weight"}
    for i, (before, after) in enumerate(OLD_KEYS.items()):
        assert new[after][0] == i, before
    current = {k: np.zeros(1) for k in V2_KEYS + ["backbone.fpn.layer_blocks.0.1.num_batches_"
                                                  "tracked"]}
    assert list(checkpoints.normalize_torchvision_keys(current)) == V2_KEYS  # already current
    with pytest.raises(ValueError, match="two entries map to 'rpn.head.conv.0.0.bias'"):
        checkpoints.normalize_torchvision_keys({"rpn.head.conv.bias": 0,
                                                "rpn.head.conv.0.0.bias": 1})


@pytest.mark.parametrize("zip_format", [True, False])
def test_torchvision_pth_is_read_without_torch(tmp_path, monkeypatch, zip_format):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    arrays = {k: np.arange(6, dtype=np.float32).reshape(2, 3) + i
              for i, k in enumerate(OLD_KEYS)}
    path = tmp_path / ("coco.pth" if zip_format else "coco.pkl")  # content decides, not suffix
    torch_save({"model": {k: tensor(v) for k, v in arrays.items()}, "epoch": 25}, path,
               zip_format)
    raw = checkpoints.read_torchvision_pth(path)
    assert set(raw) == set(OLD_KEYS)
    library, state = checkpoints.read_checkpoint(path)
    assert library == "torchvision" and set(state) == set(OLD_KEYS.values())
    for old, new in OLD_KEYS.items():
        np.testing.assert_array_equal(state[new], arrays[old])


def test_a_torch_saved_detectron2_model_is_told_by_its_keys(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "model_final.pth"  # what detectron2's own training writes
    torch_save({"model": {"backbone.bottom_up.stem.conv1.weight": tensor(np.ones((2, 3)))},
                "iteration": 89999}, path, zip_format=True)
    library, state = checkpoints.read_checkpoint(path)
    assert library == "detectron2" and list(state) == ["backbone.bottom_up.stem.conv1.weight"]


def test_library_of_unknown_layout_is_an_error():
    with pytest.raises(ValueError, match="not a torchvision or detectron2 Faster R-CNN"):
        checkpoints.library_of({"conv1.weight": np.zeros(1)})


def test_the_package_and_pkl_reading_load_no_tensorflow(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"model": {"proposal_generator.w": np.ones(1)}}))
    code = ("import sys, detection.checkpoints as c; c.names(); c.class_names('coco80'); "
            f"assert c.read_checkpoint({str(path)!r})[0] == 'detectron2'; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.dirname(os.path.abspath(__file__))))))
    assert result.returncode == 0, result.stderr[-2000:]


# --- COCO classes ---------------------------------------------------------------------------

def test_coco_tables_match_the_annotations(shared_data):
    path = shared_data / "coco-mini" / "annotations" / "instances_val2017.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    categories = sorted(json.loads(path.read_text())["categories"], key=lambda c: c["id"])
    official = [(c["id"], c["name"]) for c in categories]
    assert list(coco_classes.COCO_CATEGORIES) == official
    assert coco_classes.class_names("coco80") == [name for _, name in official]
    assert coco_classes.category_ids("coco80") == [cid for cid, _ in official]
    # torchvision: class k is category id k + 1; the ids COCO never used are "N/A".
    names, ids = coco_classes.class_names("coco91"), coco_classes.category_ids("coco91")
    assert len(names) == len(ids) == 90 and ids == list(range(1, 91))
    by_id = dict(official)
    assert names == [by_id.get(cid, "N/A") for cid in ids]
    assert [cid for cid, name in zip(ids, names, strict=True) if name == "N/A"] == \
        [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_torchvision_label_list_as_torchvision_writes_it():
    labels = checkpoints.TORCHVISION_LABELS
    assert len(labels) == 91 and labels[0] == "__background__" and labels.count("N/A") == 10
    assert labels[1] == "person" and labels[12] == "N/A" and labels[90] == "toothbrush"
    with pytest.raises(ValueError, match="unknown class layout 'coco81'"):
        coco_classes.class_names("coco81")
