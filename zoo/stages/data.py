"""Datasets: each loader returns a `Dataset` of numpy arrays, checked against the spec.

Fashion-MNIST and MNIST are read from a data directory in the layout keras.datasets
caches them in (`<dir>/fashion-mnist/*-ubyte.gz`, `<dir>/mnist.npz`); the directory is
`--data-dir`, else $ZOO_DATA_DIR, else keras's cache `~/.keras/datasets`. Only when
the files are absent are they downloaded, through keras.datasets.

Every failure is a `DataError`: one line naming the file, the field and what was found.
Files are never unpickled.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.core.arrays import exact_cast
from zoo.core.errors import DataError
from zoo.spec import Spec
from zoo.stages.data_files import read_csv, read_idx, read_npz

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class Dataset:
    x_train: np.ndarray  # (examples, *input_shape), the model's input dtype
    y_train: np.ndarray  # int32 (examples,) for classifiers; float32 (examples, outputs) for linear
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] | None
    source: str  # what was read, for metrics.json and the model card
    table: object = None  # tables: zoo.stages.tabular.TableSplit (fitted preprocessing, raw rows)
    directory: str | None = None  # the data directory the files came from (absolute): metrics.json's data_dir

    def digest(self) -> str:
        """sha256 of the arrays as the model sees them: the data's identity in provenance.json."""
        import hashlib

        if getattr(self, "_digest", None) is None:  # a kept Dataset is hashed once
            h = hashlib.sha256()
            for a in (self.x_train, self.y_train, self.x_test, self.y_test):
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(np.ascontiguousarray(a).data)
            self._digest = h.hexdigest()
        return self._digest


# A process that trains many models on the same data (a sweep's worker) keeps what it loaded:
# key -> Dataset, the KEPT most recently used; None when datasets are not kept (every command).
_kept: dict | None = None
KEPT = 2


def keep_loaded(on: bool = True) -> None:
    """From now on, `load_dataset` gives the same (read-only) Dataset again for the same data and files."""
    global _kept
    _kept = {} if on else None


def keras_cache() -> Path:
    """Where keras.datasets downloads to (and zoo looks last)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def data_dir(explicit=None, recorded=None) -> Path:
    """--data-dir, else $ZOO_DATA_DIR, else the folder the run was trained from (`recorded`),
    else keras's download cache."""
    chosen = explicit or os.environ.get("ZOO_DATA_DIR") or recorded
    if chosen:
        return Path(chosen).expanduser()
    return keras_cache()


def recorded_data_dir(run) -> str | None:
    """The data directory a trained run's metrics.json records (None when it records none)."""
    from zoo.core.contract import METRICS_FILE
    from zoo.core.files import read_json

    if run is None or not (Path(run) / METRICS_FILE).is_file():
        return None
    try:
        return read_json(Path(run) / METRICS_FILE).get("data_dir")
    except Exception:  # an unreadable metrics.json is verify's and export's own error to report
        return None


# ----- the datasets ---------------------------------------------------------------------

FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _fashion_mnist(directory: Path):
    folder = directory / "fashion-mnist"
    names = list(FASHION_FILES)
    if not all((folder / n).exists() for n in names):
        (x_train, y_train), (x_test, y_test) = _download("fashion_mnist", folder, names)
        return x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES, "keras.datasets.fashion_mnist"
    arrays = [read_idx(folder / n, 2051 if "images" in n else 2049) for n in names]
    for images, labels, n_img, n_lab in ((arrays[0], arrays[1], names[0], names[1]), (arrays[2], arrays[3], names[2], names[3])):
        if len(images) != len(labels):
            raise DataError(f"{folder / n_lab}: {len(labels):,} labels for {len(images):,} images in {n_img}; one file is truncated")
    return (*arrays, FASHION_MNIST_CLASSES, str(folder))


def _mnist(directory: Path):
    path = directory / "mnist.npz"
    if not path.exists():
        (x_train, y_train), (x_test, y_test) = _download("mnist", directory, ["mnist.npz"])
        return x_train, y_train, x_test, y_test, DIGIT_CLASSES, "keras.datasets.mnist"
    a = read_npz(path)
    return a["x_train"], a["y_train"], a["x_test"], a["y_test"], DIGIT_CLASSES, str(path)


def _download(name, where: Path, files: list[str]):
    """keras.datasets' download of `name` into keras_cache(); DataError naming the real cause
    and the files looked for. A failed download leaves no empty folder behind."""
    import keras

    cache = keras_cache()
    made = [d for d in (cache, cache / name.replace("_", "-")) if not d.exists()]
    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:  # no network, a proxy, a half-finished download
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a partial download is keras's to resume
        raise DataError(f"{name}: {', '.join(files)} not found in {where}, and the download through "
                        f"keras.datasets failed: {download_cause(e)}; put the files there, or point ZOO_DATA_DIR "
                        f"(or --data-dir) at a folder that has them") from None


def download_cause(error: BaseException) -> str:
    """The reason a keras.datasets download failed, in words: no network, or the error's own first line."""
    import urllib.error

    cause = error.__context__ if isinstance(error.__context__, (urllib.error.URLError, OSError)) else error
    text = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
    if isinstance(cause, (urllib.error.URLError, ConnectionError, TimeoutError)) or "URL fetch failure" in text:
        reason = getattr(cause, "reason", cause)
        return f"no network connection ({reason})"
    return f"{type(cause).__name__}: {text}"


def _split(x, y, test_fraction, seed, source="data"):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    if n_test >= len(x):
        raise DataError(f"{source}: {len(x)} examples are too few to hold out a test fraction of {test_fraction}")
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # in scikit-learn's package: what load_digits reads


def digits_arrays():
    """scikit-learn's 8x8 digits: (images float32 0-16, labels), 1,797 of each.

    Read with NumPy from the file sklearn.datasets.load_digits reads (one row per image: its
    64 pixels, then its label), as load_digits reads it: importing scikit-learn costs ~0.7 s,
    ten times the read, in every process that loads the digits (a sweep's worker: its first
    trial waits for it). Where that file is not there, or not as expected, load_digits itself.
    """
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    if found is None:
        raise DataError("dataset 'digits' comes with scikit-learn: pip install scikit-learn")
    path = Path(next(iter(found.submodule_search_locations)), *DIGITS_FILE)
    with contextlib.suppress(OSError, ValueError):
        table = np.loadtxt(path, delimiter=",")
        if table.shape == (1797, 65):
            return table[:, :-1].reshape(-1, 8, 8).astype("float32"), table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype("float32"), d.target


def _digits(spec: Spec):
    x, y = digits_arrays()
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


def find_path(path: str, directory: Path) -> Path | None:
    """A spec's data.path: as given (relative to the current directory), else in the data
    directory; None when it is in neither."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    return directory / p if not p.is_absolute() and (directory / p).exists() else None


def resolve_path(path: str, directory: Path) -> Path:
    """find_path, or a DataError saying where it looked (an absolute path is the reader's to refuse)."""
    found = find_path(path, directory)
    if found is not None or Path(path).expanduser().is_absolute():
        return found or Path(path).expanduser()
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


def _directory_used(spec: Spec, directory: Path, source: str) -> str | None:
    """The absolute data directory the files were read from, for metrics.json (None: no files, or an absolute path)."""
    kind = spec.data.dataset
    if kind in ("fashion_mnist", "mnist"):
        return str((keras_cache() if source.startswith("keras.datasets") else directory).resolve())
    if kind in ("npz", "csv", "table") and not Path(spec.data.path).expanduser().is_absolute():
        return str(Path.cwd() if Path(spec.data.path).expanduser().exists() else directory.resolve())
    return None


def _kept_key(spec: Spec, directory: Path) -> str:
    """What a loaded Dataset depends on: the data settings (not preprocessing, which is in the model),
    the model's input and outputs, the seed where a split draws on it, and the files' sizes and times."""
    import json

    d, m = spec.data, spec.model
    split = d.dataset in ("digits", "synthetic_linear", "csv", "table", "penguins")
    paths = {"fashion_mnist": [directory / "fashion-mnist" / n for n in FASHION_FILES],
             "mnist": [directory / "mnist.npz"]}.get(d.dataset, [])
    if d.path:
        paths = [Path(d.path).expanduser(), directory / d.path]
    stats = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p.is_file()]
    return json.dumps([d.model_dump(exclude={"preprocessing"}, mode="json"), m.input_shape, m.input_dtype,
                       m.class_names, spec.num_outputs, spec.is_classifier, spec.train.seed if split else None,
                       str(directory), stats], sort_keys=True, default=str)


def load_dataset(spec: Spec, directory=None, run=None) -> Dataset:
    """Load and check the data a spec names. Raises DataError.

    The data directory is `directory`, else $ZOO_DATA_DIR, else the one the trained `run`
    recorded (metrics.json's data_dir), else keras's cache. After `keep_loaded()`, the
    same data is read once and its Dataset (arrays read-only) given again."""
    directory = data_dir(directory, recorded_data_dir(run))
    if _kept is None:
        return _load(spec, directory)
    key = _kept_key(spec, directory)
    dataset = _kept.pop(key, None) or _load(spec, directory)
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        a.flags.writeable = False  # shared by every trial of the process: nobody may change it
    _kept[key] = dataset  # most recently used last
    while len(_kept) > KEPT:
        del _kept[next(iter(_kept))]
    return dataset


def _load(spec: Spec, directory: Path) -> Dataset:
    kind = spec.data.dataset
    if spec.is_table:
        return _table(spec, directory)
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
    return Dataset(x_train, y_train, x_test, y_test, spec.model.class_names or class_names, source,
                   directory=_directory_used(spec, directory, source))


def _table(spec: Spec, directory: Path) -> Dataset:
    """A table (zoo.stages.tabular): features encoded with preprocessing fitted on the training split."""
    from zoo.stages import tabular

    path = tabular.penguins_csv() if spec.data.dataset == "penguins" else resolve_path(spec.data.path, directory)
    x_train, y_train, x_test, y_test, class_names, source, split = tabular.load_table(spec, path)  # data.limit applied
    return Dataset(x_train, y_train, x_test, y_test, class_names, source, table=split,
                   directory=_directory_used(spec, directory, source))
