"""Tables before training: data.limit's rows are the rows the preprocessing is fitted on, the
memory a table will take is estimated before it is loaded, and `zoo check` without the CSV."""

import numpy as np
import pytest

from zoo.spec import validate
from zoo.stages import tabular
from zoo.stages.data import load_dataset


def _spec(path, **data):
    return validate({"version": 1, "name": "t", "model": {"kind": "softmax", "num_classes": 2},
                     "data": {"dataset": "table", "path": str(path), "label_column": "kind", "test_fraction": 0.25,
                              **data}})


def test_data_limit_fits_the_preprocessing_on_the_limited_rows_only(tmp_path):
    n, limit = 40, 10
    train, _ = tabular.split_rows(n, 0.25, _spec("x.csv").train.seed, "x")
    kept = set(train[:limit].tolist())  # the training rows data.limit keeps, in the file's numbering
    rows = []
    for i in range(n):  # kept rows: red/blue, size i + 1; every other row: green, 1000 + i
        colour, size = (("red", "blue")[i % 2], i + 1) if i in kept else ("green", 1000 + i)
        rows.append(f"{colour},{'' if i == min(kept) else size},{'xy'[i % 2]}\n")
    path = tmp_path / "t.csv"
    path.write_text("colour,size,kind\n" + "".join(rows))

    d = load_dataset(_spec(path, limit=limit))
    colour, size = d.table.prep.columns
    assert colour.categories == ("blue", "red")  # green is only in rows the limit leaves out
    sizes = np.array([i + 1 for i in sorted(kept) if i != min(kept)], float)  # one kept size is missing
    assert size.mean == pytest.approx(sizes.mean()) and size.std == pytest.approx(sizes.std())
    assert len(d.x_train) == len(d.table.train) == limit  # the folds refit on these rows too
    assert d.x_train.shape[1] == 3 + 1
    whole = load_dataset(_spec(path)).table.prep  # without the limit: every training row
    assert "green" in whole.columns[0].categories and whole.columns[1].mean > 100
