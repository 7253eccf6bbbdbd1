"""Datasets: each loader returns a `Dataset` of numpy arrays, checked against the spec.

Fashion-MNIST and MNIST are read from a data directory in the layout keras.datasets
caches them in (`<dir>/fashion-mnist/*-ubyte.gz`, `<dir>/mnist.npz`); the directory is
`--data-dir`, else $ZOO_DATA_DIR, else keras's cache `~/.keras/datasets`. Only when
the files are absent are they downloaded, through keras.datasets.

Every failure is a `DataError`: one line naming the file, the field and what was found.
Files are never unpickled.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.core.arrays import csv_numbers, exact_cast, read_csv_rows
from zoo.core.errors import DataError, io_error
from zoo.spec import Spec

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
MAX_IDX_ITEMS = 10_000_000  # a header claiming more than this is corrupt, not big data


@dataclass
class Dataset:
    x_train: np.ndarray  # (examples, *input_shape), the model's input dtype
    y_train: np.ndarray  # int32 (examples,) for classifiers; float32 (examples, outputs) for linear
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] | None
    source: str  # what was read, for metrics.json and the model card

    def digest(self) -> str:
        """sha256 of the arrays as the model sees them: the data's identity in provenance.json."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()


def data_dir(explicit=None) -> Path:
    """--data-dir, else $ZOO_DATA_DIR, else keras's download cache."""
    chosen = explicit or os.environ.get("ZOO_DATA_DIR")
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


# ----- file formats ---------------------------------------------------------------------

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
    values = csv_numbers(rows[1:], path, header=header, first_line=2)
    label = header.index(label_column)
    return np.delete(values, label, axis=1), values[:, label]


# ----- the datasets ---------------------------------------------------------------------

def _fashion_mnist(directory: Path):
    folder = directory / "fashion-mnist"
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((folder / n).exists() for n in names):
        (x_train, y_train), (x_test, y_test) = _download("fashion_mnist", folder)
        return x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES, "keras.datasets.fashion_mnist"
    arrays = [read_idx(folder / n, 2051 if "images" in n else 2049) for n in names]
    for images, labels, n_img, n_lab in ((arrays[0], arrays[1], names[0], names[1]), (arrays[2], arrays[3], names[2], names[3])):
        if len(images) != len(labels):
            raise DataError(f"{folder / n_lab}: {len(labels):,} labels for {len(images):,} images in {n_img}; one file is truncated")
    return (*arrays, FASHION_MNIST_CLASSES, str(folder))


def _mnist(directory: Path):
    path = directory / "mnist.npz"
    if not path.exists():
        (x_train, y_train), (x_test, y_test) = _download("mnist", path)
        return x_train, y_train, x_test, y_test, DIGIT_CLASSES, "keras.datasets.mnist"
    a = read_npz(path)
    return a["x_train"], a["y_train"], a["x_test"], a["y_test"], DIGIT_CLASSES, str(path)


def _download(name, where):
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:  # no network, a proxy, a half-finished download
        raise DataError(f"{name}: not found at {where} and the download through keras.datasets failed "
                        f"({type(e).__name__}); put the files there or point ZOO_DATA_DIR (or --data-dir) at a folder that has them") from None


def _split(x, y, test_fraction, seed, source="data"):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    if n_test >= len(x):
        raise DataError(f"{source}: {len(x)} examples are too few to hold out a test fraction of {test_fraction}")
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _digits(spec: Spec):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' comes with scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x, y = d.images.astype("float32"), d.target
    return (*_split(x, y, spec.data.test_fraction, spec.train.seed), DIGIT_CLASSES, "sklearn.datasets.load_digits")


def synthetic_linear(w, b, noise, num_examples, seed):
    """d2l's synthetic_data: X ~ N(0, 1), y = Xw + b + N(0, noise^2). Returns float32 (X, y)."""
    rng = np.random.default_rng(seed)
    w = np.asarray(w, dtype="float64")
    x = rng.normal(0.0, 1.0, (num_examples, len(w)))
    y = x @ w + b + rng.normal(0.0, noise, num_examples)
    return x.astype("float32"), y.astype("float32").reshape(-1, 1)


def _synthetic(spec: Spec):
    from zoo.spec.schema import Synthetic

    p = spec.data.synthetic or Synthetic()
    x, y = synthetic_linear(p.w, p.b, p.noise, p.num_examples, spec.train.seed)
    return (*_split(x, y, spec.data.test_fraction, spec.train.seed), None, f"synthetic_linear(w={p.w}, b={p.b}, noise={p.noise})")


def resolve_path(path: str, directory: Path) -> Path:
    """A spec's data.path: as given (relative to the current directory), else in the data directory."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    if (directory / p).exists():
        return directory / p
    raise DataError(f"{path}: no such file in the current directory or in the data directory {directory} "
                    f"(set ZOO_DATA_DIR or --data-dir)")


def _user_file(spec: Spec, directory: Path):
    path = resolve_path(spec.data.path, directory)
    if spec.data.dataset == "npz":
        a = read_npz(path)
        return a["x_train"], a["y_train"], a["x_test"], a["y_test"], spec.model.class_names, str(path)
    x, y = read_csv(path, spec.data.label_column)
    return (*_split(x, y, spec.data.test_fraction, spec.train.seed, path), spec.model.class_names, str(path))


# ----- checks ---------------------------------------------------------------------------

def _check_x(x, name, spec: Spec, source):
    m = spec.model
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        raise DataError(f"{source}: {name} has dtype {getattr(x, 'dtype', type(x).__name__)}; expected numbers")
    shape = list(x.shape[1:])
    if shape != m.input_shape and not (int(np.prod(shape or [1])) == int(np.prod(m.input_shape)) and x.ndim == 2):
        raise DataError(f"{source}: {name} has examples of shape {shape}; the spec's model.input_shape is {m.input_shape}")
    x = x.reshape((len(x), *m.input_shape))
    if len(x) == 0:
        raise DataError(f"{source}: {name} is empty")
    return exact_cast(x, m.input_dtype, source, name)


def _check_y(y, name, n, spec: Spec, source):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "biuf":
        raise DataError(f"{source}: {name} has dtype {getattr(y, 'dtype', type(y).__name__)}; expected numbers")
    if y.ndim == 0:
        raise DataError(f"{source}: {name} is a single number; expected one label per example ({n:,})")
    if len(y) != n:
        raise DataError(f"{source}: {name} has {len(y):,} entries for {n:,} examples; the file is truncated or mismatched")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{source}: {name} holds NaN or inf values")
    if not spec.is_classifier:
        outputs = spec.num_outputs
        if y.size != n * outputs:
            raise DataError(f"{source}: {name} has shape {list(y.shape)}; expected {outputs} target(s) per example")
        return exact_cast(y.reshape(n, outputs), "float32", source, name)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"{source}: {name} has shape {list(y.shape)}; expected one integer class label per example")
    if y.dtype.kind == "f":
        if not (y == np.round(y)).all():
            raise DataError(f"{source}: {name} holds non-integer labels such as {y[y != np.round(y)][0]}; labels are class indices")
    lo, hi, k = int(y.min()), int(y.max()), spec.num_outputs
    if lo < 0 or hi >= k:
        raise DataError(f"{source}: {name} holds labels from {lo} to {hi}; expected integers in [0, {k}) "
                        f"(model.num_classes is {k})")
    return y.astype(np.int32)


def load_dataset(spec: Spec, directory=None) -> Dataset:
    """Load and check the data a spec names. Raises DataError."""
    directory = data_dir(directory)
    kind = spec.data.dataset
    if kind == "fashion_mnist":
        parts = _fashion_mnist(directory)
    elif kind == "mnist":
        parts = _mnist(directory)
    elif kind == "digits":
        parts = _digits(spec)
    elif kind == "synthetic_linear":
        parts = _synthetic(spec)
    else:
        parts = _user_file(spec, directory)
    x_train, y_train, x_test, y_test, class_names, source = parts
    x_train = _check_x(x_train, "x_train", spec, source)
    x_test = _check_x(x_test, "x_test", spec, source)
    y_train = _check_y(y_train, "y_train", len(x_train), spec, source)
    y_test = _check_y(y_test, "y_test", len(x_test), spec, source)
    if spec.data.limit:
        x_train, y_train = x_train[: spec.data.limit], y_train[: spec.data.limit]
    return Dataset(x_train, y_train, x_test, y_test, spec.model.class_names or class_names, source)
