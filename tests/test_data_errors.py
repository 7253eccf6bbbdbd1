"""Corrupt, truncated, mismatched and hostile data files: each is one DataError naming the file.

`zoo.data.load_dataset` is called on fake data folders built in tmp_path (small IDX
files written here, or the real files copied and damaged). A DataError's message must
name the file and say what is wrong; nothing else may escape, and an .npz is never
unpickled. The last tests run `zoo train` on a corrupt file: exit 3, one line, no
traceback, and no training output.
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import spec_dict, write_spec

from zoo.core.errors import DataError
from zoo.spec import validate
from zoo.stages.data import load_dataset

IMAGES, LABELS = 2051, 2049
FASHION = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An uncompressed IDX file: magic, dims (big-endian uint32), uint8 data."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def fashion_dir(tmp_path: Path, n_train=20, n_test=10) -> Path:
    """A valid, tiny Fashion-MNIST folder; tests then damage one file."""
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(rng.integers(0, 256, (n, 28, 28)), IMAGES))
        write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(rng.integers(0, 10, n), LABELS))
    return folder.parent


def fashion_spec():
    return validate(spec_dict("fashion-mnist-softmax"))


def npz_spec(path, **model):
    d = spec_dict("mnist10k-mlp")
    d["data"]["path"] = str(path)
    d["model"].update(model)
    return validate(d)


def csv_spec(path, num_classes=3, features=2):
    return validate({"version": 1, "name": "csv-test",
                     "model": {"kind": "softmax", "input_shape": [features], "num_classes": num_classes},
                     "data": {"dataset": "csv", "path": str(path), "test_fraction": 0.25}})


def assert_data_error(spec, directory, file, *words):
    """load_dataset raises one DataError whose single line names `file` and every word."""
    with pytest.raises(DataError) as e:
        load_dataset(spec, directory)
    message = str(e.value)
    assert str(file) in message, f"{file} not named in: {message}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    assert "\n" not in message
    return message


# ----- IDX (.gz) files --------------------------------------------------------------------

def test_valid_tiny_fashion_folder_loads(tmp_path):
    """The baseline the damage is done to: it loads, so each failure below is the damage's."""
    d = load_dataset(fashion_spec(), fashion_dir(tmp_path))
    assert d.x_train.shape == (20, 28, 28) and d.y_test.shape == (10,)


def _truncate_gzip(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _garbage(path):
    path.write_bytes(np.random.default_rng(1).bytes(3000))


def _empty(path):
    path.write_bytes(b"")


def _empty_gzip(path):
    write_gz(path, b"")


def _header_only(path):
    write_gz(path, struct.pack(">II", IMAGES, 20))


def _truncated_payload(path):
    raw = gzip.decompress(path.read_bytes())
    write_gz(path, raw[:-100])


def _extra_payload(path):
    write_gz(path, gzip.decompress(path.read_bytes()) + b"\0" * 784)


def _wrong_magic(path):
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[:4] = struct.pack(">I", LABELS)  # a labels header on an images file
    write_gz(path, bytes(raw))


def _huge_claim(path):
    write_gz(path, struct.pack(">IIII", IMAGES, 4_000_000_000, 28, 28) + b"\0" * 784)


def _flipped_crc(path):
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the gzip trailer's CRC32
    path.write_bytes(bytes(raw))


IDX_DAMAGE = {
    "truncated_gzip": (_truncate_gzip, ["corrupt or truncated gzip"]),
    "garbage_bytes": (_garbage, ["corrupt or truncated gzip"]),
    "empty_file": (_empty, ["too short"]),
    "empty_gzip": (_empty_gzip, ["too short"]),
    "header_only": (_header_only, ["header truncated"]),
    "truncated_payload": (_truncated_payload, ["truncated or corrupt"]),
    "extra_payload": (_extra_payload, ["truncated or corrupt"]),
    "wrong_magic": (_wrong_magic, ["magic number 2049", "expected 2051"]),
    "huge_header_claim": (_huge_claim, ["header says 4000000000x28x28"]),
    "bad_crc": (_flipped_crc, ["corrupt or truncated gzip"]),
}


@pytest.mark.parametrize("damage", sorted(IDX_DAMAGE))
def test_damaged_idx_images(tmp_path, damage):
    directory = fashion_dir(tmp_path)
    path = directory / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    fn, words = IDX_DAMAGE[damage]
    fn(path)
    assert_data_error(fashion_spec(), directory, path, *words)


def test_label_file_shorter_than_image_file(tmp_path):
    directory = fashion_dir(tmp_path)
    path = directory / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    write_gz(path, idx_bytes(np.zeros(7), LABELS))
    assert_data_error(fashion_spec(), directory, path, "7 labels for 10 images", "t10k-images-idx3-ubyte.gz")


def test_labels_out_of_range_in_idx(tmp_path):
    directory = fashion_dir(tmp_path)
    write_gz(directory / "fashion-mnist" / "train-labels-idx1-ubyte.gz", idx_bytes(np.full(20, 12), LABELS))
    assert_data_error(fashion_spec(), directory, directory / "fashion-mnist", "y_train", "labels from 12 to 12",
                      "[0, 10)")


def test_images_of_the_wrong_shape_in_idx(tmp_path):
    directory = fashion_dir(tmp_path)
    write_gz(directory / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((10, 27, 28)), IMAGES))
    assert_data_error(fashion_spec(), directory, directory / "fashion-mnist", "x_test", "[27, 28]", "[28, 28]")


def test_real_files_truncated(tmp_path, datasets):
    """The real Fashion-MNIST files, copied, with the test labels cut short and then cut mid-stream."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in FASHION:
        if name.startswith("t10k"):
            shutil.copy(datasets / "fashion-mnist" / name, folder / name)
        else:  # the big training files are only read, never changed: link them
            (folder / name).symlink_to(datasets / "fashion-mnist" / name)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    write_gz(labels, gzip.decompress(labels.read_bytes())[:-500])  # 9,500 labels, header says 10,000
    assert_data_error(fashion_spec(), tmp_path, labels, "header says 10000", "truncated")
    shutil.copy(datasets / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    images = folder / "t10k-images-idx3-ubyte.gz"
    _truncate_gzip(images)
    assert_data_error(fashion_spec(), tmp_path, images, "corrupt or truncated gzip")


# ----- .npz files -------------------------------------------------------------------------

def good_arrays(n=8, shape=(28, 28), dtype=np.uint8):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n, *shape)).astype(dtype), "y_train": rng.integers(0, 10, n),
            "x_test": rng.integers(0, 256, (4, *shape)).astype(dtype), "y_test": rng.integers(0, 10, 4)}


def test_valid_tiny_npz_loads(tmp_path):
    np.savez(tmp_path / "d.npz", **good_arrays())
    assert load_dataset(npz_spec(tmp_path / "d.npz"), tmp_path).x_train.shape == (8, 28, 28)


NPZ_CASES = {
    # name: (changes to good_arrays, words the message must hold)
    "pickled_object_array": ({"x_train": np.array([{"__reduce__": "os.system"}] * 8, dtype=object)}, ["pickled"]),
    "labels_negative": ({"y_train": np.array([-1, 0, 1, 2, 3, 4, 5, 6])}, ["y_train", "labels from -1", "[0, 10)"]),
    "labels_too_big": ({"y_test": np.array([0, 1, 2, 10])}, ["y_test", "to 10", "[0, 10)"]),
    "labels_fractional": ({"y_train": np.array([0.5] * 8)}, ["y_train", "non-integer"]),
    "labels_nan": ({"y_train": np.array([np.nan] * 8)}, ["y_train", "NaN"]),
    "labels_one_hot": ({"y_train": np.eye(10)[:8]}, ["y_train", "[8, 10]", "one integer class label"]),
    "labels_scalar": ({"y_train": np.array(3)}, ["y_train", "single number"]),
    "labels_too_few": ({"y_train": np.zeros(5, np.int64)}, ["y_train", "5 entries for 8 examples"]),
    "labels_text": ({"y_train": np.array(["cat"] * 8)}, ["y_train", "dtype", "expected numbers"]),
    "images_wrong_shape": ({"x_train": np.zeros((8, 28, 27), np.uint8)}, ["x_train", "[28, 27]", "[28, 28]"]),
    "images_flat_wrong_size": ({"x_test": np.zeros((4, 700), np.uint8)}, ["x_test", "[700]"]),
    "images_no_example_axis": ({"x_train": np.zeros(784, np.uint8)}, ["x_train", "shape []"]),
    "images_empty": ({"x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, np.int64)}, ["x_train", "empty"]),
    "images_nan": ({"x_train": np.full((8, 28, 28), np.nan, np.float32)}, ["x_train", "NaN"]),
    "images_inf": ({"x_test": np.full((4, 28, 28), np.inf)}, ["x_test", "NaN or inf"]),
    "images_out_of_uint8_range": ({"x_train": np.full((8, 28, 28), 300)}, ["x_train", "0..255"]),
    "images_complex": ({"x_train": np.zeros((8, 28, 28), complex)}, ["x_train", "complex"]),
    "images_text": ({"x_train": np.full((8, 28, 28), "a")}, ["x_train", "expected numbers"]),
    "images_structured": ({"x_train": np.zeros((8, 28, 28), dtype=[("a", "f4")])}, ["x_train", "expected numbers"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_arrays(tmp_path, case):
    changes, words = NPZ_CASES[case]
    path = tmp_path / "d.npz"
    np.savez(path, **{**good_arrays(), **changes})
    assert_data_error(npz_spec(path), tmp_path, path, *words)


def test_nan_in_float_features(tmp_path):
    """float32 inputs (no uint8 cast in the way): one NaN among 8x784 values is found."""
    arrays = good_arrays(dtype=np.float32)
    arrays["x_train"][5, 3, 7] = np.nan
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    assert_data_error(npz_spec(path, input_dtype="float32"), tmp_path, path, "x_train", "NaN")


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28)), images=np.zeros(1))
    assert_data_error(npz_spec(path), tmp_path, path, "missing arrays y_train, x_test, y_test", "found x_train, images")


def test_npz_with_no_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path)
    assert_data_error(npz_spec(path), tmp_path, path, "missing arrays", "found none")


def test_npz_member_that_is_a_pickle(tmp_path):
    """A hand-made archive whose .npy is a pickle stream that would run os.system: refused, not run."""
    path = tmp_path / "d.npz"
    evil = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    with zipfile.ZipFile(path, "w") as z:
        for key, value in good_arrays().items():
            buf = io.BytesIO()
            np.save(buf, value)
            z.writestr(f"{key}.npy", evil if key == "y_train" else buf.getvalue())
    with pytest.raises(DataError) as e:
        load_dataset(npz_spec(path), tmp_path)
    assert str(path) in str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_npz_header_claiming_terabytes(tmp_path):
    path = tmp_path / "d.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10**11, 28, 28)})
    buf.write(b"\0" * 784)
    with zipfile.ZipFile(path, "w") as z:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", buf.getvalue())
    assert_data_error(npz_spec(path), tmp_path, path, "would take an estimated")  # refused from its headers, before reading


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "directory"])
def test_npz_not_a_zip(tmp_path, damage):
    path = tmp_path / "d.npz"
    np.savez(path, **good_arrays())
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + np.random.default_rng(2).bytes(500))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    assert_data_error(npz_spec(path), tmp_path, path, "not a valid .npz" if damage != "directory" else "")


def test_npz_missing_file(tmp_path):
    assert_data_error(npz_spec("nowhere.npz"), tmp_path, "nowhere.npz", "no such file", str(tmp_path))


def test_real_npz_with_a_member_cut_out(tmp_path, mnist10k):
    """The real mnist-10k.npz rewritten without y_test."""
    path = tmp_path / "mnist-10k.npz"
    with zipfile.ZipFile(mnist10k / "mnist-10k.npz") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            if item.filename != "y_test.npy":
                dst.writestr(item, src.read(item))
    assert_data_error(npz_spec(path), tmp_path, path, "missing arrays y_test")


# ----- CSV files --------------------------------------------------------------------------

def write_csv(tmp_path, text, encoding="utf-8"):
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


GOOD_CSV = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 3}\n" for i in range(8))


def test_valid_csv_loads_with_or_without_bom(tmp_path):
    for text in (GOOD_CSV, "\ufeff" + GOOD_CSV):
        path = write_csv(tmp_path, text)
        d = load_dataset(csv_spec(path), tmp_path)
        assert len(d.x_train) + len(d.x_test) == 8 and d.x_train.shape[1:] == (2,)


CSV_CASES = {
    "missing_value": (GOOD_CSV.replace("3,6,0", "3,,0"), ["line 5", "column 'b' is empty"]),
    "missing_label": (GOOD_CSV.replace("3,6,0", "3,6,"), ["line 5", "column 'label' is empty"]),
    "text_in_numeric_column": (GOOD_CSV.replace("4,8,1", "4,eight,1"), ["line 6", "column 'b'", "'eight', not a number"]),
    "nul_byte": (GOOD_CSV.replace("4,8,1", "4,8\0,1"), ["line 6", "not a number"]),
    "short_row": (GOOD_CSV.replace("5,10,2", "5,10"), ["line 7", "2 fields", "header has 3"]),
    "long_row": (GOOD_CSV.replace("5,10,2", "5,10,2,9"), ["line 7", "4 fields"]),
    "no_label_column": (GOOD_CSV.replace("label", "target", 1), ["no column 'label'", "a, b, target"]),
    "header_only": ("a,b,label\n", ["header row and at least one data row"]),
    "empty": ("", ["header row"]),
    "nan_feature": (GOOD_CSV.replace("3,6,0", "3,nan,0"), ["NaN"]),
    "inf_feature": (GOOD_CSV.replace("3,6,0", "inf,6,0"), ["NaN or inf"]),
    "nan_label": (GOOD_CSV.replace("3,6,0", "3,6,nan"), ["NaN"]),
    "label_out_of_range": (GOOD_CSV.replace("3,6,0", "3,6,3"), ["labels from 0 to 3", "[0, 3)"]),
    "label_fractional": (GOOD_CSV.replace("3,6,0", "3,6,0.5"), ["non-integer"]),
    "wrong_feature_count": ("a,label\n" + "".join(f"{i},{i % 3}\n" for i in range(8)), ["shape [1]", "[2]"]),
    "too_few_rows": ("a,b,label\n1,2,0\n", ["too few", "test fraction"]),
    "huge_field": ("a,b,label\n" + "1," * 2 + "9" * 200_000 + "\n", ["cannot read as CSV"]),
    "latin1": (GOOD_CSV.replace("label", "labél").encode("latin-1"), ["cannot read as CSV"]),
    "utf16": (GOOD_CSV.encode("utf-16"), ["cannot read as CSV"]),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv(tmp_path, case):
    text, words = CSV_CASES[case]
    path = write_csv(tmp_path, text)
    assert_data_error(csv_spec(path), tmp_path, path, *words)


def test_csv_that_is_a_directory(tmp_path):
    path = tmp_path / "d.csv"
    path.mkdir()
    assert_data_error(csv_spec(path), tmp_path, path, "cannot read as CSV")


# ----- the CLI ----------------------------------------------------------------------------

def _assert_exit_3_before_training(done, run: Path, *words):
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    # nothing was trained: no epoch, no checkpoint, no model
    assert not (run / "history.json").exists()
    assert not list(run.glob("checkpoints/*"))
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()


@pytest.mark.slow
def test_cli_train_on_a_truncated_idx_file(zoo, tmp_path):
    directory = fashion_dir(tmp_path)
    path = directory / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    _truncate_gzip(path)
    done = zoo("train", "--epochs", "1", write_spec(tmp_path, spec_dict("fashion-mnist-softmax")),
               env={"ZOO_DATA_DIR": str(directory)})
    _assert_exit_3_before_training(done, tmp_path / "exports" / "fashion-mnist-softmax", str(path), "truncated gzip")


@pytest.mark.slow
def test_cli_train_on_a_pickled_npz(zoo, tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{**good_arrays(), "x_train": np.array([object()] * 8, dtype=object)})
    spec = spec_dict("mnist10k-mlp")
    spec["data"]["path"] = "evil.npz"
    done = zoo("train", "--epochs", "1", write_spec(tmp_path, spec))
    _assert_exit_3_before_training(done, tmp_path / "exports" / "mnist10k-mlp", "evil.npz", "pickled")
