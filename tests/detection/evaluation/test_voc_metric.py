"""VOC AP: devkit semantics on hand-built cases, ground truth scores 1.0, dataset helpers."""

import hashlib

import numpy as np
import pytest

from detection.evaluation import coco_ap, format_table, iou_matrix, voc_ap

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 40.0, 40.0]


def gt(boxes, labels, difficult=None):
    out = {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels)}
    if difficult is not None:
        out["difficult"] = np.array(difficult, bool)
    return out


def pred(boxes, scores, classes):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores),
            "classes": np.array(classes)}


def both(predictions, truths):
    return (voc_ap(predictions, truths, use_07_metric=True)["mAP"],
            voc_ap(predictions, truths, use_07_metric=False)["mAP"])


@pytest.mark.jax
def test_iou_matrix_hand_values():
    iou = iou_matrix([A], [A, [5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 5.0], B])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.5, 0.0]])


@pytest.mark.jax
def test_ground_truth_as_predictions_is_perfect():
    truths = [gt([A, B], [0, 1]), gt([B], [2])]
    preds = [pred([A, B], [0.9, 0.8], [0, 1]), pred([B], [0.7], [2])]
    result = voc_ap(preds, truths)
    assert result["mAP"] == 1.0 and result["per_class"] == {0: 1.0, 1: 1.0, 2: 1.0}


@pytest.mark.jax
def test_one_missed_object():
    # Two objects, one found: recall 0.5 at precision 1.
    # 11-point: thresholds 0, .1, ..., .5 see precision 1 -> 6/11; area: 0.5 * 1.
    ap07, ap = both([pred([A], [0.9], [0]), pred([], [], [])], [gt([A], [0]), gt([B], [0])])
    assert ap07 == pytest.approx(6 / 11) and ap == pytest.approx(0.5)


@pytest.mark.jax
def test_duplicate_is_a_false_positive():
    # Ranked: A (TP), A again (FP, duplicate), B (TP): precision 1, 1/2, 2/3 at recall .5, .5, 1.
    # 11-point: 6 thresholds at 1, 5 at 2/3 -> (6 + 10/3)/11 = 28/33; area: .5*1 + .5*2/3 = 5/6.
    preds = [pred([A, [0.5, 0.0, 10.0, 10.0]], [0.9, 0.8], [0, 0]), pred([B], [0.7], [0])]
    ap07, ap = both(preds, [gt([A], [0]), gt([B], [0])])
    assert ap07 == pytest.approx(28 / 33) and ap == pytest.approx(5 / 6)


@pytest.mark.jax
def test_low_iou_box_is_a_false_positive():
    # The best-scored box overlaps B with IoU 0.4 (FP), then A is found (TP):
    # precision 0, 1/2 at recall 0, .5 -> 11-point 6 * .5 / 11 = 3/11; area .5 * .5 = 1/4.
    low = [20.0, 20.0, 40.0, 28.0]  # 20x8 inside the 20x20 box B: IoU 160/400 = 0.4
    preds = [pred([A], [0.8], [0]), pred([low], [0.9], [0])]
    ap07, ap = both(preds, [gt([A], [0]), gt([B], [0])])
    assert ap07 == pytest.approx(3 / 11) and ap == pytest.approx(0.25)


@pytest.mark.jax
def test_iou_must_exceed_the_threshold():
    half = [0.0, 0.0, 10.0, 5.0]  # IoU exactly 0.5 with A: the devkit needs "> 0.5"
    assert voc_ap([pred([half], [0.9], [0])], [gt([A], [0])])["mAP"] == 0.0
    assert voc_ap([pred([half], [0.9], [0])], [gt([A], [0])], iou_threshold=0.49)["mAP"] == 1.0


@pytest.mark.jax
def test_difficult_objects_are_ignored():
    truths = [gt([A, B], [0, 0], difficult=[True, False])]
    # Missing the difficult object costs nothing; finding it is not a false positive either.
    assert voc_ap([pred([B], [0.8], [0])], truths)["mAP"] == 1.0
    assert voc_ap([pred([A, B], [0.9, 0.8], [0, 0])], truths)["mAP"] == 1.0
    without_flag = [gt([A, B], [0, 0])]
    assert voc_ap([pred([B], [0.8], [0])], without_flag)["mAP"] == pytest.approx(6 / 11)
    # A class with only difficult objects has no defined AP and is left out of the mean.
    only_difficult = voc_ap([pred([], [], [])], [gt([A, B], [0, 1], difficult=[True, False])])
    assert only_difficult["per_class"] == {1: 0.0} and only_difficult["num_positives"][0] == 0


@pytest.mark.jax
def test_mean_over_classes_padding_and_class_mismatch():
    truths = [gt([A, B, [0, 0, 0, 0]], [0, 1, -1])]  # label -1 is padding
    # Padded predictions: only the first num_detections count; class 1 predicted as class 2.
    preds = [{"boxes": np.array([A, B, A], np.float32), "scores": np.array([0.9, 0.8, 0.7]),
              "classes": np.array([0, 2, 1]), "num_detections": np.array(2)}]
    result = voc_ap(preds, truths)
    assert result["per_class"] == {0: 1.0, 1: 0.0} and result["mAP"] == 0.5


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="1 predictions and 2 ground truths"):
        voc_ap([pred([], [], [])], [gt([A], [0]), gt([B], [0])])


def test_format_table_names_classes():
    table = format_table({0: 1.0, 1: 0.25}, ["cat", "dog"], "AP50", mean=0.625)
    assert "cat" in table and "0.2500" in table and table.splitlines()[-1].split() == ["mean",
                                                                                       "0.6250"]


def _key(image):
    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


class Oracle:
    """A 'detector' whose predict returns the ground truth of the images it is shown."""

    def __init__(self, dataset, max_detections=5):
        self.truth = {_key(e["images"].numpy()): e["bounding_boxes"] for e in dataset}
        self.k = max_detections
        self.calls = 0

    def predict(self, images):
        self.calls += 1
        out = {"boxes": np.zeros((len(images), self.k, 4), np.float32),
               "scores": np.zeros((len(images), self.k), np.float32),
               "classes": np.full((len(images), self.k), -1), "num_detections": np.zeros(
                   len(images), np.int32)}
        for b, image in enumerate(images):
            truth = self.truth[_key(np.asarray(image))]
            n = len(truth["labels"])
            out["boxes"][b, :n] = truth["boxes"].numpy()
            out["scores"][b, :n] = 1.0
            out["classes"][b, :n] = truth["labels"].numpy()
            out["num_detections"][b] = n
        return out


def test_evaluate_dataset_and_callback_on_raccoon_val(shared_data):
    import keras

    import detection.data
    from detection.evaluation import EvaluationCallback, evaluate_dataset, predict_dataset

    ds = detection.data.voc(shared_data / "raccoon-voc", split="val", class_names=["raccoon"],
                            verbose=False)
    oracle = Oracle(ds)
    assert len(oracle.truth) == 40
    result = evaluate_dataset(oracle, ds, metric="voc", verbose=False)
    assert result["mAP"] == 1.0 and result["num_positives"] == {"raccoon": 45}  # in val.txt
    preds, truths, ids = predict_dataset(oracle, ds.take(10), batch_size=4, progress=False)
    assert len(preds) == len(truths) == 10 and ids[0].startswith("raccoon-")
    assert coco_ap(preds, truths)["AP"] == pytest.approx(1.0)

    # In model.fit: evaluated on epochs 2 and 4 only, figures land in the fit history.
    callback = EvaluationCallback(ds.take(8), every_n_epochs=2, predictor=oracle, verbose=0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=4, verbose=0,
                        callbacks=[callback])
    assert [epoch for epoch, _ in callback.history] == [1, 3]
    assert history.history["val_mAP"][-1] == 1.0


def test_pad_to_batches_mixed_sizes_and_clips_to_each_image(shared_data):
    import detection.data
    from detection.evaluation import predict_dataset

    class WholeImage:
        """Predicts one box covering its whole (padded) input."""

        def __init__(self):
            self.shapes = []

        def predict(self, images):
            self.shapes.append(images.shape)
            b, h, w = images.shape[:3]
            return {"boxes": np.tile([[[0.0, 0.0, w, h]]], (b, 1, 1)),
                    "scores": np.ones((b, 1)), "classes": np.zeros((b, 1), int)}

    ds = detection.data.voc(shared_data / "raccoon-voc", split="val", class_names=["raccoon"],
                            verbose=False).take(3)
    model = WholeImage()
    preds, truths, _ = predict_dataset(model, ds, batch_size=3, pad_to=(700, 700),
                                       progress=False)
    assert model.shapes == [(3, 700, 700, 3)]  # three sizes, one padded batch
    sizes = [e["images"].shape[:2] for e in ds.as_numpy_iterator()]
    assert len(set(sizes)) == 3
    for pred, (h, w) in zip(preds, sizes, strict=True):
        np.testing.assert_array_equal(pred["boxes"], [[0, 0, w, h]])
    with pytest.raises(ValueError, match="pad_to=\\(100, 100\\) is smaller"):
        predict_dataset(model, ds, pad_to=(100, 100), progress=False)
