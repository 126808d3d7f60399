"""The typed run configuration: every shipped config loads, a misspelt key is refused by name,
and a run folder refuses to resume a different config."""

import pytest
import yaml

from detection.config import CONFIGS, load_config

pytestmark = pytest.mark.jax


def _write(tmp_path, raw):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw():
    return yaml.safe_load((CONFIGS / "raccoon_tiny.yaml").read_text())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.name == path.stem and config.train.steps > 0
    assert config.model["head"] in ("c4", "fpn")


@pytest.mark.parametrize("section, key, message", [
    ("train", "learning_rte", "train.learning_rte (did you mean 'learning_rate'?)"),
    ("model", "anchor_size", "model.anchor_size (did you mean 'anchor_sizes'?)"),
    ("eval", "every_n_epochs", "eval.every_n_epochs"),
    ("augment", "max_size", "data.augment.max_size"),
    ("loader", "splt", "data.train.splt (did you mean 'split'?)"),
])
def test_a_misspelt_key_is_refused_by_name(tmp_path, section, key, message):
    raw = _raw()
    target = {"augment": raw["data"]["augment"], "loader": raw["data"]["train"]}.get(section)
    (raw[section] if target is None else target)[key] = 1
    with pytest.raises(ValueError, match="unknown config key") as err:
        load_config(_write(tmp_path, raw))
    assert message in str(err.value) and "run.yaml" in str(err.value)


def test_missing_and_bad_values_are_named(tmp_path):
    raw = _raw()
    del raw["train"]["steps"]
    with pytest.raises(ValueError, match="missing required key.*train.steps"):
        load_config(_write(tmp_path, raw))
    raw = _raw()
    raw["train"]["optimizer"] = "adam"
    with pytest.raises(ValueError, match="train.optimizer must be one of sgd, adamw"):
        load_config(_write(tmp_path, raw))
    with pytest.raises(FileNotFoundError, match="shipped configs: .*raccoon_tiny"):
        load_config(tmp_path / "nope.yaml")


def test_a_shipped_config_loads_by_name_and_overrides_merge():
    config = load_config("raccoon_tiny", {"train": {"steps": 8}})
    assert config.train.steps == 8 and config.train.learning_rate == 0.002


def test_resume_refuses_a_run_folder_of_another_config(tmp_path):
    from detection.engine.train import _dump, check_run_dir

    config = load_config("raccoon_tiny")
    (tmp_path / "config.yaml").write_text(_dump(config))
    changed = load_config("raccoon_tiny", {"train": {"learning_rate": 0.1}})
    check_run_dir(tmp_path, changed)  # a record beside no weights (a failed start) refuses nothing
    (tmp_path / "final.weights.h5").write_bytes(b"")  # a run that trained
    check_run_dir(tmp_path, load_config("raccoon_tiny", {"train": {"steps": 800}}))  # longer: ok
    with pytest.raises(ValueError, match="holds a different run .*train.learning_rate"):
        check_run_dir(tmp_path, changed)


def _masks_raw(**model):
    """raccoon_tiny's config made Mask R-CNN's on the shapes loaders (what `masks` allows)."""
    raw = _raw()
    raw["model"].update(masks=True, **model)
    raw["data"].update(class_names=["circle", "square", "triangle"], num_classes=3)
    for split in ("train", "eval"):
        raw["data"][split] = {"loader": "shapes", "num_images": 4, "split": split if
                              split == "train" else "test", "image_size": 64}
    raw["eval"] = {"metric": "segm"}
    return raw


def test_model_masks_sets_the_loaders_masks_and_segm_is_accepted(tmp_path):
    config = load_config(_write(tmp_path, _masks_raw(head="fpn", mask_head_dim=16)))
    assert config.masks and config.model["head"] == "fpn"
    assert config.data.train["masks"] is True and config.data.eval["masks"] is True
    assert config.eval.metric == "segm"
    # the dumped run config (a run folder's config.yaml) loads back to the same run
    from detection.engine.train import _dump

    again = tmp_path / "again.yaml"
    again.write_text(_dump(config))
    assert load_config(again).to_dict() == config.to_dict()
    assert not load_config("raccoon_tiny").masks  # default: Faster R-CNN
    # an exported-COCO JSON (the coco loader) carries masks too
    raw = _masks_raw()
    raw["data"]["train"] = {"loader": "coco", "data_dir": "export/_annotations.coco.json"}
    assert load_config(_write(tmp_path, raw)).data.train["masks"] is True


@pytest.mark.parametrize("change, message", [
    (lambda r: r["data"].__setitem__("eval", {"loader": "voc", "data_dir": "x", "split": "val"}),
     "model.masks: true needs instance masks, but data.eval.loader 'voc' has none"),
    (lambda r: r["data"].__setitem__("train", {"loader": "coco_tfds", "split": "train"}),
     "model.masks: true needs instance masks, but data.train.loader 'coco_tfds' has none"),
    (lambda r: r["model"].pop("masks"),
     "eval.metric: segm scores masks, but model.masks is not true"),
    (lambda r: r["data"]["train"].__setitem__("masks", False),
     "data.train.masks is False but model.masks is True"),
    (lambda r: r["model"].__setitem__("masks", "yes"), "model.masks"),
    (lambda r: r["eval"].__setitem__("metric", "mask"), "eval.metric must be one of voc, coco, segm"),
])
def test_bad_mask_combinations_name_the_key(tmp_path, change, message):
    raw = _masks_raw()
    change(raw)
    with pytest.raises(ValueError) as err:
        load_config(_write(tmp_path, raw))
    assert message in str(err.value) and "run.yaml" in str(err.value)
    assert "\n" not in str(err.value)
