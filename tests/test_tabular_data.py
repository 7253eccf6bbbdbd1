"""Tables before training: data.limit's rows are the rows the preprocessing is fitted on, the
memory a table will take is estimated before it is loaded, and `zoo check` without the CSV."""

import json

import numpy as np
import pytest

from zoo.core.errors import DataError
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


# ----- memory: estimated before the table is read, and before it is encoded --------------------

def _wide_table(tmp_path, rows=9000, distinct=900):
    """A table whose 'code' column has `distinct` values: rows x (distinct + 2) encoded features."""
    path = tmp_path / "wide.csv"
    path.write_text("code,x,kind\n" + "".join(f"c{i % distinct},{i % 7},{'xy'[i % 2]}\n" for i in range(rows)))
    return path


def test_a_wide_category_over_the_memory_limit_is_refused_before_encoding(tmp_path, monkeypatch):
    from zoo.core.errors import UsageError

    spec = _spec(_wide_table(tmp_path))
    # read: 9,000 rows x 3 cells ~ 1.8 MiB; encoded: 9,000 x 902 float32, three copies ~ 93 MiB
    monkeypatch.setenv("ZOO_MEMORY_LIMIT", "8MiB")
    with pytest.raises(UsageError) as e:
        load_dataset(spec)
    message = str(e.value)
    assert "\n" not in message and e.value.exit_code == 2
    for words in ("this table encoded (9,000 rows x 902 features, 901 of them one-hot slots of column 'code'",
                  "over the limit of 8.0 MiB", "ZOO_MEMORY_LIMIT=", '"code": "drop"'):
        assert words in message, message
    monkeypatch.setenv("ZOO_MEMORY_LIMIT", "256MiB")  # the limit is the user's to raise
    assert load_dataset(spec).x_train.shape == (6750, 902)
    monkeypatch.setenv("ZOO_MEMORY_LIMIT", "8MiB")  # or drop the column, as the message says
    assert load_dataset(_spec(tmp_path / "wide.csv", columns={"code": "drop"})).x_train.shape == (6750, 1)


def test_a_table_too_big_to_read_is_refused_before_a_cell_is_read(tmp_path, monkeypatch):
    from zoo.core.errors import UsageError

    path = tmp_path / "long.csv"  # a ragged row on line 3: reading it would say so
    path.write_text("a,b,kind\n1,2,x\n1,2\n" + "1,2,y\n" * 20_000)
    monkeypatch.setenv("ZOO_MEMORY_LIMIT", "512KiB")
    with pytest.raises(UsageError, match=r"reading this table \(20,002 rows x 3 columns, 117\.[0-9] KiB\) would take "
                                         r"an estimated 3\.8 MiB of memory, over the limit of 512\.0 KiB"):
        load_dataset(_spec(path))
    monkeypatch.delenv("ZOO_MEMORY_LIMIT")
    with pytest.raises(DataError, match="line 3 has 2 fields"):
        load_dataset(_spec(path))


def test_cli_refuses_a_table_over_the_memory_limit_with_exit_2(zoo, tmp_path):
    from conftest import write_spec

    data = {"version": 1, "name": "t", "model": {"kind": "softmax", "num_classes": 2},
            "data": {"dataset": "table", "path": str(_wide_table(tmp_path)), "label_column": "kind"}}
    done = zoo("run", write_spec(tmp_path, data), env={"ZOO_MEMORY_LIMIT": "8MiB"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"Error: {tmp_path / 'wide.csv'}: this table encoded (9,000 rows x 902 features")
    assert not (tmp_path / "exports" / "t" / "model.keras").exists()


# ----- zoo check before the data is there ---------------------------------------------------------

def test_cli_check_without_the_csv_validates_and_says_where_to_put_it(zoo, tmp_path):
    from conftest import SPECS, write_spec

    nowhere = tmp_path / "no-data"
    done = zoo("check", SPECS / "ames-linear.json", env={"ZOO_DATA_DIR": str(nowhere)})
    assert done.returncode == 0, done.stderr
    assert '"label_column": "price"' in done.stdout  # the resolved spec, as for any spec
    assert done.stdout.splitlines()[-1] == (
        f"columns of ames/ames.csv (label 'price'): inferred from the training split when the data is found; "
        f"it is not in the current directory nor in the data directory {nowhere}: set ZOO_DATA_DIR "
        f"(or --data-dir) to the folder that holds it")
    assert done.stderr == ""
    (nowhere / "ames").mkdir(parents=True)  # found there, the columns are read from it
    (nowhere / "ames" / "ames.csv").write_text("Order,PID,Lot.Area,Street,price\n"
                                               + "".join(f"{i},{i},{100 + i},{'ab'[i % 2]},{1000 + i}\n"
                                                         for i in range(1, 11)))
    done = zoo("check", SPECS / "ames-linear.json", "--data-dir", nowhere)
    assert done.returncode == 0, done.stderr
    assert "Street" in done.stdout and "categorical (inferred)" in done.stdout and "not in the" not in done.stdout
    # an invalid spec is still exit 2, with or without its data
    bad = {**json.loads((SPECS / "ames-linear.json").read_text()), "extra": 1}
    done = zoo("check", write_spec(tmp_path, bad), env={"ZOO_DATA_DIR": str(tmp_path / "elsewhere")})
    assert done.returncode == 2 and "extra" in done.stderr
