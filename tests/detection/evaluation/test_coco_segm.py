"""COCO mask AP (iou_type="segm"): hand-built cases, COCO's segmentation formats, one-line
refusals of bad masks, and parity with pycocotools run directly on coco-mini's official JSON."""

import contextlib
import io
import json

import numpy as np
import pytest

from detection.evaluation import coco_ap, to_coco_results

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402

FAR = [50.0, 50.0, 60.0, 60.0]  # a box nowhere near the masks: segm AP must not look at boxes


def square(size=20, rows=slice(0, 10), cols=slice(0, 10)):
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, rows, cols] = 1
    return mask


def truth(masks, labels=(3,), **extra):
    return {"boxes": np.tile([0.0, 0.0, 10.0, 10.0], (len(labels), 1)),
            "labels": np.array(labels), "masks": masks, **extra}


def pred(masks, scores=(0.9,), classes=(3,), boxes=None):
    boxes = np.tile(FAR, (len(classes), 1)) if boxes is None else np.asarray(boxes, np.float32)
    return {"boxes": boxes, "scores": np.array(scores), "classes": np.array(classes),
            "masks": masks}


def test_mask_iou_decides_and_mask_area_sizes_the_object():
    # 62 of the square's 100 pixels: IoU 0.62 matches at .50, .55, .60 -> AP 3/10, AP75 0.
    # The box is far away, so box AP is 0; the mask's area (100 px) makes it "small".
    guess = square(cols=slice(0, 6))
    guess[0, :2, 6] = 1
    result = coco_ap([pred(guess)], [truth(square())], iou_type="segm")
    assert result["AP"] == pytest.approx(0.3) and result["APs"] == pytest.approx(0.3)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == 0.0
    assert np.isnan(result["APm"]) and result["area_source"] == "mask"
    assert result["per_class"] == {3: pytest.approx(0.3)}
    assert coco_ap([pred(guess)], [truth(square())])["AP"] == 0.0  # bbox, the default
    # A given area (COCO's polygon area) overrides the mask's: 2000 px is a medium object.
    medium = coco_ap([pred(guess)], [truth(square(), area=[2000.0])], iou_type="segm")
    assert np.isnan(medium["APs"]) and medium["APm"] == pytest.approx(0.3)
    assert medium["area_source"] == "annotation"


def test_crowd_masks_absorb_detections_and_padding_is_dropped():
    crowd = square(64, slice(0, 32), slice(0, 64))  # the top half is a crowd region
    person = square(64, slice(40, 60), slice(10, 30))
    inside = square(64, slice(4, 12), slice(4, 12))  # 64 px inside the crowd
    masks = np.concatenate([crowd, person, np.zeros_like(person)])  # last: padding
    gts = {"boxes": np.zeros((3, 4)), "labels": np.array([0, 0, -1]), "masks": masks}
    stray = square(64, slice(40, 60), slice(40, 60))  # would be a top-scored false positive
    preds = [pred(np.concatenate([inside, person, stray]), (0.95, 0.9, 0.99), (0, 0, 0))]
    preds[0]["num_detections"] = np.array(2)  # the third detection is padding: never scored
    perfect = coco_ap(preds, [{**gts, "iscrowd": [1, 0, 0]}], iou_type="segm")
    assert perfect["AP"] == pytest.approx(1.0)
    del preds[0]["num_detections"]
    assert coco_ap(preds, [{**gts, "iscrowd": [1, 0, 0]}], iou_type="segm")["AP"] < 0.6
    # The same region as an ordinary object: the top-scored mask is a false positive.
    assert coco_ap(preds, [{**gts, "iscrowd": [0, 0, 0]}], iou_type="segm")["AP"] < 0.6


def test_coco_segmentation_formats_equal_the_masks_they_describe():
    polygon = [[2.0, 2.0, 15.0, 3.0, 14.0, 16.0, 3.0, 12.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(polygon, 20, 24))
    mask = mask_utils.decode(rle)[None]
    flat = mask[0].flatten("F").astype(int)  # COCO's runs: column-major, zeros first
    runs = np.diff([0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]).tolist()
    uncompressed = {"size": [20, 24], "counts": ([0] if flat[0] else []) + runs}
    compressed = {"size": [20, 24], "counts": rle["counts"].decode()}
    guess = np.zeros((1, 20, 24), np.uint8)
    guess[0, 2:14, 3:15] = 1
    preds = [pred(guess)]
    expected = coco_ap(preds, [truth(mask)], iou_type="segm")
    assert 0.0 < expected["AP"] < 1.0
    for segmentation in (polygon, uncompressed, compressed):
        given = {"boxes": [[0, 0, 10, 10]], "labels": [3], "segmentation": [segmentation],
                 "height": 20, "width": 24}
        np.testing.assert_equal(coco_ap(preds, [given], iou_type="segm"), expected)  # NaN == NaN


def _seg_truth(segmentation, **extra):
    return {"boxes": [[0, 0, 10, 10]], "labels": [3], "segmentation": [segmentation],
            "height": 20, "width": 20, **extra}


GOOD = square()
BAD_INPUT = [
    ([{k: v for k, v in pred(GOOD).items() if k != "masks"}], [truth(GOOD)],
     "prediction 0 has no 'masks': iou_type='segm' needs [N, H, W] binary"),
    ([pred(square(10))], [truth(GOOD)],
     "prediction 0 'masks' are 10x10 but the image is 20x20; masks must be image-sized"),
    ([pred(np.concatenate([GOOD, GOOD]))], [truth(GOOD)],
     "prediction 0 'masks' has shape [2, 20, 20]; expected [1, H, W]"),
    ([pred(GOOD * 0.7)], [truth(GOOD)],
     "prediction 0 'masks' must be binary (0/1) but holds 0.7"),
    ([pred(GOOD)], [truth(GOOD * 255)], "ground truth 0 'masks' must be binary (0/1) but holds 255"),
    ([pred(GOOD)], [truth(GOOD[0])], "ground truth 0 'masks' has shape [20, 20]; expected [1, H, W]"),
    ([pred(GOOD)], [{"boxes": [[0, 0, 1, 1]], "labels": [3]}],
     "ground truth 0 has neither 'masks' [M, H, W] nor 'segmentation'"),
    ([pred(GOOD)], [{k: v for k, v in _seg_truth([[0, 0, 5, 5, 0, 5]]).items() if k != "width"}],
     "ground truth 0 has 'segmentation' but no 'height' and 'width'"),
    ([pred(GOOD)], [_seg_truth([[0, 0, 5, 5]])],
     "ground truth 0 'segmentation'[0]: polygons must be a non-empty list"),
    ([pred(GOOD)], [_seg_truth({"size": [20, 30], "counts": [400]})],
     "ground truth 0 'segmentation'[0]: RLE size [20, 30] but the image is 20x20"),
    ([pred(GOOD)], [_seg_truth({"size": [20, 20], "counts": [10, 20]})],
     "ground truth 0 'segmentation'[0]: uncompressed RLE counts sum to 30, not height*width = 400"),
    ([pred(GOOD)], [_seg_truth({"counts": [400]})],
     "ground truth 0 'segmentation'[0]: expected polygons (a list of [x1, y1, ...] lists) or an "
     "RLE dict with 'counts' and 'size', got dict"),
]


@pytest.mark.parametrize("preds, truths, message", BAD_INPUT)
def test_bad_masks_are_refused_in_one_line_naming_image_and_key(preds, truths, message):
    with pytest.raises(ValueError) as error:
        coco_ap(preds, truths, iou_type="segm")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_unknown_iou_type_is_refused():
    with pytest.raises(ValueError, match="iou_type must be 'bbox' or 'segm', got 'mask'"):
        coco_ap([pred(GOOD)], [truth(GOOD)], iou_type="mask")
    with pytest.raises(ValueError, match="iou_type must be 'bbox' or 'segm', got 'mask'"):
        to_coco_results([pred(GOOD)], ["1"], {3: 4}, iou_type="mask")


def test_segm_results_are_mask_only_rles_of_the_kept_detections():
    masks = np.concatenate([square(), square(rows=slice(5, 8)), square()])
    detections = {**pred(masks, (0.5, 0.25, 0.9), (3, -1, 3)), "num_detections": np.array(2)}
    results = to_coco_results([detections], ["42"], {3: 7}, iou_type="segm")
    assert results == [{"image_id": 42, "category_id": 7, "score": 0.5, "segmentation": {
        "size": [20, 20], "counts": mask_utils.encode(np.asfortranarray(GOOD[0]))["counts"].decode()}}]
    assert mask_utils.area(results[0]["segmentation"]) == 100
    with pytest.raises(ValueError, match=r"^prediction 0 'masks' must be binary \(0/1\) but "
                       r"holds 2;"):
        to_coco_results([pred(GOOD * 2)], ["1"], {3: 4}, iou_type="segm")


def _perturbed_results(coco, rng):
    """GT-derived mask results: most objects kept (some shifted or eroded), some missed, plus
    random false-positive rectangles; scores random so no ties decide the order."""
    results = []
    categories = sorted(coco.getCatIds())
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        for ann in coco.imgToAnns[image_id]:
            if rng.random() < 0.15:
                continue
            mask = coco.annToMask(ann)
            kind = rng.integers(0, 3)
            if kind == 1:
                mask = np.roll(mask, tuple(rng.integers(-6, 7, 2)), axis=(0, 1))
            elif kind == 2:
                mask = mask & np.roll(mask, 3, 0) & np.roll(mask, 3, 1)
            results.append((image_id, ann["category_id"], mask))
        for _ in range(rng.integers(0, 4)):
            mask = np.zeros((h, w), np.uint8)
            y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
            mask[y:y + rng.integers(5, 150), x:x + rng.integers(5, 150)] = 1
            results.append((image_id, int(rng.choice(categories)), mask))
    scores = rng.random(len(results))
    return [(i, c, m, float(s)) for (i, c, m), s in zip(results, scores, strict=True)]


def test_equals_pycocotools_on_the_official_json(shared_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(shared_data / "coco-mini/annotations/instances_val2017.json"))
    label = {c: k for k, c in enumerate(sorted(coco.getCatIds()))}
    results = _perturbed_results(coco, np.random.default_rng(0))
    # detectron2's way: results carry only the mask, so loadRes sizes them by mask area
    records = []
    for image_id, category, mask, score in results:
        rle = mask_utils.encode(np.asfortranarray(mask))
        records.append({"image_id": image_id, "category_id": category, "score": score,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    path = tmp_path / "segm.json"
    path.write_text(json.dumps(records))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(str(path)), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = evaluator.stats
    assert 0.2 < expected[0] < 0.9  # a non-trivial operating point

    image_ids = sorted(coco.getImgIds())
    truths, preds = [], []
    for image_id in image_ids:
        anns, info = coco.imgToAnns[image_id], coco.imgs[image_id]
        truths.append({"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in
                                          (a["bbox"] for a in anns)]).reshape(-1, 4),
                       "labels": np.array([label[a["category_id"]] for a in anns]),
                       "iscrowd": np.array([a["iscrowd"] for a in anns]),
                       "area": np.array([a["area"] for a in anns]),
                       "segmentation": [a["segmentation"] for a in anns],
                       "height": info["height"], "width": info["width"]})
        mine = [r for r in results if r[0] == image_id]
        preds.append({"boxes": np.zeros((len(mine), 4)), "scores": np.array([r[3] for r in mine]),
                      "classes": np.array([label[r[1]] for r in mine]),
                      "masks": np.array([r[2] for r in mine], np.uint8).reshape(
                          -1, info["height"], info["width"])})
    from detection.evaluation.coco_metric import STAT_NAMES

    ours = coco_ap(preds, truths, iou_type="segm")
    category = {k: c for c, k in label.items()}
    assert to_coco_results(preds, image_ids, category, iou_type="segm") == records
    for name, value in zip(STAT_NAMES, expected, strict=True):
        assert ours[name] == pytest.approx(value, abs=1e-9), name
    # The same objects given as decoded masks (crowd RLE included) score the same.
    for t, image_id in zip(truths, image_ids, strict=True):
        anns = coco.imgToAnns[image_id]
        t["masks"] = np.array([coco.annToMask(a) for a in anns], np.uint8).reshape(
            -1, t.pop("height"), t.pop("width"))
        del t["segmentation"]
    from_masks = coco_ap(preds, truths, iou_type="segm")
    for name, value in zip(STAT_NAMES, expected, strict=True):
        assert from_masks[name] == pytest.approx(value, abs=1e-9), name


def _masked_dataset():
    """Two images (20x24 and 30x16) with one and two objects; pixel [0, 0, 0] is the index."""
    import tensorflow as tf

    elements = []
    for index, (h, w, rects) in enumerate([(20, 24, [(2, 12, 3, 20)]),
                                          (30, 16, [(0, 10, 0, 8), (12, 30, 4, 16)])]):
        image = np.zeros((h, w, 3), np.uint8)
        image[0, 0, 0] = index
        masks = np.zeros((len(rects), h, w), np.uint8)
        for k, (y0, y1, x0, x1) in enumerate(rects):
            masks[k, y0:y1, x0:x1] = 1
        boxes = np.array([[x0, y0, x1, y1] for y0, y1, x0, x1 in rects], np.float32)
        elements.append({"images": image, "masks": masks, "bounding_boxes": {
            "boxes": boxes, "labels": np.arange(len(rects), dtype=np.int32)}})
    dataset = tf.data.Dataset.from_tensors(elements[0])
    return dataset.concatenate(tf.data.Dataset.from_tensors(elements[1])), elements


class MaskOracle:
    """Predicts each image's true objects with their masks as probabilities on its input canvas
    (image-sized, padded like the input), or box-relative 28x28 ones."""

    def __init__(self, elements, box_relative=False):
        self.elements, self.box_relative = elements, box_relative

    def predict(self, images):
        b, h, w = images.shape[:3]
        out = {"boxes": np.zeros((b, 3, 4)), "scores": np.zeros((b, 3)),
               "classes": np.full((b, 3), -1), "num_detections": np.zeros(b, int),
               "masks": np.zeros((b, 3, 28, 28) if self.box_relative else (b, 3, h, w))}
        for i, image in enumerate(images):
            e = self.elements[int(image[0, 0, 0])]
            m, (mh, mw) = len(e["masks"]), e["masks"].shape[1:]
            out["boxes"][i, :m] = e["bounding_boxes"]["boxes"]
            out["scores"][i, :m], out["classes"][i, :m] = 0.9, e["bounding_boxes"]["labels"]
            out["num_detections"][i] = m
            if self.box_relative:  # the whole box: the rectangles' own masks, once pasted
                out["masks"][i, :m] = 0.9
            else:
                out["masks"][i, :m, :mh, :mw] = e["masks"] * 0.8 + 0.1  # probabilities
        return out


def test_dataset_helpers_carry_masks_into_segm_ap():
    from detection.evaluation import evaluate_dataset, ground_truth_of, predict_dataset

    dataset, elements = _masked_dataset()
    truth = ground_truth_of(next(iter(dataset)))
    np.testing.assert_array_equal(truth["masks"], elements[0]["masks"])
    oracle = MaskOracle(elements)
    result = evaluate_dataset(oracle, dataset, metric="segm", verbose=False)
    assert result["AP"] == pytest.approx(1.0) and result["area_source"] == "mask"
    # One padded canvas for both sizes: masks are cut back to each image, thresholded.
    preds, truths, _ = predict_dataset(oracle, dataset, batch_size=2, pad_to=(32, 32),
                                       progress=False)
    for p, e in zip(preds, elements, strict=True):
        assert p["masks"].dtype == np.uint8
        np.testing.assert_array_equal(p["masks"], e["masks"])
    assert coco_ap(preds, truths, iou_type="segm")["AP"] == pytest.approx(1.0)
    # Box-relative masks (MaskRCNN.predict's) are pasted at their boxes before scoring.
    pasted = evaluate_dataset(MaskOracle(elements, box_relative=True), dataset, metric="segm",
                              verbose=False)
    assert pasted["AP"] == pytest.approx(0.8), pasted["AP"]  # the pasted edge misses IoU 0.9, 0.95
    # the same detections' box AP beside it: the boxes are the truth's, so 1.0 where masks 0.8
    assert pasted["bbox"]["AP"] == pytest.approx(1.0) and set(pasted["bbox"]) == {
        "AP", "AP50", "AP75", "APs", "APm", "APl"}
    with pytest.raises(ValueError, match="metric must be 'voc', 'coco' or 'segm', got 'mask'"):
        evaluate_dataset(oracle, dataset, metric="mask", verbose=False)


def test_callback_logs_mask_ap_under_its_own_names():
    import keras

    from detection.evaluation import EvaluationCallback

    dataset, elements = _masked_dataset()
    callback = EvaluationCallback(dataset, metric="segm", predictor=MaskOracle(elements),
                                  verbose=0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0,
                        callbacks=[callback])
    assert history.history["val_segm_AP"] == [pytest.approx(1.0)]
    assert history.history["val_AP"] == [pytest.approx(1.0)]  # the same detections' box AP
    with pytest.raises(ValueError, match="metric must be 'voc', 'coco' or 'segm', got 'mask'"):
        EvaluationCallback(dataset, metric="mask")
