"""Arrays in and out of files, read exactly or refused: the one place for casting an
example to the model's dtype, reading a CSV's cells and reading or writing a TensorProto.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoo.core.errors import DataError, io_error


def exact_cast(x: np.ndarray, dtype: str, source, name=None) -> np.ndarray:
    """x as `dtype` ("uint8" or "float32"), refusing any value the cast would change.

    Raises DataError naming `source` (and `name`, the array's, where given).
    """
    where = f"{source}: {name}" if name else f"{source}:"
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {x.dtype}; expected numbers")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where} holds NaN or inf values; clean the data first")
    if dtype == "uint8":
        if x.dtype == np.uint8:
            return x
        whole = np.array_equal(x, np.round(x))
        if x.size and (x.min() < 0 or x.max() > 255 or not whole):
            raise DataError(f"{where} the model takes uint8 pixel values 0..255; found {x.dtype} values from "
                            f"{x.min():g} to {x.max():g}{'' if whole else ' with fractions'} (a spec for "
                            f"real-valued inputs sets model.input_dtype to float32)")
        return x.astype(np.uint8)
    with np.errstate(over="ignore"):
        y = x.astype(np.float32, copy=False)
    if not np.isfinite(y).all():  # finite as float64, beyond float32's ±3.4e38
        bad = x[~np.isfinite(y)].flat[0]
        raise DataError(f"{where} holds {bad:g}, beyond float32's range (±3.4e38) the model computes in; "
                        f"rescale the data (data.preprocessing) or clean it")
    return y


def read_csv_rows(path: Path) -> list[list[str]]:
    """Every row of a CSV file as strings (UTF-8, with or without Excel's BOM). Raises DataError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot read as CSV: not a text CSV file (not UTF-8: {e.reason} at byte "
                        f"{e.start}); save it as UTF-8") from None
    except (OSError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None


def csv_numbers(rows: list[list[str]], source, header=None, first_line=1) -> np.ndarray:
    """The cells of `rows` as float64, one row each; DataError naming the line (and column) of a bad cell."""
    width = len(header) if header is not None else (len(rows[0]) if rows else 0)
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        line = first_line + i
        if len(row) != width:
            what = "the header has" if header is not None else "the first row has"
            raise DataError(f"{source}: line {line} has {len(row)} fields, {what} {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                column = f", column {header[j]!r}" if header is not None else f", field {j + 1}"
                what = "is empty" if not cell.strip() else f"is {cell[:30]!r}, not a number"
                raise DataError(f"{source}: line {line}{column} {what}") from None
    return values


def read_tensor_proto(path: Path) -> np.ndarray:
    """A TensorProto file (test_data_set_0/input_0.pb) as an array. Raises DataError."""
    from onnx import TensorProto, numpy_helper

    t = TensorProto()
    try:
        t.ParseFromString(Path(path).read_bytes())
        return numpy_helper.to_array(t)
    except OSError as e:
        raise io_error(path, e, "read") from None
    except Exception:
        raise DataError(f"{path}: is not a TensorProto (.pb as in test_data_set_0/)") from None


def tensor_proto_bytes(array: np.ndarray, name: str) -> bytes:
    """An array as a serialized TensorProto named `name`."""
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array), name).SerializeToString()
