"""A reader of TensorFlow's checkpoint format (V2, "tensor bundle"), in Python with numpy: no TensorFlow needed.

A checkpoint ``PREFIX`` is two kinds of file:

- ``PREFIX.index``: a sorted key/value table in LevelDB's "SSTable" layout (data blocks of prefix-compressed
  entries with restart points, an index block of block handles, a 48-byte footer ending in a magic number;
  every block followed by a compression byte and a masked CRC-32C). The key ``""`` holds a
  ``BundleHeaderProto`` (number of shards, byte order); every other key is a tensor name whose value is a
  ``BundleEntryProto`` (dtype, shape, shard, offset, size, CRC-32C of the bytes).
- ``PREFIX.data-0000K-of-0000N``: the shards, the tensors' raw bytes (little-endian) back to back.

Everything is checked: the table's magic number and block checksums, the protobuf fields, offsets inside
the shard files, sizes against dtype x shape, and (by default) the CRC-32C of every tensor read. Blocks
must be uncompressed (TensorFlow writes index files that way); string tensors and partitioned variables
are refused. Any inconsistency is a one-line :class:`TransformerXLError` naming the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import TransformerXLError

__all__ = ["TFCheckpoint", "TFTensorEntry", "crc32c", "masked_crc32c", "resolve_tf_prefix"]

_MAX_INDEX_BYTES = 1 << 30  # an index lists names and offsets: a few KB to MB
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_BYTES = 48
_TRAILER_BYTES = 5  # compression type byte + masked crc32c of (block contents + type byte)

# --------------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as LevelDB and TensorFlow compute it.
_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


def _crc32c_python(data: bytes | memoryview, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _apply(matrix: list[int], vector: int) -> int:
    """A 32x32 matrix over GF(2) (list of column words) times a 32-bit word."""
    out, j = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[j]
        vector >>= 1
        j += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """The matrix of ``a`` after ``b``."""
    return [_apply(a, column) for column in b]


def _zeros_operator(n_bytes: int) -> list[int]:
    """The linear map that appending ``n_bytes`` zero bytes applies to a CRC register (zlib's combine)."""
    one_bit = [_POLY] + [1 << (j - 1) for j in range(1, 32)]
    power = one_bit
    for _ in range(3):  # one zero byte = eight zero bits
        power = _compose(power, power)
    result = [1 << j for j in range(32)]  # identity
    while n_bytes:
        if n_bytes & 1:
            result = _compose(power, result)
        n_bytes >>= 1
        if n_bytes:
            power = _compose(power, power)
    return result


def _byte_tables(matrix: list[int]) -> np.ndarray:
    """(4, 256) tables: the operator applied to each byte value in each byte position of a word."""
    return np.array([[_apply(matrix, value << (8 * k)) for value in range(256)] for k in range(4)], dtype=np.uint32)


def _apply_tables(tables: np.ndarray, crcs: np.ndarray) -> np.ndarray:
    return (tables[0][crcs & 0xFF] ^ tables[1][(crcs >> 8) & 0xFF] ^ tables[2][(crcs >> 16) & 0xFF]
            ^ tables[3][crcs >> 24])


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data``. Large buffers are cut into 2**k equal lanes whose CRCs numpy computes side by
    side, one byte of every lane per step, then folds pairwise (crc(AB) = Z_|B|(crc(A)) xor crc(B), Z being
    the zero-appending operator), so a gigabyte takes seconds rather than minutes of Python."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < (1 << 15):
        return _crc32c_python(view)
    lanes = 1 << ((n // 4096).bit_length() - 1)  # a power of two, each lane 4096..8191 bytes long
    length = n // lanes
    columns = np.ascontiguousarray(np.frombuffer(view, dtype=np.uint8, count=lanes * length)
                                   .reshape(lanes, length).T)  # (length, lanes): step j reads byte j of all lanes
    crcs = np.full(lanes, 0xFFFFFFFF, dtype=np.uint32)
    for j in range(length):
        crcs = _TABLE_NP[(crcs ^ columns[j]) & 0xFF] ^ (crcs >> 8)
    crcs ^= np.uint32(0xFFFFFFFF)
    span = length
    while len(crcs) > 1:
        crcs = _apply_tables(_byte_tables(_zeros_operator(span)), crcs[0::2]) ^ crcs[1::2]
        span *= 2
    total = int(crcs[0])
    rest = view[lanes * length:]
    if len(rest):
        total = _apply(_zeros_operator(len(rest)), total) ^ _crc32c_python(rest)
    return total


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked form LevelDB and TensorFlow store (a CRC of data that holds CRCs stays informative)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------
# Protobuf wire format: just enough to read BundleHeaderProto and BundleEntryProto.
class _Corrupt(Exception):
    """Internal: the bytes do not parse; turned into a TransformerXLError naming the file."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("a varint runs past its field")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of a message."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("a 64-bit field runs past its message")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Corrupt("a length-delimited field runs past its message")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("a 32-bit field runs past its message")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# TensorFlow DataType enum -> (name, torch dtype or None when it cannot be read here)
_DTYPES: dict[int, tuple[str, torch.dtype | None]] = {
    1: ("float32", torch.float32), 2: ("float64", torch.float64), 3: ("int32", torch.int32),
    4: ("uint8", torch.uint8), 5: ("int16", torch.int16), 6: ("int8", torch.int8), 7: ("string", None),
    8: ("complex64", None), 9: ("int64", torch.int64), 10: ("bool", torch.bool), 14: ("bfloat16", torch.bfloat16),
    17: ("uint16", None), 18: ("complex128", None), 19: ("float16", torch.float16), 20: ("resource", None),
    21: ("variant", None), 22: ("uint32", None), 23: ("uint64", None),
}
_TORCH_BY_NAME = {name: dtype for name, dtype in _DTYPES.values()}


@dataclass(frozen=True)
class TFTensorEntry:
    """Where one tensor lies: its dtype name, shape and bytes (shard, offset, size) and their CRC-32C."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # unmasked; None when the writer stored none
    partitioned: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _parse_entry(name: str, value: bytes) -> TFTensorEntry:
    dtype_code, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for number, wire, field in _fields(value):
        if number == 1 and wire == 0:
            dtype_code = int(field)
        elif number == 2 and wire == 2:
            dims = []
            for dn, dw, dv in _fields(field):  # TensorShapeProto
                if dn == 2 and dw == 2:
                    size_of_dim = next((_signed64(int(v)) for n, w, v in _fields(dv) if n == 1 and w == 0), 0)
                    dims.append(size_of_dim)
                elif dn == 3 and dw == 0 and dv:
                    raise _Corrupt(f"tensor {name!r} has an unknown rank")
            if any(d < 0 for d in dims):
                raise _Corrupt(f"tensor {name!r} has a negative dimension {dims}")
            shape = tuple(dims)
        elif number == 3 and wire == 0:
            shard = int(field)
        elif number == 4 and wire == 0:
            offset = _signed64(int(field))
        elif number == 5 and wire == 0:
            size = _signed64(int(field))
        elif number == 6 and wire == 5:
            crc = int(field)
        elif number == 7 and wire == 2:
            sliced = True
    if offset < 0 or size < 0:
        raise _Corrupt(f"tensor {name!r} has a negative offset or size")
    dtype = _DTYPES.get(dtype_code, (f"dtype#{dtype_code}", None))[0]
    if crc is not None:
        rotated = (crc - _MASK_DELTA) & 0xFFFFFFFF
        crc = ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
    return TFTensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


# --------------------------------------------------------------------------------------------------
# The SSTable index.
def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if offset < 0 or end + _TRAILER_BYTES > len(data):
        raise _Corrupt(f"the {what} block lies past the end of the file (truncated?)")
    contents, kind = data[offset:end], data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(contents + bytes([kind])) != stored:
        raise _Corrupt(f"the checksum of the {what} block at byte {offset} does not match (damaged file)")
    if kind != 0:
        raise _Corrupt(f"the {what} block is compressed (type {kind}); only uncompressed index blocks are "
                       "supported, as TensorFlow writes them")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("a block is shorter than its restart count")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise _Corrupt("a block's restart array is larger than the block")
    out: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise _Corrupt("a block entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + length]))
        pos += length
    return out


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_BYTES:
        raise _Corrupt("shorter than a table footer (truncated?)")
    footer = data[-_FOOTER_BYTES:]
    if struct.unpack_from("<Q", footer, _FOOTER_BYTES - 8)[0] != _TABLE_MAGIC:
        raise _Corrupt("no table magic number at its end (truncated, or not a TensorFlow V2 checkpoint index)")
    meta_offset, meta_size, pos = _handle(footer)
    index_offset, index_size, _ = _handle(footer, pos)
    _block(data, meta_offset, meta_size, "meta-index")  # empty in checkpoint indexes; checksum checked all the same
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, "index")):
        offset, size, _ = _handle(handle)
        entries.extend(_block_entries(_block(data, offset, size, "data")))
    keys = [k for k, _ in entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise _Corrupt("its keys are not in order (damaged file)")
    return entries


# --------------------------------------------------------------------------------------------------
def resolve_tf_prefix(path: str | Path) -> Path:
    """The checkpoint prefix ``path`` names: ``PREFIX``, ``PREFIX.index``, a ``PREFIX.data-*`` file, or a folder
    holding one checkpoint (its ``checkpoint`` file's ``model_checkpoint_path``, else its only ``*.index``)."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "model_checkpoint_path":
                    name = value.strip().strip('"')
                    candidate = Path(name) if Path(name).is_absolute() else path / name
                    if Path(str(candidate) + ".index").is_file():
                        return candidate
                    candidate = path / Path(name).name  # a checkpoint file written on another machine
                    if Path(str(candidate) + ".index").is_file():
                        return candidate
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise TransformerXLError(f"no TensorFlow checkpoint in {path}: expected PREFIX.index and "
                                     "PREFIX.data-00000-of-0000N files")
        raise TransformerXLError(f"{path} holds {len(indexes)} checkpoints ({', '.join(p.stem for p in indexes[:4])}"
                                 f"...); pass one prefix, e.g. {path}/{indexes[0].stem}")
    if path.suffix == ".index":
        path = path.with_suffix("")
    elif ".data-" in path.name:
        path = path.with_name(path.name.split(".data-")[0])
    if not Path(str(path) + ".index").is_file():
        if path.is_file():
            raise TransformerXLError(f"{path} is not a TensorFlow V2 checkpoint (no {path.name}.index beside it); "
                                     "V1 single-file checkpoints are not supported")
        raise TransformerXLError(f"TensorFlow checkpoint not found: {path}.index does not exist")
    return path


class TFCheckpoint:
    """The tensors of a TensorFlow V2 checkpoint, listed from its index and read one by one on demand.

    >>> ckpt = TFCheckpoint("pretrained_xl/tf_wt103/model/model.ckpt-0")
    >>> ckpt.entries["transformer/r_w_bias"].shape
    >>> ckpt.read("transformer/r_w_bias")   # a torch tensor; CRC-32C checked
    """

    def __init__(self, path: str | Path) -> None:
        self.prefix = resolve_tf_prefix(path)
        self.index_path = Path(str(self.prefix) + ".index")
        size = self.index_path.stat().st_size
        if size > _MAX_INDEX_BYTES:
            raise TransformerXLError(f"{self.index_path} is {size:,} bytes, too large for a checkpoint index")
        data = self.index_path.read_bytes()
        try:
            table = _read_table(data)
            header = dict(table).get(b"")
            if header is None:
                raise _Corrupt("it has no bundle header")
            self.num_shards, endianness = 1, 0
            for number, wire, value in _fields(header):
                if number == 1 and wire == 0:
                    self.num_shards = int(value)
                elif number == 2 and wire == 0:
                    endianness = int(value)
            if endianness != 0:
                raise _Corrupt("it was written on a big-endian machine; only little-endian checkpoints are read")
            if not 1 <= self.num_shards <= 1 << 16:
                raise _Corrupt(f"it claims {self.num_shards} shards")
            self.entries: dict[str, TFTensorEntry] = {}
            for key, value in table:
                if key == b"" or key.startswith(b"\x00"):  # the header; slices of partitioned variables
                    continue
                name = key.decode("utf-8")
                self.entries[name] = _parse_entry(name, value)
        except _Corrupt as exc:
            raise TransformerXLError(f"cannot read {self.index_path}: {exc}") from None
        except UnicodeDecodeError:
            raise TransformerXLError(f"cannot read {self.index_path}: a tensor name is not UTF-8 (damaged "
                                     "file)") from None

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def read(self, name: str, *, verify: bool = True) -> Tensor:
        """The tensor ``name`` (a new CPU tensor), its size, bounds and, with ``verify``, CRC-32C checked."""
        entry = self.entries.get(name)
        if entry is None:
            raise TransformerXLError(f"{self.prefix} has no tensor {name!r}")
        torch_dtype = _TORCH_BY_NAME.get(entry.dtype)
        if entry.partitioned:
            raise TransformerXLError(f"{self.prefix}: {name} is a partitioned variable (saved in slices), which "
                                     "this reader does not support")
        if torch_dtype is None:
            raise TransformerXLError(f"{self.prefix}: {name} has dtype {entry.dtype}, which this reader does not "
                                     "support (numbers and booleans only)")
        itemsize = torch.empty((), dtype=torch_dtype).element_size()
        if entry.size != entry.numel * itemsize:
            raise TransformerXLError(f"cannot read {self.index_path}: {name} is {entry.size:,} bytes, but "
                                     f"{entry.dtype} {list(entry.shape)} needs {entry.numel * itemsize:,} (damaged "
                                     "index)")
        if not 0 <= entry.shard < self.num_shards:
            raise TransformerXLError(f"cannot read {self.index_path}: {name} names shard {entry.shard} of "
                                     f"{self.num_shards} (damaged index)")
        shard = self.shard_path(entry.shard)
        try:
            with open(shard, "rb") as handle:
                length = os.fstat(handle.fileno()).st_size
                if entry.offset + entry.size > length:
                    raise TransformerXLError(f"{shard} is {length:,} bytes, but {name} ends at byte "
                                             f"{entry.offset + entry.size:,}: the data file is truncated; "
                                             "download it again")
                handle.seek(entry.offset)
                raw = bytearray(entry.size)
                if handle.readinto(raw) != entry.size:
                    raise TransformerXLError(f"{shard} ended early while reading {name}; download it again")
        except FileNotFoundError:
            raise TransformerXLError(f"the data file {shard} of the checkpoint {self.prefix} is missing") from None
        if verify and entry.crc32c is not None and crc32c(raw) != entry.crc32c:
            raise TransformerXLError(f"{shard}: the bytes of {name} do not match their CRC-32C checksum; the "
                                     "file is damaged, download it again")
        if entry.numel == 0:
            return torch.empty(entry.shape, dtype=torch_dtype)
        return torch.frombuffer(raw, dtype=torch_dtype).reshape(entry.shape)
