"""`torch.save` files read without PyTorch: the published legacy CIFAR checkpoints, and files
in both layouts written here byte for byte as torch writes them (protocol-2 pickles whose
tensors reduce to `torch._utils._rebuild_tensor_v2` over persistent-id storages), including
strided views, storage offsets and every dtype; pickles that would run code are refused."""

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import numpy as np
import pytest

from keras_resnet_suite import convert
from keras_resnet_suite.convert.torch_file import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    UnsafeCheckpointError,
    load_torch_file,
)

# --- a writer of torch.save's two layouts, for files PyTorch is not here to write ---------

_KINDS = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
          "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
          "ByteStorage": "u1", "BoolStorage": "?"}


def _fake_torch() -> dict:
    """Modules `torch` and `torch._utils` holding objects with torch's qualified names, so
    the standard pickler writes the same GLOBAL opcodes as torch.save does."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only ever pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _KINDS:
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    return {"torch": torch, "torch._utils": utils}


class Storage:
    """A typed storage: its class name and its elements (bfloat16 as raw 16-bit words)."""

    def __init__(self, kind: str, data: np.ndarray):
        self.kind, self.data = kind, np.ascontiguousarray(data, _KINDS[kind])


class Tensor:
    """A view (offset, size, stride in elements) of a storage; reduces as torch's does."""

    def __init__(self, storage: Storage, offset=0, size=None, stride=None):
        size = tuple(storage.data.shape if size is None else size)
        if stride is None:  # contiguous
            stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False,
                         collections.OrderedDict())


def tensor(array: np.ndarray, kind: str = "FloatStorage") -> Tensor:
    return Tensor(Storage(kind, np.asarray(array).reshape(-1)), 0, np.shape(array))


def torch_save(obj, path, zip_format: bool, archive: str = "archive") -> None:
    """Write `obj` (containers of `Tensor`s) as torch.save: the zip layout (>= 1.6) or the
    legacy stream (magic, version, sys info, pickle, storage keys, count + bytes each)."""
    keys: dict[int, tuple[str, Storage]] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, Storage):
                return None
            key = str(len(keys)) if zip_format else str(140000000 + 64 * len(keys))
            key = keys.setdefault(id(obj), (key, obj))[0]
            pid = ("storage", getattr(sys.modules["torch"], obj.kind), key, "cpu",
                   obj.data.size)
            return pid if zip_format else pid + (None,)

    with mock.patch.dict(sys.modules, _fake_torch()):
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(obj)
    storages = sorted(keys.values(), key=lambda kv: kv[0])
    if zip_format:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr(f"{archive}/data.pkl", buf.getvalue())
            z.writestr(f"{archive}/byteorder", "little")
            for key, storage in storages:
                z.writestr(f"{archive}/data/{key}", storage.data.tobytes())
            z.writestr(f"{archive}/version", "3\n")
        return
    info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, info):
            pickle.dump(header, f, protocol=2)
        f.write(buf.getvalue())
        pickle.dump([key for key, _ in storages], f, protocol=2)
        for _, storage in storages:
            f.write(struct.pack("<q", storage.data.size) + storage.data.tobytes())


def _legacy_with(pickled: bytes) -> bytes:
    """A legacy-layout file whose object pickle is `pickled`."""
    return b"".join(pickle.dumps(h, protocol=2) for h in (MAGIC_NUMBER, PROTOCOL_VERSION, {}))\
        + pickled + pickle.dumps([], protocol=2)


def _global_call(module: str, name: str, arg: str) -> bytes:
    """A protocol-2 pickle of `module.name(arg)`: GLOBAL, BINUNICODE, TUPLE1, REDUCE, STOP."""
    text = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(text))
            + text + b"\x85R.")


# --- the published checkpoints ------------------------------------------------------------

def test_published_legacy_checkpoints_are_read(shared_data):
    folder = shared_data / "cifar-resnet-checkpoints"
    for file, blocks, prec1 in (("resnet20-12fca82f.th", 9, 91.78),
                                ("resnet56-4bfd9763.th", 27, 93.62)):
        obj = load_torch_file(folder / file)
        assert set(obj) == {"state_dict", "best_prec1"}
        assert obj["best_prec1"] == pytest.approx(prec1)
        state = obj["state_dict"]
        assert isinstance(state, collections.OrderedDict)
        assert len(state) == 1 + 4 + blocks * 10 + 2  # conv1, bn1, 2x(conv+BN) a block, linear
        assert all(k.startswith("module.") and v.dtype == np.float32 for k, v in state.items())
        assert state["module.conv1.weight"].shape == (16, 3, 3, 3)
        assert state["module.layer3.0.conv1.weight"].shape == (64, 32, 3, 3)
        assert state["module.linear.weight"].shape == (10, 64)
        assert all(np.all(v > 0) for k, v in state.items() if k.endswith("running_var"))
        plain = convert.read_state_dict(folder / file)  # unwrapped, prefix dropped
        assert "linear.bias" in plain and "module.linear.bias" not in plain
        np.testing.assert_array_equal(plain["layer1.0.bn2.running_mean"],
                                      state["module.layer1.0.bn2.running_mean"])


# --- both layouts, written here -------------------------------------------------------------

def _rich_checkpoint():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(4, 3, 3, 3)).astype("float32")
    shared = Storage("FloatStorage", np.arange(24, dtype="float32"))
    bf16_values = np.array([1.0, -2.5, 3.140625, 0.0], "float32")
    obj = {
        "state_dict": collections.OrderedDict([
            ("module.conv.weight", tensor(kernel)),
            ("module.fc.weight", Tensor(shared, 0, (4, 6))),
            ("module.fc.weight_t", Tensor(shared, 0, (6, 4), (1, 6))),  # transposed view
            ("module.fc.tail", Tensor(shared, 10, (2, 3), (3, 1))),  # offset into the storage
            ("module.every_other", Tensor(shared, 1, (3,), (8,))),
            ("half", tensor(np.array([0.5, -1.25], "float16"), "HalfStorage")),
            ("double", tensor(np.array([[1e-300, 2.0]]), "DoubleStorage")),
            ("bf16", Tensor(Storage("BFloat16Storage", (bf16_values.view("u4") >> 16)
                                    .astype("u2")), 0, (2, 2))),
            ("long", tensor(np.array([2**40, -3], "int64"), "LongStorage")),
            ("int", tensor(np.array([7], "int32"), "IntStorage")),
            ("byte", tensor(np.array([255, 0], "uint8"), "ByteStorage")),
            ("mask", tensor(np.array([True, False, True]), "BoolStorage")),
            ("scalar", Tensor(Storage("LongStorage", np.array([12])), 0, (), ())),
            ("empty", Tensor(Storage("FloatStorage", np.zeros(0)), 0, (0, 3), (3, 1))),
        ]),
        "epoch": 3, "best_prec1": 91.5, "arch": "resnet20", "milestones": [100, 150],
        "betas": (0.9, 0.999),
    }
    full = np.arange(24, dtype="float32")
    expected = {
        "conv.weight": kernel, "fc.weight": full.reshape(4, 6),
        "fc.weight_t": full.reshape(4, 6).T, "fc.tail": full[10:16].reshape(2, 3),
        "every_other": full[[1, 9, 17]], "half": np.array([0.5, -1.25], "float16"),
        "double": np.array([[1e-300, 2.0]]), "bf16": bf16_values.reshape(2, 2),
        "long": np.array([2**40, -3]), "int": np.array([7], "int32"),
        "byte": np.array([255, 0], "uint8"), "mask": np.array([True, False, True]),
        "scalar": np.array(12), "empty": np.zeros((0, 3), "float32"),
    }
    return obj, expected


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_both_layouts_rebuild_tensors_views_dtypes_and_containers(tmp_path, zip_format):
    obj, expected = _rich_checkpoint()
    path = tmp_path / "ckpt.pth"
    torch_save(obj, path, zip_format)
    assert zipfile.is_zipfile(path) == zip_format
    loaded = load_torch_file(path)
    assert (loaded["epoch"], loaded["best_prec1"], loaded["arch"]) == (3, 91.5, "resnet20")
    assert loaded["milestones"] == [100, 150] and loaded["betas"] == (0.9, 0.999)
    state = loaded["state_dict"]
    assert isinstance(state, collections.OrderedDict)
    for key, want in expected.items():
        got = state[key if key in ("half", "double", "bf16", "long", "int", "byte", "mask",
                                   "scalar", "empty") else "module." + key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    # As a state dict: unwrapped, "module." dropped, floats widened to float32.
    if zip_format:
        plain = convert.read_torch(path)
        assert plain["half"].dtype == np.float32 and plain["long"].dtype == np.int64
        np.testing.assert_array_equal(plain["fc.weight_t"], expected["fc.weight_t"])


def test_zip_archive_name_is_free_and_a_missing_record_is_named(tmp_path):
    path = tmp_path / "named.pt"
    torch_save({"w": tensor(np.ones((2, 2)))}, path, True, archive="my_model")
    np.testing.assert_array_equal(load_torch_file(path)["w"], np.ones((2, 2), "float32"))
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if "/data/" not in name:
                dst.writestr(name, src.read(name))
    with pytest.raises(ValueError, match=r"broken\.pt: storage '0' .* my_model/data/0 is "
                                         "missing"):
        load_torch_file(broken)


# --- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"),
                                         ("builtins", "eval"), ("torch", "load")])
def test_code_in_the_pickle_is_refused_before_it_runs(tmp_path, zip_format, module, name):
    marker = tmp_path / "ran"
    payload = _global_call(module, name, f"touch {marker}" if name == "system" else "1")
    path = tmp_path / "evil.pth"
    if zip_format:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(_legacy_with(payload))
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\.pth: refused.*'{module}\.{name}'"):
        load_torch_file(path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused"):  # and through every reader
        convert.read_state_dict(path)
    assert not marker.exists()


def test_a_pickled_object_of_any_class_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    path.write_bytes(_legacy_with(pickle.dumps(collections.Counter("ab"), protocol=2)))
    with pytest.raises(UnsafeCheckpointError, match="'collections.Counter'"):
        load_torch_file(path)


def test_corrupt_files_are_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.th"
    torch_save({"w": tensor(np.arange(6.0).reshape(2, 3))}, good, False)
    cut = tmp_path / "cut.th"
    cut.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"cut\.th: truncated or corrupt storage"):
        load_torch_file(cut)
    # A stride that reaches past its storage would read foreign memory: refused.
    wild = tmp_path / "wild.th"
    torch_save({"w": Tensor(Storage("FloatStorage", np.zeros(4)), 1, (2, 2), (2, 1))}, wild,
               False)
    with pytest.raises(ValueError, match=r"wild\.th: .*reaches element 4 of a 4-element"):
        load_torch_file(wild)
    plain = tmp_path / "plain.pkl.pth"
    plain.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match=r"plain\.pkl\.pth: .*not a torch.save file"):
        load_torch_file(plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match=r"junk\.pth: "):
        load_torch_file(junk)
    mixed = tmp_path / "mixed.pth"
    torch_save({"w": tensor(np.zeros(2)), "note": "hello"}, mixed, True)
    with pytest.raises(ValueError, match=r"mixed\.pth: refused: not a plain tensor dict.*note"):
        convert.read_torch(mixed)
