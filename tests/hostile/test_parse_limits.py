"""Parsing limits (issue 35): whatever a parser raises on a user's file (RecursionError on deep
nesting, UnicodeDecodeError, pickle, struct or zip errors on truncated bytes) ends as one
ValueError line naming the file, or as a counted skip naming it; never a bare RecursionError."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest

import detection
from detection.checkpoints.readers import read_checkpoint, read_detectron2_pkl
from detection.config import load_config
from keras_resnet_suite import convert
from keras_resnet_suite.convert.torch_file import MAGIC_NUMBER, PROTOCOL_VERSION, load_torch_file
from keras_resnet_suite.file_errors import UnreadableFile, reading
from tests.hostile.inputs import write_image

DEEP = 100_000  # far beyond Python's recursion limit (1000)


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_pickle(depth: int = 5000, wrap: bytes = b"") -> bytes:
    """A protocol-2 pickle of lists nested `depth` deep, built without recursion (the pickle
    machine is a stack: push `depth` empty lists, then append each into the one below)."""
    body = pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1)
    return pickle.PROTO + b"\x02" + wrap + body + pickle.STOP


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except RecursionError:
        return False
    return True


def one_line_naming(err: pytest.ExceptionInfo, path) -> str:
    text = str(err.value)
    assert str(path) in text and "\n" not in text, text
    assert not isinstance(err.value, RecursionError)
    return text


def coco_json(tmp_path, text: str | bytes):
    write_image(tmp_path / "im1.jpg")
    path = tmp_path / "export.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ------------------------------------------------------------------ COCO JSON
@pytest.mark.parametrize(("content", "words"), [
    ('{"images": ' + deep_json() + ', "annotations": [], "categories": []}',
     "nested too deeply to parse"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "caf\xe9"}]}'
     .encode("latin-1"), "not a UTF-8 text file"),
    ('{"images": [{"id": 1, "file_name": "im1.jpg"}], "annotations": [', "malformed JSON at line"),
    (b"\xff\xfe{\x00}\x00", "not a UTF-8 text file"),
], ids=["deep_nesting", "latin1", "truncated", "utf16"])
def test_a_coco_json_that_cannot_be_parsed_names_the_file(tmp_path, content, words):
    path = coco_json(tmp_path, content)
    with pytest.raises(ValueError) as err:
        detection.data.coco(path, verbose=False)
    assert words in one_line_naming(err, path)


@pytest.mark.parametrize("field", ["bbox", "segmentation", "iscrowd"])
def test_a_value_nested_just_under_the_limit_is_a_counted_skip(tmp_path, field):
    """As deep as parses here: the value is then refused like any other wrong value (its repr
    in the report must not recurse either)."""
    depth = next(d for d in range(1000, 0, -10) if _parses(deep_json(d))) - 40
    deep = "[" * depth + "1" + "]" * depth
    text = ('{"images": [{"id": 1, "file_name": "im1.jpg"}], "categories": [{"id": 1, '
            '"name": "a"}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, '
            '"bbox": [1, 1, 5, 5], "' + field + '": ' + deep + "}]}")
    ds = detection.data.coco(coco_json(tmp_path, text), masks=True, verbose=False)
    kind = "bad_segmentation" if field == "segmentation" else "malformed_annotation"
    assert ds.report.counts.get(kind) == 1 and ds.num_examples == 1


# ------------------------------------------------------------------ VOC XML
@pytest.mark.parametrize(("content", "kept"), [
    ("<annotation>" + "<a>" * 20_000 + "</a>" * 20_000 + "</annotation>", 1),  # no objects
    ('<?xml version="1.0" encoding="utf-8"?><annotation><object><name>caf\xe9</name>'
     "</object></annotation>", 0),
    ("<annotation><object><name>cat</name><bndbox><xmin>1", 0),
], ids=["deep_nesting", "latin1_bytes", "truncated"])
def test_a_voc_xml_that_cannot_be_parsed_is_a_counted_skip(tmp_path, content, kept):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_bytes(content.encode("latin-1"))
    ds = detection.data.voc(tmp_path, class_names=["cat"], verbose=False)
    assert ds.num_examples == kept
    if not kept:
        assert ds.report.files("malformed_annotation") == ["a.xml"]


# ------------------------------------------------------------------ YAML configs
@pytest.mark.parametrize(("content", "words"), [
    ("model: " + deep_json(20_000) + "\n", "config nested too deeply to parse"),
    ("model:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(3000)), "nested too deeply"),
    ("model: {backbone: resnet18\n", "not valid YAML"),
], ids=["deep_flow", "deep_block", "truncated"])
def test_a_config_that_cannot_be_parsed_names_the_file(tmp_path, content, words):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert words in one_line_naming(err, path)


# ------------------------------------------------------------------ checkpoints
def _legacy_torch(obj_pickle: bytes) -> bytes:
    """A legacy `torch.save` stream whose state-dict pickle is `obj_pickle`."""
    return b"".join([pickle.dumps(MAGIC_NUMBER, 2), pickle.dumps(PROTOCOL_VERSION, 2),
                     pickle.dumps({"little_endian": True}, 2), obj_pickle,
                     pickle.dumps([], 2)])


@pytest.mark.parametrize(("name", "content", "read"), [
    ("deep.pkl", deep_pickle(), read_detectron2_pkl),
    ("deep_model.pkl", deep_pickle(wrap=b""), read_checkpoint),
    ("deep.pth", _legacy_torch(deep_pickle()), load_torch_file),
    ("cut.pth", _legacy_torch(pickle.dumps({"w": 1}, 2))[:-7], load_torch_file),
    ("cut.safetensors", struct.pack("<Q", 64) + b'{"w": {"dtype": "F32", "sha', convert
     .read_safetensors),
    ("cut.pkl", pickle.dumps({"model": {"w": np.zeros(4, np.float32)}}, 2)[:40],
     read_checkpoint),
], ids=["deep_pkl", "deep_pkl_checkpoint", "deep_pth", "truncated_pth",
        "truncated_safetensors", "truncated_pkl"])
def test_a_checkpoint_that_cannot_be_parsed_names_the_file(tmp_path, name, content, read):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read(path)
    one_line_naming(err, path)


def test_a_cut_h5_weights_file_is_named(tmp_path):
    """An HDF5 file cut short: h5py's OSError names no file; the reader's message does."""
    import h5py

    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(1000))
    path.write_bytes(path.read_bytes()[:900])
    with pytest.raises(ValueError) as err:
        convert.read_keras_h5(path)
    one_line_naming(err, path)


# ------------------------------------------------------------------ the shared rule
def test_reading_names_the_file_whatever_the_parser_raised(tmp_path):
    path = tmp_path / "f.bin"
    for raised, words in [(RecursionError(), "nested too deeply"),
                          (MemoryError(), "too large to parse"),
                          (struct.error("unpack requires 8 bytes"), "struct.error"),
                          (KeyError("w"), "KeyError")]:
        with pytest.raises(UnreadableFile, match=words) as err, reading(path, "checkpoint"):
            raise raised
        assert str(err.value).startswith(f"{path}: ") and err.value.path == str(path)
    with pytest.raises(FileNotFoundError), reading(path, "checkpoint"):  # already names it
        open(path)


def test_detection_train_on_a_deep_coco_json_is_one_line(tmp_path, capsys):
    from detection import cli

    path = coco_json(tmp_path, '{"images": ' + deep_json() + "}")
    code = cli.main(["train", "--data", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {path}: ") and "nested too deeply" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "run" / "config.yaml").exists()


# ------------------------------------------------------------------ run records
def test_a_classifier_run_json_nested_too_deep_is_one_line(tmp_path, capsys):
    from keras_resnet_suite import cli

    (tmp_path / "run.json").write_text(json.dumps({"model": "resnet20"})[:-1] + ', "x": '
                                       + deep_json() + "}")
    code = cli.main(["evaluate", "--run", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {tmp_path / 'run.json'}: "), err


@pytest.mark.parametrize("suffix", ["th", "pth", "pkl"])
@pytest.mark.parametrize("opcode", [b"\x96", b"\x8e", b"\x8d"])  # BYTEARRAY8, BINBYTES8, BINUNICODE8
def test_a_pickle_length_the_file_does_not_hold_is_refused_before_any_allocation(
        opcode, suffix, tmp_path):
    # a 533-byte fuzzed .th declared gigabytes and the machine ran out of memory; now the
    # opcodes are walked first and such a length is a named error, never an allocation
    from keras_resnet_suite.convert import formats

    path = tmp_path / f"weights.{suffix}"
    path.write_bytes(b"\x80\x05" + opcode + (2**40).to_bytes(8, "little") + b"abc")
    reader = read_checkpoint if suffix == "pkl" else formats.read_state_dict
    with pytest.raises(ValueError, match=rf"{path}: .*damaged pickle") as info:
        reader(str(path))
    assert "MemoryError" not in str(info.value)


def test_walking_a_sound_pickle_leaves_the_file_where_it_was(tmp_path):
    from keras_resnet_suite.file_errors import check_pickle_lengths

    data = io.BytesIO(b"junk" + pickle.dumps({"w": b"x" * 1000, "n": [1, 2.5]}, protocol=5))
    data.seek(4)
    check_pickle_lengths(data, "mem")
    assert data.tell() == 4 and pickle.load(data)["n"] == [1, 2.5]
