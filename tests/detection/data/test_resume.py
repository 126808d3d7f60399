"""Constant-time resume of the detection training stream (detection.data.resume): a stream
started at step S gives the uninterrupted run's batch S, skips by index (decoding nothing
before S), and shards per worker by position."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

pytestmark = pytest.mark.tf_only


def _take(dataset, n):
    return [tuple(int(v) for v in pair) for pair in dataset.take(n).as_numpy_iterator()]


def test_each_epoch_is_a_seeded_permutation_and_a_start_is_computed_not_iterated():
    from detection.data.resume import stream_indices

    whole = _take(stream_indices(6, 0, seed=3), 24)
    assert [p for p, _ in whole] == list(range(24))
    epochs = [[i for _, i in whole[k:k + 6]] for k in range(0, 24, 6)]
    assert all(sorted(e) == list(range(6)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # re-drawn per epoch
    assert _take(stream_indices(6, 0, seed=3), 24) == whole  # seeded
    assert _take(stream_indices(6, 0, seed=4), 24) != whole
    for first in (1, 5, 6, 13):
        assert _take(stream_indices(6, first, seed=3), 24 - first) == whole[first:]
    far = _take(stream_indices(6, 6 * 10**9 + 2, seed=3), 2)  # epoch 10^9, instantly
    assert [p for p, _ in far] == [6 * 10**9 + 2, 6 * 10**9 + 3]


@pytest.mark.parametrize("workers", [2, 4])
def test_shards_are_disjoint_and_together_the_whole_stream(workers):
    from detection.data.resume import shard_positions, stream_indices

    whole = _take(stream_indices(5, 3, seed=1), 40)
    shards = [_take(stream_indices(5, 3, seed=1, num_shards=workers, shard=w), 40 // workers)
              for w in range(workers)]
    assert sorted(sum(shards, [])) == sorted(whole)  # disjoint, no repeats, nothing missed
    for w, shard in enumerate(shards):
        assert all(p % workers == w for p, _ in shard)
    # Worker w's k-th batch of B/workers plus the others' is one-worker global batch k.
    batch = 2 * workers
    per_worker = [[p for p, _ in s][:batch // workers] for s in shards]
    assert sorted(sum(per_worker, [])) == list(range(3, 3 + batch))
    with pytest.raises(ValueError, match="shard must be in"):
        shard_positions(0, 2, 2)


def _config(tmp_path, train_spec, masks=False):
    from detection.config import load_config
    from detection.data.synthetic import CLASS_NAMES

    config = {
        "name": "resume", "model": {"backbone": "resnet18", "image_size": [48, 48],
                                     "masks": masks},
        "data": {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
                 "train": train_spec, "augment": {"flip": True, "sizes": [32, 48]},
                 "max_boxes": 4, "seed": 5},
        "train": {"batch_size": 2, "steps": 10, "learning_rate": 0.01},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _stream(config):
    from detection.data.build import dataset_from_config
    from detection.engine.train import _train_stream

    base = dataset_from_config(config.data.train, config.class_names(), shuffle=True,
                               seed=config.data.seed, verbose=False)
    return _train_stream(config, base, 2)


def _voc(tmp_path):
    from detection.data.synthetic import write_voc

    write_voc(tmp_path / "data" / "VOC2007", 6, "train", image_size=40, seed=2)
    return {"loader": "voc", "data_dir": str(tmp_path / "data"), "year": 2007, "split": "train"}


@pytest.mark.parametrize("loader", ["voc", "shapes"])
def test_the_first_resumed_batch_is_the_uninterrupted_runs_batch(tmp_path, loader):
    spec = _voc(tmp_path) if loader == "voc" else {
        "loader": "shapes", "num_images": 6, "image_size": 40}
    make = _stream(_config(tmp_path, spec, masks=loader == "shapes"))
    whole = list(make(0).take(10).as_numpy_iterator())  # 6 images, 2 a batch: 3 epochs+
    assert not np.array_equal(whole[0]["images"], whole[3]["images"])  # reshuffled, augmented
    for start in (2, 7):  # mid-epoch; step 7 is element 14, in the third epoch
        resumed = list(make(start).take(3).as_numpy_iterator())
        for step, (a, b) in enumerate(zip(whole[start:start + 3], resumed, strict=True),
                                            start=start):
            for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
                np.testing.assert_array_equal(x, y, err_msg=f"step {step}")


def test_resuming_decodes_nothing_before_the_step(tmp_path, monkeypatch):
    import detection.data.records as records

    decoded, decode = [], records.decode_rgb

    def counting(data):  # counts every image decoded, in the pipeline's own threads
        tick = tf.py_function(lambda: decoded.append(1) or 0, [], tf.int32)
        with tf.control_dependencies([tick]):
            return decode(data)

    monkeypatch.setattr(records, "decode_rgb", counting)
    make = _stream(_config(tmp_path, _voc(tmp_path)))
    next(iter(make(0)))
    at_start = len(decoded)
    decoded.clear()
    batch = next(iter(make(5000)))  # the old .skip(5000) decoded 10,000 images first
    assert batch["images"].shape[0] == 2
    assert 2 <= len(decoded) <= max(at_start, 2) + 8, (len(decoded), at_start)


def test_each_worker_input_holds_its_share_of_every_global_batch(tmp_path):
    """The `dataset_fn` `MultiWorkerMirroredStrategy` gets (`distribute_datasets_from_function`)
    called as each of two workers' input pipelines; no real cluster is started here."""
    from detection.data.resume import worker_input
    from detection.data.synthetic import CLASS_NAMES

    make = _stream(_config(tmp_path, _voc(tmp_path)))
    for start in (0, 4):
        whole = list(make(start).take(3).as_numpy_iterator())
        dataset_fn = worker_input(make, start, 2, len(CLASS_NAMES))
        shares = [list(dataset_fn(tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=w, num_replicas_in_sync=2))
            .take(3).as_numpy_iterator()) for w in (0, 1)]
        for k, batch in enumerate(whole):
            assert all(s[k]["images"].shape[0] == 1 for s in shares)  # per-replica batch
            np.testing.assert_array_equal(
                np.concatenate([s[k]["images"] for s in shares]), batch["images"])
            np.testing.assert_array_equal(np.concatenate(
                [s[k]["bounding_boxes"]["boxes"] for s in shares]),
                batch["bounding_boxes"]["boxes"])
