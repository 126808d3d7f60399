"""The first run on one's own photos (issue 33): `train --data` trains offline with an empty
weights cache (from scratch, said in one line), `--backbone-weights imagenet|none|PATH` on
`train` and `init-config`, and the evaluation bar shows its total."""

import shutil

import keras
import numpy as np
import pytest
import yaml

from detection import cli
from detection.backbone_weights import choose

pytestmark = pytest.mark.tf_only

TINY = {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 8}
RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty weights cache, and any download attempt fails as it does offline."""
    cache = tmp_path / "weights-cache"
    cache.mkdir()
    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(cache))

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    return cache


@pytest.fixture
def voc_folder(shared_data, tmp_path):
    """Five raccoon photos with their labelImg XMLs in one folder (4 train / 1 val)."""
    src = shared_data / "raccoon-voc" / "VOC2007"
    folder = tmp_path / "raccoons"
    folder.mkdir()
    for n in range(1, 6):
        shutil.copyfile(src / "Annotations" / f"raccoon-{n}.xml", folder / f"raccoon-{n}.xml")
        shutil.copyfile(src / "JPEGImages" / f"raccoon-{n}.jpg", folder / f"raccoon-{n}.jpg")
    return folder


def _errors(err: str) -> list[str]:
    """stderr's lines less the progress bars (tqdm redraws with carriage returns)."""
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]


def test_offline_train_from_data_trains_from_scratch(offline, voc_folder, tmp_path, capsys,
                                                     monkeypatch):
    from detection.data.discover import STARTING_MODEL

    # the starting config at a test's size (the real one is timed by benchmarks.own_data)
    for key, value in (("image_size", [64, 96]), ("backbone_kwargs", TINY), ("fpn_channels", 16),
                       ("rpn_pre_nms_topk", [100, 50]), ("rpn_post_nms_topk", [50, 20]),
                       ("roi_batch_size", 16)):
        monkeypatch.setitem(STARTING_MODEL, key, value)
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(voc_folder), "--classes", "auto", "--steps", "1",
                     "--eval-images", "1", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    line = next(ln for ln in captured.out.splitlines() if "no ImageNet weights" in ln)
    assert str(offline / "downloads" / RESNET18_FILE) in line
    assert "training from scratch, which needs many more steps" in line
    assert "--backbone-weights" in line
    assert "mAP@0.5 = " in captured.out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["backbone_weights"] is None and saved["model"]["head"] == "fpn"
    assert "norm" not in saved["model"]  # from scratch: batch norm, nothing frozen
    assert "evaluating:" in captured.err and "/1 " in captured.err  # the bar has its total


def test_backbone_weights_values(offline, tmp_path):
    weights, line = choose(None, "resnet18")
    assert weights is None and "no ImageNet weights in the cache" in line
    assert choose("none", "resnet18")[0] is None
    assert choose("imagenet", "resnet18")[0] == "imagenet"
    with pytest.raises(ValueError, match="resnet18x has no ImageNet checkpoint"):
        choose("imagenet", "resnet18x")
    (offline / "downloads").mkdir()
    (offline / "downloads" / RESNET18_FILE).write_bytes(b"cached")  # the default takes it
    weights, line = choose(None, "resnet18")
    assert weights == "imagenet" and "from the cache" in line
    assert choose("none", "resnet18")[0] is None  # an explicit none wins over the cache
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    assert choose(str(path), "resnet18")[0] == str(path.resolve())
    with pytest.raises(ValueError, match=r"--backbone-weights .*nope\.pth: no such file"):
        choose(str(tmp_path / "nope.pth"), "resnet18")


def test_backbone_weights_path_loads_a_torchvision_file(tmp_path):
    from keras_resnet_suite import backbones, weights
    from keras_resnet_suite.convert.formats import write_safetensors

    source = backbones.build("resnet18", **TINY)
    path = tmp_path / "tiny.safetensors"
    write_safetensors(weights.to_torchvision(source), path)
    value, line = choose(str(path), "resnet18")
    assert line == f"backbone: weights from {path}"
    from detection.modeling import FasterRCNN

    model = FasterRCNN(num_classes=1, backbone="resnet18", backbone_kwargs=TINY, head="c4",
                       image_size=(64, 64), anchor_sizes=[16, 32], backbone_weights=value)
    loaded = {v.path: v for v in model.weights}
    for v in source.weights[:4]:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded[v.path]),
                                      keras.ops.convert_to_numpy(v))


def test_backbone_weights_flag_in_the_clis(offline, voc_folder, tmp_path, capsys):
    out = tmp_path / "start.yaml"
    assert cli.main(["init-config", str(voc_folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no ImageNet weights in the cache" in printed
    written = yaml.safe_load(out.read_text())
    assert written["model"]["backbone_weights"] is None and written["model"]["head"] == "fpn"
    assert cli.main(["init-config", str(voc_folder), "--out", str(out), "--force",
                     "--backbone-weights", "imagenet"]) == 0
    capsys.readouterr()
    written = yaml.safe_load(out.read_text())
    assert written["model"]["backbone_weights"] == "imagenet"
    assert written["model"]["norm"] == "frozen" and written["model"]["freeze_at"] == 2

    config = tmp_path / "mine.yaml"  # with --config, the flag replaces its backbone_weights
    config.write_text(yaml.safe_dump({"model": {"backbone": "resnet18", "head": "c4",
                                                "image_size": [64, 64]},
                                      "train": {"steps": 1, "batch_size": 1,
                                                "learning_rate": 0.01}}))
    for argv in (["init-config", str(voc_folder), "--out", str(tmp_path / "x.yaml")],
                 ["train", "--data", str(voc_folder), "--out", str(tmp_path / "run")],
                 ["train", "--config", str(config), "--data", str(voc_folder), "--out",
                  str(tmp_path / "run")]):
        assert cli.main([*argv, "--backbone-weights", str(tmp_path / "nope.pth")]) == 2
        err = _errors(capsys.readouterr().err)
        assert len(err) == 1 and "nope.pth: no such file" in err[0]

    # asked for by name, offline: one line naming the file to fetch, and no run folder
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(voc_folder), "--out", str(run),
                     "--backbone-weights", "imagenet"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and str(offline / "downloads" / RESNET18_FILE) in err[0]
    assert "could not download" in err[0] and not run.exists()


def test_evaluation_bar_has_a_total_and_eta(capsys):
    import tensorflow as tf

    from detection.evaluation.dataset import predict_dataset

    element = {"images": np.zeros((8, 8, 3), "uint8"),
               "bounding_boxes": {"boxes": np.zeros((1, 4), "float32"),
                                  "labels": np.zeros((1,), "int32")}}
    dataset = tf.data.Dataset.from_tensors(element).repeat(3)  # cardinality known: 3

    def predict(images):
        n = len(images)
        return {"boxes": np.zeros((n, 1, 4)), "scores": np.zeros((n, 1)),
                "classes": np.zeros((n, 1)), "num_detections": np.zeros((n,))}

    predict_dataset(predict, dataset)
    err = capsys.readouterr().err
    assert "evaluating:   0%|" in err and "0/3 [" in err  # a total, so a percentage and ETA
    predict_dataset(predict, dataset, max_images=2)
    assert "0/2 [" in capsys.readouterr().err
