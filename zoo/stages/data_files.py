"""The file formats datasets come in, read strictly: IDX (.gz), .npz (never unpickled) and numeric CSV.

Every failure is a `DataError` naming the file and what was found.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from zoo.core.arrays import csv_numbers, read_csv_rows
from zoo.core.errors import DataError, io_error

MAX_IDX_ITEMS = 10_000_000  # a header claiming more than this is corrupt, not big data


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzipped IDX file (uint8 data, the MNIST family's format).

    The header is read first and then at most the byte count it declares (plus one,
    to notice extra bytes), so a corrupt header or a gzip bomb cannot exhaust memory.
    """
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header")
            magic = struct.unpack(">I", head)[0]
            if magic != expected_magic:
                raise DataError(f"{path}: IDX magic number {magic}, expected {expected_magic}; is this the right file?")
            ndim = magic & 0xFF
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: header truncated")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            count = int(np.prod(dims, dtype=np.int64))
            if dims[0] > MAX_IDX_ITEMS or count > MAX_IDX_ITEMS * 28 * 28:
                raise DataError(f"{path}: header says {'x'.join(map(str, dims))}, more than any IDX dataset holds; the file is corrupt")
            raw = f.read(count + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip ({e}); delete it and download it again") from None
    if len(raw) != count:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} ({count:,} bytes) "
                        f"but the file holds {'more' if len(raw) > count else f'{len(raw):,}'}; the file is truncated or corrupt")
    return np.frombuffer(raw, np.uint8).reshape(dims)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a keras.datasets-style .npz; never unpickles."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with open(path, "rb") as raw:
            head = raw.read(64)
        problem = _not_an_npz(head)
        if problem:
            raise DataError(f"{path}: {problem}")
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; found {', '.join(f.files) or 'none'}. "
                                f"An .npz needs x_train, y_train, x_test, y_test")
            _check_npz_size(path, f, keys)
            return {k: f[k] for k in keys}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled Python objects, which zoo never loads; save plain numeric arrays") from None
        raise DataError(f"{path}: not a valid .npz ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise DataError(f"{path}: not a valid .npz ({type(e).__name__}: {e})") from None


def _not_an_npz(head: bytes) -> str | None:
    """What a file that is not an .npz (a zip of .npy arrays) is instead, from its first bytes."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if not head:
        return "is empty, not a valid .npz; one holds x_train, y_train, x_test, y_test (numpy.savez)"
    if head.startswith(b"\x93NUMPY"):
        return "is a single .npy array, not an .npz; save the four arrays with numpy.savez"
    if head[:1] == b"\x80":
        return "holds pickled Python objects, which zoo never loads; save plain numeric arrays"
    try:
        text = head.decode("utf-8")
        is_text = all(c.isprintable() or c in "\t\r\n" for c in text)
    except UnicodeDecodeError:
        is_text = False
    kind = "a text file" if is_text else "not an .npz (a zip archive of .npy arrays)"
    return f"is {kind}, whatever its name says (it starts with {head[:24]!r}); save arrays with numpy.savez"


def _check_npz_size(path: Path, f, keys) -> None:
    """Refuse arrays whose headers promise more than the memory limit, before reading them
    (a compressed .npz of zeros is small on disk and any size in memory)."""
    from zoo.spec import budget

    total = 0
    for k in keys:
        with f.zip.open(f"{k}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member, max_header_size=1 << 16)
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize * 2  # the array and its float32/tensor copy
    if total > budget.memory_limit():
        raise DataError(f"{path}: " + budget.over_limit_message("its arrays", total, budget.memory_limit()))


def read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels from a CSV with a header row."""
    rows = read_csv_rows(path)
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no column {label_column!r} (data.label_column); columns are {', '.join(header)}")
    try:
        values = csv_numbers(rows[1:], path, header=header, first_line=2)
    except DataError as e:  # text or an empty cell: the file is a table, which "dataset": "csv" is not
        if "not a number" in str(e) or "is empty" in str(e):
            raise DataError(f'{e}; for columns of text or with empty cells, use "dataset": "table" '
                            f"(README: Tables)") from None
        raise
    label = header.index(label_column)
    return np.delete(values, label, axis=1), values[:, label]
