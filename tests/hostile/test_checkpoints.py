"""Crafted checkpoint files, written opcode by opcode with the `pickle` module's protocol (no
PyTorch): size bombs that declare more elements than they store, and payloads that would run
code, checked by a marker file that must never appear."""

from __future__ import annotations

import pickle
import struct
import zipfile

import numpy as np
import pytest

from detection.checkpoints.readers import (
    UnsafePickleError,
    read_checkpoint,
    read_detectron2_pkl,
)
from keras_resnet_suite import convert
from keras_resnet_suite.convert.torch_file import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    UnsafeCheckpointError,
    load_torch_file,
)

# --- a tiny protocol-2 opcode writer --------------------------------------------------------


def text(s: str) -> bytes:
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def integer(n: int) -> bytes:
    if 0 <= n < 256:
        return pickle.BININT1 + bytes([n])
    if -2**31 <= n < 2**31:
        return pickle.BININT + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def tup(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def call(module: str, name: str, *args: bytes) -> bytes:
    return glob(module, name) + tup(*args) + pickle.REDUCE


def state_dict(**entries: bytes) -> bytes:
    """`{name: <object>}` as a whole pickle (PROTO 2 ... STOP)."""
    body = b"".join(text(k) + v + pickle.SETITEM for k, v in entries.items())
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + body + pickle.STOP


def torch_tensor(key: str, numel: int, size: tuple, stride: tuple, offset: int = 0,
                 legacy: bool = True) -> bytes:
    """`torch._utils._rebuild_tensor_v2(<FloatStorage key, numel>, offset, size, stride, ...)`."""
    pid = tup(text("storage"), glob("torch", "FloatStorage"), text(key), text("cpu"),
              integer(numel), *([pickle.NONE] if legacy else [])) + pickle.BINPERSID
    return call("torch._utils", "_rebuild_tensor_v2", pid, integer(offset),
                tup(*map(integer, size)), tup(*map(integer, stride)), pickle.NEWFALSE,
                call("collections", "OrderedDict"))


def legacy_torch_file(path, obj_pickle: bytes, storages: dict[str, np.ndarray]) -> None:
    """torch.save's legacy stream: magic, version, sys info, the object, keys, storages."""
    info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, info):
            pickle.dump(header, f, protocol=2)
        f.write(obj_pickle)
        pickle.dump(list(storages), f, protocol=2)
        for data in storages.values():
            f.write(struct.pack("<q", data.size) + data.astype("<f4").tobytes())


def zip_torch_file(path, obj_pickle: bytes, storages: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", obj_pickle)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data.astype("<f4").tobytes())


# --- 4. size bombs ----------------------------------------------------------------------------

BOMB = (100_000_000, 100_000_000)  # 1e16 float32 elements: 35.5 PiB


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize(("size", "stride", "offset", "numel", "words"), [
    (BOMB, (0, 0), 0, 1, "more elements than its storage holds"),
    ((3, 3), (0, 1), 0, 3, "more elements than its storage holds"),  # 9 from 3 by repeating
    ((2, 2), (2, 1), 1, 4, "reaches element 4 of a 4-element"),
])
def test_a_tensor_bigger_than_its_storage_is_refused(legacy, size, stride, offset, numel,
                                                     words, tmp_path):
    path = tmp_path / "bomb.pth"
    obj = state_dict(w=torch_tensor("0", numel, size, stride, offset, legacy))
    (legacy_torch_file if legacy else zip_torch_file)(path, obj, {"0": np.ones(numel)})
    if legacy and size == BOMB:
        assert path.stat().st_size < 600  # the 501-byte file of the report, give or take
    with pytest.raises(ValueError) as info:
        load_torch_file(path)
    assert str(info.value).startswith(f"{path}: tensor of size {size}") and words in str(
        info.value)


def test_the_bomb_through_build_names_the_file(tmp_path):
    import keras_resnet_suite as krs

    path = tmp_path / "resnet20-bomb.th"
    legacy_torch_file(path, state_dict(w=torch_tensor("0", 1, BOMB, (0, 0))), {"0": np.ones(1)})
    with pytest.raises(ValueError, match=rf"^{path}: tensor of size \(100000000, 100000000\) "
                                         r"\(10,000,000,000,000,000 elements\)"):
        krs.build("resnet20", weights=str(path))


def test_the_bomb_through_the_detector_reader_is_refused_with_torch_too(tmp_path):
    path = tmp_path / "detector-bomb.pth"
    legacy_torch_file(path, state_dict(**{"backbone.body.w": torch_tensor("0", 1, BOMB, (0, 0))}),
                      {"0": np.ones(1)})
    with pytest.raises(ValueError, match=rf"^{path}: .*more elements than its storage holds"):
        read_checkpoint(path)


@pytest.mark.parametrize(("numel", "view", "words"), [
    (-5, None, "storage '0' declares -5 elements"),
    (4, ("v", 2, 9), "storage view 'v' (offset 2, size 9) lies outside its 4-element"),
])
def test_impossible_storages_are_refused(numel, view, words, tmp_path):
    pid = tup(text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"),
              integer(numel), tup(text(view[0]), integer(view[1]), integer(view[2]))
              if view else pickle.NONE) + pickle.BINPERSID
    obj = state_dict(w=call("torch._utils", "_rebuild_tensor_v2", pid, integer(0),
                            tup(integer(1)), tup(integer(1)), pickle.NEWFALSE,
                            call("collections", "OrderedDict")))
    path = tmp_path / "odd.pth"
    legacy_torch_file(path, obj, {"0": np.ones(4)})
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_torch_file(path)


def _ndarray_call(shape, strides) -> bytes:
    """`numpy.ndarray(shape, "f4", b"\\0\\0\\0\\0", 0, strides)`: any size over 4 bytes."""
    data = b"\x00" * 4
    return call("numpy", "ndarray", tup(*map(integer, shape)), text("f4"),
                pickle.SHORT_BINBYTES + bytes([len(data)]) + data, integer(0),
                tup(*map(integer, strides)))


@pytest.mark.parametrize(("payload", "words"), [
    (_ndarray_call(BOMB, (0, 0)), "calls numpy.ndarray("),
    (call("numpy.core.multiarray", "_reconstruct", glob("numpy", "ndarray"),
          tup(integer(100_000), integer(100_000)), text("b")),
     "declares more elements than the"),
    (call("numpy._core.multiarray", "_reconstruct", glob("posix", "system"), tup(integer(0)),
          text("b")), "asks for the global 'posix.system'"),
])
def test_detectron2_pickles_may_not_make_arrays_from_nothing(payload, words, tmp_path):
    path = tmp_path / "model_final.pkl"
    body = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + text("model") + pickle.EMPTY_DICT + \
        text("w") + payload + pickle.SETITEM + pickle.SETITEM + pickle.STOP
    path.write_bytes(body)
    with pytest.raises(ValueError) as info:
        read_detectron2_pkl(path)
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_an_honest_detectron2_pickle_still_reads(tmp_path):
    path = tmp_path / "ok.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.arange(6.0).reshape(2, 3)}}, f, protocol=2)
    np.testing.assert_array_equal(read_detectron2_pkl(path)["w"], np.arange(6.0).reshape(2, 3))


def _tampered(old: bytes, new: bytes, array=None, protocol: int = 2) -> bytes:
    """A real numpy pickle of `{"model": {"w": array}}` with one byte run replaced."""
    array = np.arange(6, dtype="float32") if array is None else array
    raw = pickle.dumps({"model": {"w": array}}, protocol=protocol)
    assert raw.count(old) == 1
    return raw.replace(old, new)


_DTYPE_TAIL = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # (..., elsize, alignment, flags)


@pytest.mark.parametrize(("body", "words"), [
    # flags saying the float32 items hold references: numpy then looked for a clearing loop a
    # float32 has none of and failed in its deallocator, taking the interpreter down (fuzzing)
    (_tampered(_DTYPE_TAIL, _DTYPE_TAIL[:-2] + b"\x3ft"), None),
    (_tampered(b"X\x01\x00\x00\x00<", b"X\x01\x00\x00\x00?"), "byte order '?'"),
    (_tampered(b"X\x02\x00\x00\x00f4", b"X\x02\x00\x00\x00O8"), "not a plain number type"),
    (_tampered(b"K\x06\x85", b"K\x07\x85"), "needs 28 bytes; its data holds 24"),
    (_tampered(b"K\x06\x85", b"J\xff\xff\xff\xff\x85"), "not a tuple of sizes"),
])
def test_crafted_array_and_dtype_states_never_reach_numpy(body, words, tmp_path):
    path = tmp_path / "model_final.pkl"
    path.write_bytes(body)
    try:
        state = read_detectron2_pkl(path)
    except ValueError as err:
        assert str(err).startswith(f"{path}: ") and (words is None or words in str(err))
    else:  # the flags word is not numpy's to trust: ignored, the float32 data read as such
        assert words is None
        np.testing.assert_array_equal(state["w"], np.arange(6, dtype="float32"))


def test_fortran_order_big_endian_and_protocol_5_pickles_still_read(tmp_path):
    path = tmp_path / "ok.pkl"
    for array, protocol in ((np.asfortranarray(np.arange(6.0).reshape(2, 3)), 2),
                            (np.arange(6, dtype=">i4").reshape(3, 2), 2),
                            (np.arange(6.0, dtype="float32"), 5), (np.float32(2.5), 2)):
        path.write_bytes(pickle.dumps({"model": {"w": array}}, protocol=protocol))
        np.testing.assert_array_equal(read_detectron2_pkl(path)["w"], array)


# --- pickles that would run code: refused, and the marker never appears --------------------

def _payloads(marker) -> dict[str, bytes]:
    return {
        "os.system": call("os", "system", text(f"touch {marker}")),
        "posix.system": call("posix", "system", text(f"touch {marker}")),
        "builtins.exec": call("builtins", "exec", text(f"open({str(marker)!r}, 'w').close()")),
        "subprocess.call": call("subprocess", "call",
                                glob("builtins", "list") + tup(tup(text("touch"),
                                                                   text(str(marker))))
                                + pickle.REDUCE),
    }


@pytest.mark.parametrize("payload", ["os.system", "posix.system", "builtins.exec",
                                     "subprocess.call"])
@pytest.mark.parametrize("container", ["legacy_pth", "zip_pth", "detectron2_pkl",
                                       "legacy_magic"])
def test_code_running_pickles_are_refused_and_run_nothing(container, payload, tmp_path):
    marker = tmp_path / "pwned"
    code = _payloads(marker)[payload]
    module = payload.split(".")[0]
    path = tmp_path / ("model.pkl" if container == "detectron2_pkl" else "model.pth")
    obj = state_dict(w=code)
    if container == "legacy_pth":
        legacy_torch_file(path, obj, {})
    elif container == "zip_pth":
        zip_torch_file(path, obj, {})
    elif container == "legacy_magic":  # the very first pickle of the stream
        path.write_bytes(pickle.PROTO + b"\x02" + code + pickle.STOP)
    else:
        path.write_bytes(pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + text("model") + obj[2:-1]
                         + pickle.SETITEM + pickle.STOP)
    if container == "detectron2_pkl":
        with pytest.raises(UnsafePickleError, match=rf"^{path}: refused: .*'{module}\."):
            read_detectron2_pkl(path)
    else:
        with pytest.raises(UnsafeCheckpointError, match=rf"^{path}: refused: .*'{module}\."):
            load_torch_file(path)
        with pytest.raises(ValueError, match=rf"^{path}: "):  # also through PyTorch itself
            read_checkpoint(path)
    assert not marker.exists()


# --- safetensors headers that lie ------------------------------------------------------------

def _safetensors(path, header: dict, data: bytes) -> None:
    import json

    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


@pytest.mark.parametrize(("entry", "words"), [
    ({"dtype": "F32", "shape": [100_000_000, 100_000_000], "data_offsets": [0, 4]},
     "of shape [100000000, 100000000] (F32) needs 40000000000000000 bytes, its data has 4"),
    ({"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 4]}, "'shape' (whole numbers >= 0)"),
    ({"dtype": "F32", "shape": [1]}, "'data_offsets' (two)"),
    ("junk", "header entry needs 'dtype'"),
])
def test_safetensors_entries_are_checked_before_reading(entry, words, tmp_path):
    path = tmp_path / "w.safetensors"
    _safetensors(path, {"w": entry}, b"\x00" * 4)
    with pytest.raises(ValueError) as info:
        convert.read_safetensors(path)
    assert str(info.value).startswith(f"{path}: tensor 'w'") and words in str(info.value)


def test_an_honest_small_torch_file_still_reads(tmp_path):
    path = tmp_path / "ok.pth"
    legacy_torch_file(path, state_dict(w=torch_tensor("0", 6, (2, 3), (3, 1))),
                      {"0": np.arange(6.0)})
    np.testing.assert_array_equal(load_torch_file(path)["w"], np.arange(6.0).reshape(2, 3))
