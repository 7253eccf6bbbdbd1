"""Run an exported model with onnxruntime alone: no TensorFlow, so it starts fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.core.arrays import csv_numbers, exact_cast, read_csv_rows, read_tensor_proto
from zoo.core.contract import PREDICTIONS
from zoo.core.errors import DataError, UsageError, ZooError, io_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
NPY_MAGIC = b"\x93NUMPY"
# The pixel value standing for white in a dataset's images, where it is not an image file's 255:
# scikit-learn's digits are 0-16. An image given to such a model is rescaled (and `zoo predict` says so).
PIXEL_WHITE = {"digits": 16}


def image_reading(shape, dataset) -> str:
    """What `zoo predict` does with an image for a model taking `shape` trained on `dataset`
    (the model card's sentence); "" for a model that takes no images."""
    if len(shape) != 2:
        return ""
    white = PIXEL_WHITE.get(dataset, 255)
    scaled = (f"; its 0–255 values are rescaled to 0–{white}, the range of `{dataset}` (feed a .npy to give "
              f"values as they are)" if white != 255 else ", values as they are")
    return (f"an image is read as greyscale pixels 0–255 (colour as luminance); one of another size than "
            f"{shape[1]}×{shape[0]} is resized (bilinear){scaled}. Each resize or rescale is reported on stderr")


def read_input(path: Path, shape: list[int], dtype: str, *, dataset=None, log=None) -> np.ndarray:
    """A batch (n, *shape) of `dtype` from a .npy, an image, a .csv or a TensorProto .pb.

    Every value reaches the model exactly or the file is refused: DataError (exit 3)
    for content (not what the extension says, no examples, values that do not survive
    the cast to the model's dtype), UsageError (exit 2) for a missing file or an
    unknown extension. An image is the exception `image_reading` documents: resized to
    the model's input and rescaled to its training data's range (`dataset`), each change
    reported through `log`.
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"{path}: no such input file")
    readers = {".npy": _read_npy, ".csv": _read_csv, ".pb": read_tensor_proto,
               **{s: lambda p: _fit_image(p, _read_image(p, shape), shape, dataset, log) for s in IMAGE_SUFFIXES}}
    if suffix not in readers:
        raise UsageError(f"{path}: unknown input type {suffix!r}; give a .npy, .png/.jpg, .csv or .pb (TensorProto)")
    try:
        x = readers[suffix](path)
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    except ZooError:
        raise
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read as {suffix} ({type(e).__name__}: {first[:150]})") from None
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {x.dtype} values; expected numbers")
    if x.size == 0:
        raise DataError(f"{path}: holds no examples (shape {list(x.shape)}); give at least one")
    size = int(np.prod(shape))
    if list(x.shape) == shape:
        x = x[None]
    elif not (x.ndim >= 1 and int(np.prod(x.shape[1:])) == size and x.ndim in (2, len(shape) + 1)):
        raise DataError(f"{path}: shape {list(x.shape)} does not fit the model's input: one example of shape "
                        f"{shape} or a batch (n, {', '.join(map(str, shape))})")
    return exact_cast(x.reshape((len(x), *shape)), dtype, path)


def _read_npy(path):
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise DataError(f"{path}: is not a .npy file (it starts with {head!r}); save arrays with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: holds Python objects (a pickled object array), which zoo never loads; "
                            f"save a numeric array") from None
        raise


def _read_csv(path):
    """One example a line, every cell a number, no header."""
    rows = [row for row in read_csv_rows(path) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: holds no examples (the file is empty); give one example a line")
    return csv_numbers(rows, path)


def _read_image(path, shape):
    """Greyscale uint8 pixels, exactly, from an image in any mode.

    Each mode has one documented reading: 16-bit greyscale is scaled by 255/65535 and
    rounded; palette images are expanded to their colours; colour is converted to
    luminance (ITU-R 601, as Pillow's "L"); transparency is composited over black, the
    background of MNIST and Fashion-MNIST (fully transparent pixels read 0).
    """
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 2:
        raise DataError(f"{path}: an image fits only a model with 2-D inputs; this one takes {shape}")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise DataError(f"{path}: is not an image Pillow can read, whatever its extension says") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(img).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise DataError(f"{path}: {img.mode} pixel values from {a.min():g} to {a.max():g} are outside 16 bits")
        grey = a * (255.0 / 65535.0)
        alpha = None
    elif img.mode == "F":
        raise DataError(f"{path}: holds floating-point pixels (mode F); save it as 8- or 16-bit, or as .npy")
    else:
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        rgba = np.asarray(img.convert("RGBA" if has_alpha else "RGB")).astype(np.float64)
        grey = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
        alpha = rgba[..., 3] / 255.0 if has_alpha else None
    if alpha is not None:
        grey = grey * alpha  # over black
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def _fit_image(path, x, shape, dataset, log) -> np.ndarray:
    """An image's pixels resized to the model's input and rescaled to its data's range, as
    `image_reading` says; each change reported through `log`."""
    from PIL import Image

    log = log or (lambda message: None)
    if list(x.shape) != shape:
        log(f"{path}: resized {x.shape[1]}×{x.shape[0]} to the model's {shape[1]}×{shape[0]} (bilinear)")
        x = np.asarray(Image.fromarray(x).resize((shape[1], shape[0]), Image.BILINEAR))
    white = PIXEL_WHITE.get(dataset, 255)
    if white != 255:
        log(f"{path}: rescaled pixel values 0–255 to 0–{white}, the range the model was trained on ({dataset})")
        x = x.astype(np.float32) * np.float32(white / 255)
    return x


def predict_file(model_path, input_path, top_k=3, log=None) -> list[dict]:
    """Run model.onnx on an input file; `log` hears of any resize or rescale of an image."""
    from zoo.core.contract import LABELED_OUTPUT, META_SPEC, Contract
    from zoo.core.runtime import session

    def image_input(c):  # the dataset tells how an image becomes the model's input (digits: 0..16)
        spec = c.metadata.get(META_SPEC) if isinstance(c.metadata.get(META_SPEC), dict) else {}
        dataset = (spec.get("data") or {}).get("dataset") if isinstance(spec.get("data"), dict) else None
        return read_input(Path(input_path), list(c.input_shape), c.input_dtype, dataset=dataset, log=log)

    if Path(model_path).suffix == ".tflite":  # a LiteRT variant: the LiteRT interpreter runs it
        from zoo.stages.variants_verify import open_model

        c, run, _ = open_model(Path(model_path))
        out = dict(zip(c.outputs, run(list(c.outputs), image_input(c))))
    else:  # model.onnx, an ONNX variant or an .ort file
        sess = session(Path(model_path))
        c = Contract.from_session(sess, model_path)  # checks inputs, outputs and metadata first
        if c.is_table:  # one named input per column, read from a CSV by column name
            from zoo.stages.table_rows import table_feeds

            feeds = table_feeds(Path(input_path), c.columns)
        else:
            feeds = {sess.get_inputs()[0].name: image_input(c)}
        out = dict(zip(c.outputs, sess.run(list(c.outputs), feeds)))
    if not c.is_classifier:
        return [{"index": i, PREDICTIONS: row.tolist()} for i, row in enumerate(out[c.outputs[0]])]
    classes = c.labels()
    results = []
    for i, p in enumerate(out[LABELED_OUTPUT]):
        best = np.argsort(-p)[:max(1, top_k)]
        results.append({"index": i, "top": [
            {"class": int(k), "name": classes[k] if k < len(classes) else str(k), "probability": float(p[k])}
            for k in best]})
    return results


def format_predictions(results) -> str:
    lines = []
    for r in results:
        if PREDICTIONS in r:
            lines.append(f"[{r['index']}] " + ", ".join(f"{v:.6g}" for v in r[PREDICTIONS]))
        else:
            lines.append(f"[{r['index']}] " + "  ".join(f"{t['name']} {t['probability']:.3f}" for t in r["top"]))
    return "\n".join(lines)


def example_input(run: Path, spec) -> Path:
    """A file `zoo predict RUN/model.onnx FILE` takes for this run, for the next steps `zoo run` prints:
    test_data_set_0's input, or for a table the CSV it was trained from (its label column is
    ignored there like any extra column)."""
    from zoo.core.contract import test_data_name

    if not spec.is_table:
        return Path(run) / test_data_name("input", 0)
    from zoo.stages import tabular
    from zoo.stages.data import data_dir, recorded_data_dir, resolve_path

    if spec.data.dataset == "penguins":
        return tabular.penguins_csv()
    return resolve_path(spec.data.path, data_dir(recorded=recorded_data_dir(run)))
