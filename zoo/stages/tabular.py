"""Tables: a CSV of named numeric and text columns, with empty cells, read and encoded.

The rules, documented in the README ("Tables"):
- A cell that is empty or `NA` is missing.
- A column's kind is inferred from the training split (every present cell a number:
  numeric; otherwise categorical); `data.columns` overrides it or drops the column.
- Numeric: standardized with the training split's mean and std (std 0 -> 1), then a
  missing value becomes 0 (d2l's recipe).
- Categorical: one-hot over the training split's categories (sorted), plus one slot for
  "missing" (pandas' `get_dummies(dummy_na=True)`). A category never seen in training
  is all zeros: never an error, never another category.
- A classifier's text label gives class_names: the label's distinct values, sorted
  (numerically where all are numbers), unless model.class_names gives the order.
- Every fitted figure comes from the training split only (its first data.limit rows when the
  spec sets a limit: the rows the model trains on) and is written to the run as
  preprocessing.json (provenance-covered); export builds the ONNX preprocessing from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.core import files, provenance
from zoo.core.arrays import read_csv_rows
from zoo.core.contract import PREPROCESSING_FILE, RESERVED_NAMES
from zoo.core.errors import DataError, UsageError
from zoo.stages import table_memory

MISSING = ("", "NA")  # the cells read as missing values
MAX_CATEGORIES = 1000  # more distinct values than this in one column: an identifier or free text


def is_missing(cell: str) -> bool:
    return cell in MISSING


def safe_names(columns: list[str]) -> list[str]:
    """ONNX input names for CSV columns: every character outside [A-Za-z0-9_] becomes `_`, a
    leading digit (or an empty name) gets a `_` in front, and a name taken already (or one of
    the graph's outputs) gets `_2`, `_3`, ... appended."""
    taken, out = set(RESERVED_NAMES), []
    for name in columns:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not base or base[0].isdigit():
            base = "_" + base
        safe, n = base, 1
        while safe in taken:
            n += 1
            safe = f"{base}_{n}"
        taken.add(safe)
        out.append(safe)
    return out


# ----- reading --------------------------------------------------------------------------

@dataclass
class Table:
    """A CSV's cells as read: one array of strings per column, in the header's order."""

    source: str
    columns: dict[str, np.ndarray]  # name -> (rows,) object array of the cells
    lines: np.ndarray  # each row's line number in the file, for error messages

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, index) -> "Table":
        return Table(self.source, {k: v[index] for k, v in self.columns.items()}, self.lines[index])


def read_table(path: Path, source=None) -> Table:
    """A CSV file with a header row as a Table. DataError for a ragged row, a duplicate
    column name, a semicolon-delimited file or no data rows."""
    source = source or str(path)
    rows = read_csv_rows(path)
    while rows and not any(c.strip() for c in rows[-1]):  # trailing blank lines
        rows.pop()
    if not rows:
        raise DataError(f"{source}: is empty; a table needs a header row and data rows")
    header = rows[0]
    if len(header) == 1 and ";" in header[0]:
        raise DataError(f"{source}: the header is one field holding ';': the file is semicolon-delimited; "
                        f"zoo reads comma-separated CSV (re-save it with ',' as the delimiter)")
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{source}: the header names column {name!r} twice; rename one")
        seen.add(name)
    body, lines = [], []
    for i, row in enumerate(rows[1:], start=2):
        if not row:  # a blank line inside the file
            continue
        if len(row) != len(header):
            raise DataError(f"{source}: line {i} has {len(row)} fields, the header has {len(header)}")
        body.append(row)
        lines.append(i)
    if not body:
        raise DataError(f"{source}: has a header but no data rows")
    cells = np.array(body, dtype=object).reshape(len(body), len(header))
    return Table(source, {name: cells[:, j] for j, name in enumerate(header)}, np.array(lines))


def numbers(table: Table, name: str, what="numeric column") -> np.ndarray:
    """A column's cells as float64, NaN where missing; DataError naming the first cell that is
    not a number."""
    cells = table.columns[name]
    out = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if is_missing(cell):
            continue
        try:
            out[i] = float(cell)
        except ValueError:
            fix = f'; fix the cell, or declare the column (data.columns: {{"{name}": "categorical"}})'
            raise DataError(f"{table.source}: line {table.lines[i]}, {what} {name!r} is {cell[:30]!r}, "
                            f"not a number{fix if what == 'numeric column' else ''}") from None
    return out


# ----- fitting --------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One feature column and what was fitted to it on the training split."""

    name: str  # as in the CSV header
    input: str  # the ONNX input's name (safe_names)
    kind: str  # "numeric" or "categorical"
    mean: float = 0.0  # numeric
    std: float = 1.0  # numeric
    categories: tuple[str, ...] = ()  # categorical, sorted; then one slot for missing

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories) + 1


@dataclass(frozen=True)
class Preprocessing:
    """The fitted preprocessing of a table: what preprocessing.json holds."""

    columns: tuple[Column, ...]
    label: str
    class_names: tuple[str, ...] = ()
    target_transform: str | None = None
    inferred: dict = field(default_factory=dict, compare=False)  # column -> "inferred"/"spec"/"dropped"

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def to_json(self) -> dict:
        cols = [{"name": c.name, "input": c.input, "kind": c.kind,
                 **({"mean": c.mean, "std": c.std} if c.kind == "numeric" else {"categories": list(c.categories)})}
                for c in self.columns]
        return {"label": self.label, "class_names": list(self.class_names),
                "target_transform": self.target_transform, "missing": list(MISSING),
                "unknown_category": "all zeros", "columns": cols, "how_each_column_was_chosen": self.inferred}

    @classmethod
    def from_json(cls, d: dict) -> "Preprocessing":
        cols = tuple(Column(c["name"], c["input"], c["kind"], float(c.get("mean", 0.0)), float(c.get("std", 1.0)),
                            tuple(c.get("categories", ()))) for c in d["columns"])
        return cls(cols, d["label"], tuple(d.get("class_names") or ()), d.get("target_transform"),
                   d.get("how_each_column_was_chosen") or {})

    def encode(self, table: Table) -> np.ndarray:
        """The float32 features (rows, width) the Keras model takes; the same arithmetic as
        the ONNX preprocessing graph (zoo.stages.tabular_onnx)."""
        parts = []
        for c in self.columns:
            if c.kind == "numeric":
                x = numbers(table, c.name).astype(np.float32)
                z = (x - np.float32(c.mean)) / np.float32(c.std)
                parts.append(np.where(np.isnan(x), np.float32(0), z).reshape(-1, 1))
            else:
                parts.append(one_hot(table.columns[c.name], c.categories))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def feeds(self, table: Table) -> dict[str, np.ndarray]:
        """The ONNX model's inputs for `table`'s rows: [rows, 1] strings or float32 (NaN = missing)."""
        out = {}
        for c in self.columns:
            if c.kind == "numeric":
                out[c.input] = numbers(table, c.name).astype(np.float32).reshape(-1, 1)
            else:
                out[c.input] = np.array([str(v) for v in table.columns[c.name]], dtype=object).reshape(-1, 1)
        return out


def one_hot(cells: np.ndarray, categories) -> np.ndarray:
    """(rows, len(categories) + 1) float32: a category's slot, the last for missing, all zeros if unknown."""
    index = {v: i for i, v in enumerate(categories)}
    missing = len(categories)
    out = np.zeros((len(cells), len(categories) + 1), np.float32)
    for r, cell in enumerate(cells):
        i = missing if is_missing(cell) else index.get(cell)
        if i is not None:
            out[r, i] = 1.0
    return out


def _infer_kind(table: Table, name: str) -> str:
    """numeric when every present cell is a number; categorical when at least half are words;
    a DataError for a column of numbers with stray words."""
    present = [(i, c) for i, c in enumerate(table.columns[name]) if not is_missing(c)]
    if not present:
        raise DataError(f"{table.source}: column {name!r} is empty in every training row; drop it "
                        f'(data.columns: {{"{name}": "drop"}})')
    words = [(i, c) for i, c in present if not _is_number(c)]
    if not words:
        return "numeric"
    if len(words) < len(present) / 2:  # mostly numbers: a numeric column with stray words
        i, c = words[0]
        raise DataError(f"{table.source}: line {table.lines[i]}, column {name!r} is {c[:30]!r}, not a number, in a "
                        f"column of numbers ({len(words)} such cell(s)); fix the cell(s), or declare the column "
                        f'(data.columns: {{"{name}": "categorical"}})')
    return "categorical"


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def fit_column(table: Table, name: str, safe: str, kind: str) -> Column:
    """Fit one feature column on the training split's rows."""
    if kind == "numeric":
        x = numbers(table, name)
        present = x[~np.isnan(x)]
        if not len(present):
            raise DataError(f"{table.source}: column {name!r} is empty in every training row; drop it "
                            f'(data.columns: {{"{name}": "drop"}})')
        std = float(present.std())
        return Column(name, safe, kind, float(present.mean()), std if std > 1e-12 else 1.0)
    values = sorted({c for c in table.columns[name] if not is_missing(c)})
    if len(values) > MAX_CATEGORIES:
        raise DataError(f"{table.source}: column {name!r} has {len(values):,} distinct values in the training rows "
                        f"(a category may have at most {MAX_CATEGORIES:,}): an identifier or free text? drop it "
                        f'(data.columns: {{"{name}": "drop"}}), or declare it numeric if it holds numbers')
    return Column(name, safe, kind, categories=tuple(values))


def fit(table: Table, spec) -> Preprocessing:
    """Choose and fit every feature column on `table` (the training split)."""
    label, declared = spec.data.label_column, dict(spec.data.columns or {})
    unknown = [c for c in declared if c not in table.columns]
    if unknown:
        raise DataError(f"{table.source}: data.columns names {', '.join(map(repr, unknown))}, not a column of the "
                        f"file; its columns are {', '.join(table.columns)}")
    features = [n for n in table.columns if n != label and declared.get(n) != "drop"]
    if not features:
        raise DataError(f"{table.source}: no feature columns left besides the label {label!r}")
    inferred, cols = {}, []
    for name, safe in zip(features, safe_names(features)):
        kind = declared.get(name) or _infer_kind(table, name)
        inferred[name] = f"{kind} ({'spec' if name in declared else 'inferred'})"
        cols.append(fit_column(table, name, safe, kind))
    inferred.update({n: "dropped (spec)" for n, k in declared.items() if k == "drop"})
    return Preprocessing(tuple(cols), label, (), spec.data.target_transform, inferred)


# ----- labels ---------------------------------------------------------------------------

def class_names(table: Table, spec) -> tuple[str, ...]:
    """A classifier's classes from the label column of the whole file (see the module's doc)."""
    label, cells = spec.data.label_column, table.columns[spec.data.label_column]
    _no_missing_labels(table, label)
    values = set(cells)
    if len(values) < 2:
        raise DataError(f"{table.source}: the label column {label!r} has a single class ({next(iter(values))!r}); "
                        f"a classifier needs at least 2")
    names = spec.model.class_names
    if names is not None:
        if set(names) != values:
            raise DataError(f"{table.source}: model.class_names {sorted(names)} are not the label column's values "
                            f"{sorted(values)}")
        return tuple(names)
    ordered = sorted(values, key=float) if all(_is_number(v) for v in values) else sorted(values)
    if len(ordered) != spec.model.num_classes:
        raise DataError(f"{table.source}: the label column {label!r} has {len(ordered)} classes "
                        f"({', '.join(ordered[:10])}); model.num_classes is {spec.model.num_classes}")
    return tuple(ordered)


def labels(table: Table, spec, names: tuple[str, ...]) -> np.ndarray:
    """int32 class indices (classifiers) or float32 (rows, 1) targets, transformed (regression)."""
    label = spec.data.label_column
    _no_missing_labels(table, label)
    if names:
        index = {v: i for i, v in enumerate(names)}
        return np.array([index[c] for c in table.columns[label]], np.int32)
    y = numbers(table, label, "the label column")
    if spec.data.target_transform == "log":
        bad = np.flatnonzero(y <= 0)
        if len(bad):
            raise DataError(f"{table.source}: line {table.lines[bad[0]]}, label {label!r} is {y[bad[0]]:g}; "
                            f"target_transform 'log' needs positive targets")
        y = np.log(y)
    return y.astype(np.float32).reshape(-1, 1)


def _no_missing_labels(table: Table, label: str) -> None:
    cells = table.columns[label]
    gone = [i for i, c in enumerate(cells) if is_missing(c)]
    if gone:
        raise DataError(f"{table.source}: line {table.lines[gone[0]]}, the label column {label!r} is empty "
                        f"({len(gone)} row(s)); every row needs a label: remove those rows")


# ----- the dataset ----------------------------------------------------------------------

def penguins_csv() -> Path:
    """palmerpenguins' penguins.csv, found without importing the package (it imports pandas)."""
    import importlib.util

    found = importlib.util.find_spec("palmerpenguins")
    if found is None or not found.submodule_search_locations:
        raise DataError("dataset 'penguins' comes with the palmerpenguins package: pip install palmerpenguins")
    return Path(list(found.submodule_search_locations)[0]) / "data" / "penguins.csv"


@dataclass
class TableSplit:
    """A table dataset: the fitted preprocessing and the raw rows of each split."""

    prep: Preprocessing
    train: Table
    test: Table


def split_rows(n: int, test_fraction: float, seed: int, source) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: a seeded shuffle, as zoo.stages.data splits arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise DataError(f"{source}: {n} rows are too few to hold out a test fraction of {test_fraction}")
    return order[n_test:], order[:n_test]


def load_table(spec, path: Path):
    """(x_train, y_train, x_test, y_test, class_names, source, TableSplit) for a table spec."""
    table_memory.check_file(path)  # before a cell is read
    table = read_table(path)
    if spec.data.label_column not in table.columns:
        raise DataError(f"{path}: no column {spec.data.label_column!r} (data.label_column); columns are "
                        f"{', '.join(table.columns)}")
    names = class_names(table, spec) if spec.is_classifier else ()
    y = labels(table, spec, names)
    train, test = split_rows(len(table), spec.data.test_fraction, spec.train.seed, path)
    train = train[: spec.data.limit] if spec.data.limit else train  # what is fitted is what trains
    prep = fit(table.take(train), spec)
    table_memory.check_encoded(prep, len(train) + len(test), spec, path)  # before a feature is encoded
    prep = Preprocessing(prep.columns, prep.label, names, prep.target_transform, prep.inferred)
    split = TableSplit(prep, table.take(train), table.take(test))
    return (prep.encode(split.train), y[train], prep.encode(split.test), y[test], list(names) or None,
            str(path), split)


def read_preprocessing(run: Path) -> Preprocessing:
    """The run's fitted preprocessing (preprocessing.json), checked against its record."""
    if not (run / PREPROCESSING_FILE).exists():
        raise UsageError(f"{run}: no {PREPROCESSING_FILE}; train the run again (`zoo train {run}`)")
    provenance.check_chain(run, PREPROCESSING_FILE)
    return Preprocessing.from_json(files.read_json(run / PREPROCESSING_FILE))


UNKNOWN_CATEGORY = "zoo: a category never seen in training"


def edge_rows(prep: Preprocessing, test: Table) -> dict[str, Table]:
    """Rows for verify beyond the test split's: every cell missing (both spellings), every
    category unknown, numbers 10 standard deviations out (far outside
    the training range, short of overflowing a log target's exp), and small batches."""
    def row_table(name, cells_of):
        return Table(f"edge {name}", {c.name: np.array(cells_of(c), dtype=object) for c in prep.columns},
                     np.arange(len(cells_of(prep.columns[0]))))

    return {
        "missing": row_table("missing", lambda c: ["", "NA"]),
        "unknown": row_table("unknown", lambda c: [UNKNOWN_CATEGORY if c.kind != "numeric" else "0"] * 2),
        "extreme": row_table("extreme", lambda c: [str(c.mean + 10 * c.std), str(c.mean - 10 * c.std)]
                             if c.kind == "numeric" else [c.categories[0] if c.categories else "", ""]),
        "batch_1": test.take(slice(0, 1)),
        "batch_3": test.take(slice(0, 3)),
        "batch_7": test.take(slice(-7, None)),
    }
