"""Raw rows for a table model: a prediction CSV read into the graph's named, typed inputs.

Columns are matched by name (the CSV header's, as the training file spelled them; the
graph's safe input names work too), in any order; extra columns are ignored. A missing
column is a UsageError (exit 2) naming it; a number column holding text is a DataError
(exit 3) naming the line. Empty cells and `NA` are missing: NaN for numbers, "" for text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.core.errors import UsageError
from zoo.stages.tabular import is_missing, numbers, read_table


def table_feeds(path: Path, columns) -> dict[str, np.ndarray]:
    """ONNX feeds for `columns` ((input name, dtype, column name), ... : Contract.columns) from a CSV."""
    table = read_table(Path(path))
    feeds, gone = {}, []
    for name, dtype, column in columns:
        found = column if column in table.columns else name if name in table.columns else None
        if found is None:
            gone.append(column)
            continue
        if dtype == "float32":
            feeds[name] = numbers(table, found).astype(np.float32).reshape(-1, 1)
        else:
            cells = ["" if is_missing(c) else str(c) for c in table.columns[found]]
            feeds[name] = np.array(cells, dtype=object).reshape(-1, 1)
    if gone:
        raise UsageError(f"{path}: no column {', '.join(map(repr, gone))}; the model takes "
                         f"{', '.join(c for _, _, c in columns)} (extra columns are ignored)")
    return feeds
