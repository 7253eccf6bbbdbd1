"""How much memory a table takes, estimated before it is read and again before it is encoded.

A CSV is read whole into Python strings, then encoded into float32 features, one-hot for
each category. Either can outgrow the machine: a file of millions of rows, or a column of
hundreds of distinct values times many rows. Both are refused above ZOO_MEMORY_LIMIT
(zoo.spec.budget) with exit 2 and the estimate, before the memory is taken:

- before reading: the file's bytes, plus CELL_BYTES per cell (rows counted from the file's
  line ends, columns from its header) for its Python string and the two references to it
  (the row's list and the column's array). Measured on ames.csv (216,000 cells, 0.9 MB):
  12.2 MB at the peak, estimated 14.7 MB.
- before encoding, once the vocabularies are fitted: every row of both splits times the encoded
  width (a number 1, a category its values + 1) in float32, ENCODED_COPIES times (the
  per-column parts, their concatenation and the training tensor), once more under train.folds
  (each fold's own encoding); plus the model's parameters and a batch's activations at that width.
"""

from __future__ import annotations

import csv
from pathlib import Path

from zoo.core.errors import UsageError
from zoo.spec import budget

CELL_BYTES = 64
ENCODED_COPIES = 3
CHUNK = 1 << 20


def file_shape(path: Path) -> tuple[int, int]:
    """(data rows, columns) of a CSV, from its line ends and its header, reading 1 MiB at a time.
    (A quoted cell holding a line end counts as a row more: an estimate errs on the safe side.)"""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader([f.readline()]), [])
        lines, last = 0, b"\n"
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0, 0  # the reader says what is wrong with the file, in its own words
    return max(lines + (last != b"\n") - 1, 0), len(header)


def check_file(path: Path) -> None:
    """UsageError (exit 2) when reading the CSV would take more than the limit."""
    rows, columns = file_shape(path)
    size = path.stat().st_size if path.is_file() else 0
    needed, limit = size + rows * columns * CELL_BYTES, budget.memory_limit()
    if needed > limit:
        raise UsageError(f"{path}: " + budget.over_limit_message(
            f"reading this table ({rows:,} rows x {columns:,} columns, {budget.human(size)})", needed, limit))


def check_encoded(prep, rows: int, spec, source) -> None:
    """UsageError (exit 2) when the encoded features of `rows` rows under the fitted `prep`
    (tabular.Preprocessing), with the model at that width, would take more than the limit."""
    width, limit = prep.width, budget.memory_limit()
    copies = ENCODED_COPIES + (1 if spec.train.folds else 0)
    parts = {"data": rows * width * 4 * copies,
             **{k: v for k, v in budget.estimate(spec, features=width).items() if k != "data"}}
    needed = sum(parts.values())
    if needed <= limit:
        return
    widest = max(prep.columns, key=lambda c: c.width)
    said = ", ".join(f"{k} {budget.human(v)}" for k, v in parts.items())
    raise UsageError(f"{source}: " + budget.over_limit_message(
        f"this table encoded ({rows:,} rows x {width:,} features, {widest.width:,} of them one-hot slots of "
        f"column {widest.name!r}; {said})", needed, limit)
        + f"; or drop a wide column (data.columns: {{\"{widest.name}\": \"drop\"}})")
