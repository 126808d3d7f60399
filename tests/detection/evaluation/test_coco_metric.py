"""COCO AP: hand-built cases and parity with pycocotools run directly on the official JSON."""

import contextlib
import io
import json

import numpy as np
import pytest

from detection.evaluation import coco_ap, to_coco_results

pytest.importorskip("pycocotools")

A = [0.0, 0.0, 10.0, 10.0]


def gt(boxes, labels, **extra):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels),
            **{k: np.array(v) for k, v in extra.items()}}


def pred(boxes, scores, classes):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores),
            "classes": np.array(classes)}


@pytest.mark.jax
def test_iou_sweep_and_given_area_decide_the_figures():
    # IoU 0.62 (a 10x6.2 box inside A) matches at thresholds .50, .55, .60 of the ten
    # -> AP = 3/10, AP50 = 1, AP75 = 0. The object's given area (100 = 10x10, "small")
    # puts it in APs; APm and APl have no objects -> NaN (pycocotools' -1).
    result = coco_ap([pred([[0, 0, 10, 6.2]], [0.9], [3])], [gt([A], [3], area=[100.0])])
    assert result["AP"] == pytest.approx(0.3) and result["APs"] == pytest.approx(0.3)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == 0.0
    assert np.isnan(result["APm"]) and np.isnan(result["APl"])
    assert result["per_class"] == {3: pytest.approx(0.3)}
    # The same box with COCO's segment area 2000 (> 32^2) is a medium object, whatever its box.
    medium = coco_ap([pred([[0, 0, 10, 6.2]], [0.9], [3])], [gt([A], [3], area=[2000.0])])
    assert np.isnan(medium["APs"]) and medium["APm"] == pytest.approx(0.3)


@pytest.mark.jax
def test_crowd_regions_absorb_detections():
    crowd = [100.0, 100.0, 200.0, 200.0]
    inside = [110.0, 110.0, 130.0, 130.0]  # 4% of the crowd box: matched as crowd, not a FP
    preds = [pred([inside, A], [0.95, 0.9], [0, 0])]
    assert coco_ap(preds, [gt([crowd, A], [0, 0], iscrowd=[1, 0])])["AP"] == pytest.approx(1.0)
    # The same region as an ordinary object: the high-scored box is a false positive.
    assert coco_ap(preds, [gt([crowd, A], [0, 0], iscrowd=[0, 0])])["AP"] < 0.5


@pytest.mark.jax
def test_no_detections_scores_zero_and_empty_truth_is_refused():
    assert coco_ap([pred([], [], [])], [gt([A], [0])])["AP"] == 0.0
    with pytest.raises(ValueError, match="no objects"):
        coco_ap([pred([A], [0.5], [0])], [gt([], [])])


def _coco_val(shared_data):
    import detection.data

    ds = detection.data.coco(shared_data / "coco-mini", "val2017", verbose=False)
    return ds, [e for e in ds.as_numpy_iterator()]


def test_ground_truth_as_predictions_is_perfect(shared_data):
    _, elements = _coco_val(shared_data)
    truths = [{"boxes": e["bounding_boxes"]["boxes"], "labels": e["bounding_boxes"]["labels"],
               "iscrowd": e["iscrowd"], "area": e["area"]} for e in elements]
    preds = [{"boxes": t["boxes"], "scores": np.ones(len(t["labels"])), "classes": t["labels"]}
             for t in truths]
    result = coco_ap(preds, truths)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert result[name] == pytest.approx(1.0), name


def test_equals_pycocotools_on_the_official_json(shared_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds, elements = _coco_val(shared_data)
    rng = np.random.default_rng(0)
    preds, results = [], []
    for e in elements:
        boxes = e["bounding_boxes"]["boxes"].astype(np.float64)
        labels = e["bounding_boxes"]["labels"]
        keep = rng.random(len(boxes)) > 0.15  # miss some objects
        wh = boxes[:, 2:] - boxes[:, :2]
        noisy = boxes + rng.normal(0, 0.08, boxes.shape) * np.concatenate([wh, wh], 1)
        noisy, labels = noisy[keep], labels[keep]
        # false positives: random boxes with random classes
        k = rng.integers(0, 4)
        xy = rng.uniform(0, 300, (k, 2))
        noisy = np.concatenate([noisy, np.concatenate([xy, xy + rng.uniform(5, 150, (k, 2))], 1)])
        labels = np.concatenate([labels, rng.integers(0, 80, k)])
        scores = rng.random(len(labels))
        preds.append({"boxes": noisy.astype(np.float32), "scores": scores, "classes": labels})
        for box, c, s in zip(noisy.astype(np.float32).astype(np.float64), labels, scores,
                             strict=True):
            results.append({"image_id": int(e["image_id"]), "score": float(s),
                            "category_id": ds.label_to_category[int(c)],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    truths = [{"boxes": e["bounding_boxes"]["boxes"], "labels": e["bounding_boxes"]["labels"],
               "iscrowd": e["iscrowd"], "area": e["area"]} for e in elements]
    ours = coco_ap(preds, truths)
    exported = to_coco_results(preds, [e["image_id"].decode() for e in elements],
                               ds.label_to_category)
    assert [(r["image_id"], r["category_id"], r["score"]) for r in exported] == [
        (r["image_id"], r["category_id"], r["score"]) for r in results]
    np.testing.assert_allclose([r["bbox"] for r in exported], [r["bbox"] for r in results],
                               atol=1e-3)

    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(shared_data / "coco-mini/annotations/instances_val2017.json"))
        evaluator = COCOeval(reference, reference.loadRes(str(path)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    expected = dict(zip(names, evaluator.stats[:6], strict=True))
    assert 0.2 < expected["AP"] < 0.9  # a non-trivial operating point
    for name in names:
        assert ours[name] == pytest.approx(expected[name], abs=1e-9), name
