"""Read PyTorch's legacy (non-zip) checkpoints into numpy, without torch.

A legacy checkpoint, as written by `torch.save(..., _use_new_zipfile_serialization=False)`
and by torch < 1.6, is a sequence of records:

1. a pickled magic number, a pickled protocol version and a pickled dict of sizes;
2. the main pickle (here a state dict) whose tensors name their storages by persistent
   ids `("storage", storage_type, key, location, numel, view_metadata)`;
3. a pickled list of storage keys, then per key an 8-byte little-endian element
   count followed by the raw elements.

Pickles can run arbitrary code when loaded, so every pickle goes through an
unpickler that resolves only the few names a state dict needs, each to a stand-in
defined here; torch itself is never imported.
"""

import collections
import os
import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dmml_tf.errors import WeightsError

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

# torch storage class name -> numpy dtype of its elements (little-endian).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageRef(NamedTuple):
    """Elements `[offset, offset + numel)` of the storage saved under `key`."""

    key: str
    dtype: np.dtype
    offset: int
    numel: int


class _TensorRef(NamedTuple):
    """A tensor whose storage has not been read yet."""

    storage: _StorageRef
    offset: int
    shape: tuple
    strides: tuple


def _is_index(value):
    return type(value) is int and value >= 0


class _RebuildTensor:
    """Stand-in for `torch._utils._rebuild_tensor` and `_rebuild_tensor_v2`.

    The v2 extras (requires_grad, backward hooks, metadata) do not affect values.
    """

    __slots__ = ()

    def __call__(self, storage, storage_offset, size, stride, *unused):
        size, stride = tuple(size), tuple(stride)
        indices = (storage_offset, *size, *stride)
        if not (
            isinstance(storage, _StorageRef)
            and len(size) == len(stride)
            and all(map(_is_index, indices))
        ):
            raise WeightsError(f"Malformed tensor: {storage!r}, {indices!r}.")
        return _TensorRef(storage, storage_offset, size, stride)


# The only names a state dict's pickle may ask for, each to an object that a
# pickle's BUILD opcode cannot alter: a C type, a slot-less callable, and for a
# storage class its name (a str, looked up in `_STORAGE_DTYPES`).
_ALLOWED_NAMES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _RebuildTensor(),
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_NAMES` and records the storages tensors refer to."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.storages = {}  # storage key -> (dtype, numel) of the whole storage

    def find_class(self, module, name):
        try:
            return _ALLOWED_NAMES[(module, name)]
        except KeyError:
            raise WeightsError(
                f"Refusing to load {self.path}: its pickle asks for "
                f"'{module}.{name}', which is not needed to rebuild tensors. "
                "Only state dicts of tensors are read; the file may be unsafe."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise WeightsError(
                f"{self.path} holds an object other than tensor storage "
                f"(persistent id {str(pid)[:80]}); only state dicts are supported."
            )
        _, storage_type, key, _location, numel, view = pid
        offset, view_numel = (0, numel) if view is None else view[1:]
        if not (
            storage_type in _STORAGE_DTYPES
            and isinstance(key, str)
            and all(map(_is_index, (numel, offset, view_numel)))
            and offset + view_numel <= numel
        ):
            raise WeightsError(f"{self.path}: malformed storage id {str(pid)[:80]}.")
        dtype = _STORAGE_DTYPES[storage_type]
        self.storages.setdefault(key, (dtype, numel))
        return _StorageRef(key, dtype, offset, view_numel)


def _read_storages(file, path, keys, storages):
    """Reads the raw storages that follow the main pickle, in the order of `keys`."""
    file_size = os.fstat(file.fileno()).st_size
    arrays = {}
    for key in keys:
        if key not in storages:
            raise WeightsError(f"{path}: storage {key!r} is not used by any tensor.")
        dtype, numel = storages[key]
        if 8 + numel * dtype.itemsize > file_size - file.tell():
            raise WeightsError(f"{path} is truncated: storage {key!r} is incomplete.")
        (saved_numel,) = struct.unpack("<q", file.read(8))
        if saved_numel != numel:
            raise WeightsError(
                f"{path}: storage {key!r} holds {saved_numel} elements, "
                f"its tensors expect {numel}."
            )
        arrays[key] = np.frombuffer(file.read(numel * dtype.itemsize), dtype=dtype)
    missing = set(storages) - set(arrays)
    if missing:
        raise WeightsError(f"{path}: storages {sorted(missing)} have no data.")
    return arrays


def _materialise(name, ref, arrays, path):
    """Applies a tensor's storage offset, shape and strides; returns a copy."""
    storage = arrays[ref.storage.key]
    storage = storage[ref.storage.offset : ref.storage.offset + ref.storage.numel]
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
    if last >= storage.size:
        raise WeightsError(f"{path}: tensor {name!r} reaches outside its storage.")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=[s * storage.itemsize for s in ref.strides],
    )
    return view.astype(storage.dtype.newbyteorder("="), order="C")


def read_legacy_checkpoint(path):
    """Reads a legacy PyTorch checkpoint holding a state dict.

    Args:
        path: str or `pathlib.Path`. The `.pth` file.

    Returns:
        A `dict` from parameter name to `np.ndarray` (a contiguous copy with the
        saved dtype and shape), in the order of the checkpoint.

    Raises:
        WeightsError: if the file is missing, in torch's zip format, not a legacy
            checkpoint, truncated, or asks the unpickler for anything but tensors.

    Example:
    >>> state = read_legacy_checkpoint("mobilenet_v2-b0353104.pth")
    >>> state["features.0.0.weight"].shape
    (32, 3, 3, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Checkpoint file not found: {path}")
    with open(path, "rb") as file:
        if file.read(4) == _ZIP_MAGIC:
            raise WeightsError(
                f"{path} is a zip-format PyTorch checkpoint (torch >= 1.6); only "
                "the legacy format can be read without torch. Re-save it with "
                "torch.save(state_dict, path, _use_new_zipfile_serialization=False)."
            )
        file.seek(0)
        try:
            unpickler = _RestrictedUnpickler(file, path)
            if unpickler.load() != _MAGIC_NUMBER:
                raise WeightsError(f"{path} is not a legacy PyTorch checkpoint.")
            if unpickler.load() != _PROTOCOL_VERSION:
                raise WeightsError(f"{path}: unsupported checkpoint protocol version.")
            if not unpickler.load().get("little_endian", False):
                raise WeightsError(f"{path} was saved on a big-endian machine.")
            state = unpickler.load()
            arrays = _read_storages(file, path, unpickler.load(), unpickler.storages)
        except (
            pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError,
            AttributeError, TypeError,
        ) as error:  # what a corrupt or hostile pickle raises
            raise WeightsError(f"{path} is not a readable checkpoint: {error}") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict.")
    result = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise WeightsError(f"{path}: entry {name!r} is not a tensor.")
        result[name] = _materialise(name, ref, arrays, path)
    return result
