"""Run an exported model with onnxruntime alone: no TensorFlow, so it starts fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError


def read_input(path: Path, shape: list[int], dtype: str) -> np.ndarray:
    """A batch (n, *shape) of `dtype` from a .npy, an image or a .csv."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"{path}: no such input file")
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
            x = _read_image(path, shape)
        elif suffix == ".csv":
            x = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        else:
            raise UsageError(f"{path}: unknown input type {suffix!r}; give a .npy, .png/.jpg or .csv")
    except UsageError:
        raise
    except ValueError as e:
        raise UsageError(f"{path}: cannot read ({str(e)[:150]})") from None
    except Exception as e:
        raise UsageError(f"{path}: cannot read ({type(e).__name__}: {str(e)[:150]})") from None
    if x.dtype.kind not in "biuf":
        raise UsageError(f"{path}: holds {x.dtype} values; expected numbers")
    size = int(np.prod(shape))
    if list(x.shape) == shape:
        x = x[None]
    elif x.ndim >= 1 and int(np.prod(x.shape[1:])) == size and x.ndim in (2, len(shape) + 1):
        pass
    else:
        raise UsageError(f"{path}: shape {list(x.shape)} does not fit the model's input: one example of shape "
                         f"{shape} or a batch (n, {', '.join(map(str, shape))})")
    x = x.reshape((len(x), *shape))
    if dtype == "uint8":
        if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x))):
            raise UsageError(f"{path}: the model takes uint8 pixel values 0..255; found {x.dtype} values "
                             f"from {x.min():g} to {x.max():g}")
        return x.astype(np.uint8)
    if not np.isfinite(x).all():
        raise UsageError(f"{path}: holds NaN or inf values")
    return x.astype(np.float32)


def _read_image(path, shape):
    from PIL import Image

    if len(shape) != 2:
        raise UsageError(f"{path}: an image fits only a model with 2-D inputs; this one takes {shape}")
    img = Image.open(path).convert("L")
    if list(img.size[::-1]) != shape:
        img = img.resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img)


def predict_file(model_path, input_path, top_k=3) -> list[dict]:
    from .contract import LABELED_OUTPUT, Contract
    from .verify import session

    c = Contract.from_onnx(Path(model_path))  # checks inputs, outputs and metadata first
    sess = session(Path(model_path))
    x = read_input(Path(input_path), list(c.input_shape), c.input_dtype)
    out = dict(zip(c.outputs, sess.run(list(c.outputs), {sess.get_inputs()[0].name: x})))
    if not c.is_classifier:
        return [{"index": i, "predictions": row.tolist()} for i, row in enumerate(out[c.outputs[0]])]
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
        if "predictions" in r:
            lines.append(f"[{r['index']}] " + ", ".join(f"{v:.6g}" for v in r["predictions"]))
        else:
            lines.append(f"[{r['index']}] " + "  ".join(f"{t['name']} {t['probability']:.3f}" for t in r["top"]))
    return "\n".join(lines)
