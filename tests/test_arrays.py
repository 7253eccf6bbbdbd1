"""zoo.core.arrays: the one exact cast, CSV reader and TensorProto reader zoo has."""

import numpy as np
import pytest

from zoo.core.arrays import csv_numbers, exact_cast, read_csv_rows, read_tensor_proto, tensor_proto_bytes
from zoo.core.errors import DataError


@pytest.mark.parametrize("x,dtype", [
    (np.array([0.0, 255.0]), "uint8"), (np.array([0, 7], np.int64), "uint8"), (np.array([2.0**100, -2.5]), "float32"),
    (np.array([3], np.uint8), "float32"),
])
def test_values_that_survive_the_cast_pass_exactly(x, dtype):
    y = exact_cast(x, dtype, "x.npy")
    assert y.dtype == np.dtype(dtype) and np.array_equal(y.astype(np.float64), x.astype(np.float64))


@pytest.mark.parametrize("x,dtype,words", [
    (np.array([256.0]), "uint8", "takes uint8 pixel values 0..255"),
    (np.array([-1]), "uint8", "from -1 to -1"),
    (np.array([0.5]), "uint8", "with fractions"),
    (np.array([np.nan]), "float32", "NaN or inf"),
    (np.array([1e39]), "float32", "beyond float32's range"),
    (np.array(["a"]), "float32", "expected numbers"),
])
def test_values_the_cast_would_change_are_refused_by_name(x, dtype, words):
    with pytest.raises(DataError) as e:
        exact_cast(x, dtype, "data.npz", "x_train")
    assert str(e.value).startswith("data.npz: x_train ") and words in str(e.value)


def test_csv_cells_are_numbers_or_named_by_line_and_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa,b\n1,2\n3,x\n".encode())
    rows = read_csv_rows(path)
    assert rows[0] == ["a", "b"]  # the BOM is gone
    assert csv_numbers(rows[1:2], path, header=rows[0], first_line=2).tolist() == [[1.0, 2.0]]
    with pytest.raises(DataError, match=r"line 3, column 'b' is 'x', not a number"):
        csv_numbers(rows[1:], path, header=rows[0], first_line=2)
    with pytest.raises(DataError, match="line 1 has 3 fields, the first row has 2"):
        csv_numbers([["1", "2"], ["1", "2", "3"]], path, first_line=0)
    with pytest.raises(DataError, match="no such file"):
        read_csv_rows(tmp_path / "absent.csv")
    (tmp_path / "latin1.csv").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_csv_rows(tmp_path / "latin1.csv")


def test_a_tensor_proto_round_trips_and_garbage_is_refused(tmp_path):
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "x.pb").write_bytes(tensor_proto_bytes(x, "input"))
    assert np.array_equal(read_tensor_proto(tmp_path / "x.pb"), x)
    (tmp_path / "bad.pb").write_text("plain text")
    with pytest.raises(DataError, match="is not a TensorProto"):
        read_tensor_proto(tmp_path / "bad.pb")
