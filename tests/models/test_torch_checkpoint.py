import pickle
import struct
import zipfile

import numpy as np
import pytest

from dmml_tf.errors import WeightsError
from dmml_tf.models.mobilenet_v2 import torchvision_weights_path
from dmml_tf.models.torch_checkpoint import read_legacy_checkpoint

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}
STORAGE_NAMES = {np.dtype("float32"): b"FloatStorage", np.dtype("int64"): b"LongStorage"}


def _ops(value):
    """Pickle opcodes that push `value` (protocol 2, no PROTO/STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _write_checkpoint(path, tensors, storages, main_pickle=None):
    """Writes a legacy checkpoint as torch.save does, without torch.

    tensors: name -> (storage key, storage offset, size, stride, view metadata).
    storages: storage key -> 1-D array.
    """
    if main_pickle is None:
        main_pickle = b"\x80\x02ccollections\nOrderedDict\n)R("
        for name, (key, offset, size, stride, view) in tensors.items():
            data = storages[key]
            storage_id = (
                b"(" + _ops("storage") + b"ctorch\n" + STORAGE_NAMES[data.dtype]
                + b"\n" + _ops(key) + _ops("cpu") + _ops(data.size) + _ops(view)
                + b"tQ"
            )
            main_pickle += (
                _ops(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_id
                + _ops(offset) + _ops(size) + _ops(stride)
                + b"\x89ccollections\nOrderedDict\n)RtR"
            )
        main_pickle += b"u."
    with open(path, "wb") as file:
        for record in (MAGIC_NUMBER, 1001, SYS_INFO):
            file.write(pickle.dumps(record, protocol=2))
        file.write(main_pickle)
        file.write(pickle.dumps(list(storages), protocol=2))
        for data in storages.values():
            file.write(struct.pack("<q", data.size) + data.tobytes())


@pytest.fixture
def storages():
    return {
        "s0": np.arange(24, dtype=np.float32),
        "s1": np.array([7, 8, 9], dtype=np.int64),
    }


def test_offsets_strides_and_views(tmp_path, storages):
    tensors = {
        "transposed": ("s0", 2, (3, 4), (1, 3), None),
        "view": ("s0", 1, (2, 2), (2, 1), ("v0", 10, 6)),
        "scalar": ("s1", 1, (), (), None),
        "empty": ("s1", 0, (0, 5), (5, 1), None),
    }
    _write_checkpoint(tmp_path / "w.pth", tensors, storages)
    state = read_legacy_checkpoint(tmp_path / "w.pth")
    s0 = storages["s0"]
    transposed = np.zeros((3, 4), np.float32)
    view = np.zeros((2, 2), np.float32)
    for i in range(3):
        for j in range(4):
            transposed[i, j] = s0[2 + i * 1 + j * 3]
    for i in range(2):
        for j in range(2):
            view[i, j] = s0[10 + 1 + i * 2 + j]
    assert list(state) == list(tensors)
    np.testing.assert_array_equal(state["transposed"], transposed)
    np.testing.assert_array_equal(state["view"], view)
    assert state["scalar"].shape == () and state["scalar"] == 8
    assert state["scalar"].dtype == np.int64 and state["view"].dtype == np.float32
    assert state["empty"].shape == (0, 5)
    assert state["transposed"].flags.c_contiguous and state["transposed"].flags.writeable


def test_tensor_outside_storage_is_refused(tmp_path, storages):
    tensors = {"too_long": ("s1", 1, (3,), (1,), None)}
    _write_checkpoint(tmp_path / "w.pth", tensors, {"s1": storages["s1"]})
    with pytest.raises(WeightsError, match="'too_long' reaches outside"):
        read_legacy_checkpoint(tmp_path / "w.pth")


def test_truncated_file_is_refused(tmp_path, storages):
    tensors = {"t": ("s0", 0, (24,), (1,), None)}
    _write_checkpoint(tmp_path / "w.pth", tensors, {"s0": storages["s0"]})
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(data[:-4])
    with pytest.raises(WeightsError, match="truncated"):
        read_legacy_checkpoint(tmp_path / "w.pth")


class _Evil:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize(
    "refused, make_pickle",
    [
        ("os.system", lambda marker: b"cos\nsystem\n(S'touch " + marker + b"'\ntR."),
        (
            "builtins.eval",
            lambda marker: pickle.dumps(
                _Evil(eval, f"open({marker.decode()!r}, 'w')"), protocol=4
            ),
        ),
        (
            "builtins.exec",
            lambda marker: pickle.dumps(
                {"w": _Evil(exec, f"open({marker.decode()!r}, 'w')")}, protocol=2
            ).replace(b"__builtin__", b"builtins"),
        ),
    ],
    ids=["os.system", "builtins.eval", "builtins.exec-inside-dict"],
)
def test_malicious_pickle_is_refused_and_not_run(tmp_path, refused, make_pickle):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _write_checkpoint(path, {}, {}, main_pickle=make_pickle(str(marker).encode()))
    with pytest.raises(WeightsError, match=f"'{refused}'"):
        read_legacy_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    [b"collections\nOrderedDict", b"torch._utils\n_rebuild_tensor_v2", b"torch\nFloatStorage"],
    ids=["OrderedDict", "rebuild_tensor_v2", "FloatStorage"],
)
@pytest.mark.parametrize("state_kind", ["dict-state", "slot-state"])
def test_allowed_names_cannot_be_altered(tmp_path, storages, target, state_kind):
    """A pickle's BUILD opcode on an allowed name must not change later loads."""
    attributes = b"}" + _ops("dtype") + _ops(None) + b"s"  # {"dtype": None}
    state = attributes if state_kind == "dict-state" else b"N" + attributes + b"\x86"
    evil = b"\x80\x02c" + target + b"\n" + state + b"b."
    _write_checkpoint(tmp_path / "evil.pth", {}, {}, main_pickle=evil)
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        read_legacy_checkpoint(tmp_path / "evil.pth")
    tensors = {"t": ("s0", 0, (24,), (1,), None)}
    _write_checkpoint(tmp_path / "w.pth", tensors, {"s0": storages["s0"]})
    np.testing.assert_array_equal(read_legacy_checkpoint(tmp_path / "w.pth")["t"], storages["s0"])


def test_zip_checkpoint_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(WeightsError, match="zip-format.*_use_new_zipfile_serialization"):
        read_legacy_checkpoint(tmp_path / "new.pth")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_legacy_checkpoint(tmp_path / "nothing.pth")


def test_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        read_legacy_checkpoint(tmp_path / "text.pth")


def test_torchvision_mobilenet_v2_checkpoint():
    state = read_legacy_checkpoint(torchvision_weights_path())
    assert len(state) == 314  # 52 convolutions, 52 x 5 BatchNorm tensors, 2 dense
    assert next(iter(state)) == "features.0.0.weight"
    assert list(state)[-2:] == ["classifier.1.weight", "classifier.1.bias"]
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["classifier.1.weight"].dtype == np.float32
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state.values())
    assert min(v.min() for k, v in state.items() if k.endswith("running_var")) > 0
