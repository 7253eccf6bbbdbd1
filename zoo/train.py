"""Training: spec + data -> a trained model, its history, metrics, checkpoints and plots.

Speed: for models this small Keras's per-step overhead, not arithmetic, sets the
time. So the training set stays resident as tensors, batches are gathered in-graph
from a per-epoch permutation, and `steps_per_execution` runs many steps per call
(Keras compiles them into one while-loop), with XLA off on CPU, where it was slower
(measured: benchmarks/RESULTS.md, "XLA on CPU").

Reproducibility: the seed fixes the initial weights, and the permutation of epoch e
is a pure function of (seed, e), so a resumed run sees the same batches as an
uninterrupted one; TensorFlow op determinism is on.

Durability: after each epoch the checkpoint `checkpoints/epoch-NNNN.keras` is written
(atomically), then `history.json`; `--resume` continues from the epoch history.json
names. A NaN/inf loss stops training at once and keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import runs
from .errors import TrainingError, UsageError
from .spec import Spec

MIN_STEPS_PER_EXECUTION = 16  # steps per compiled call: amortizes Python overhead, keeps the progress bar live
KEEP_CHECKPOINTS = 2


def configure(device=None, seed=0):
    """Pick the device and make ops deterministic. Call before building models.

    TensorFlow op determinism stays on for the rest of the process (TF offers no
    scoped switch); a process that also trains outside zoo inherits it.

    Returns a short description of the device training runs on.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise TrainingError("--device gpu: TensorFlow sees no GPU here (check the CUDA driver "
                                "with nvidia-smi); use --device cpu or leave --device out")
        if device == "cpu" and gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass  # devices already initialized in this process; TF keeps its choice
            gpus = []
        tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)
        if gpus:
            return f"GPU:0 ({tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')})"
        return f"CPU ({os.cpu_count()} cores)"
    keras.utils.set_random_seed(seed)
    if backend == "jax":
        import jax

        devices = jax.devices()
        if device == "gpu" and devices[0].platform != "gpu":
            raise TrainingError("--device gpu: JAX sees no GPU here; use --device cpu")
        return f"{devices[0].platform.upper()}:0 ({devices[0].device_kind})"
    if backend == "torch":
        import torch

        if device == "gpu" and not torch.cuda.is_available():
            raise TrainingError("--device gpu: PyTorch sees no CUDA GPU here; use --device cpu")
        if torch.cuda.is_available() and device != "cpu":
            return f"GPU:0 ({torch.cuda.get_device_name(0)})"
        return f"CPU ({os.cpu_count()} cores)"
    return "CPU"


def make_optimizer(t):
    import keras

    kw = {"learning_rate": t.learning_rate}
    if t.weight_decay is not None:
        kw["weight_decay"] = t.weight_decay
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=t.momentum, **kw)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=t.momentum, **kw)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}[t.optimizer](**kw)


def steps_per_execution(steps_per_epoch):
    """The smallest divisor of steps_per_epoch that is at least MIN_STEPS_PER_EXECUTION.

    It must divide the epoch: Keras runs whole executions, so 235 steps at 32 a call
    would run 256 steps an epoch and shift every epoch's batches.
    """
    for d in range(MIN_STEPS_PER_EXECUTION, steps_per_epoch + 1):
        if steps_per_epoch % d == 0:
            return d
    return steps_per_epoch


def compile_model(model, spec: Spec, steps_per_epoch, optimizer=None):
    import keras

    if spec.is_classifier:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    backend = keras.backend.backend()
    model.compile(optimizer=optimizer or make_optimizer(spec.train), loss=loss, metrics=metrics,
                  # torch's trainer runs one step per call (Keras refuses more)
                  steps_per_execution=1 if backend == "torch" else steps_per_execution(steps_per_epoch),
                  # XLA was slower on CPU (benchmarks/RESULTS.md) and clashes with TF op
                  # determinism; jax always compiles.
                  jit_compile=backend == "jax")


def epoch_permutation(n, seed, epoch):
    """The order of the training set in `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _tf_batches(x, y, batch_size, seed, first_epoch, epochs):
    """tf.data over resident tensors: each epoch gathers batches in its permutation."""
    import tensorflow as tf

    xs, ys = tf.constant(x), tf.constant(y)
    n = len(x)

    def order(epoch):  # made lazily, one epoch at a time: memory does not grow with epochs
        indices = tf.numpy_function(lambda e: epoch_permutation(n, seed, int(e)).astype("int32"), [epoch], tf.int32)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(indices, [n])).batch(batch_size)

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(order)
    ds = ds.map(lambda idx: (tf.gather(xs, idx), tf.gather(ys, idx)), num_parallel_calls=1, deterministic=True)
    return ds.prefetch(4)


def _py_batches(x, y, batch_size, seed, first_epoch):
    """The same order for the jax and torch backends, as a keras PyDataset."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = first_epoch
            self.order = epoch_permutation(len(x), seed, self.epoch)

        def __len__(self):
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, i):
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            return x[idx], y[idx]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = epoch_permutation(len(x), seed, self.epoch)

    return Batches()


def _eval_batches(x, y, batch_size):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(max(batch_size, 1024)).prefetch(2)
    return (x, y)


def _callbacks(spec, run, history, state, quiet, tty, made_from):
    import keras

    class Epochs(keras.callbacks.Callback):
        """Checkpoint + history after each epoch; stop at once on a NaN/inf loss."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["nan"] = (state["epoch"] + 1, batch + 1, float(loss))
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if state.get("nan") or not all(math.isfinite(v) for v in logs.values()):
                state.setdefault("nan", (epoch + 1, "end", logs.get("loss", float("nan"))))
                self.model.stop_training = True
                return
            record = {"epoch": epoch + 1, **logs, "seconds": round(time.perf_counter() - self.started, 4)}
            ckpt = f"checkpoints/epoch-{epoch + 1:04d}.keras"
            with runs.artefact(run, ckpt, "train", extra=made_from) as tmp:
                self.model.save(tmp)
            history.append(record)
            runs.save_json(run, "history.json", history, "train", extra=made_from)  # commits the epoch
            for old in sorted((run / "checkpoints").glob("epoch-*.keras"))[:-KEEP_CHECKPOINTS]:
                runs.invalidate(run, f"checkpoints/{old.name}")
            state["epoch"] = epoch + 1
            if not quiet and not tty:
                print(format_epoch(record, spec.train.epochs), flush=True)

    return [Epochs()]


def format_epoch(record, epochs):
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds")]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


def load_checkpoint(path):
    """Load a .keras file with safe_mode on: a file carrying code (a Lambda) is refused."""
    import keras

    from .build import Standardize  # noqa: F401  (registers the layer for deserialization)

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such model file") from None
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise UsageError(f"{path}: refused: the model file carries Python code (a Lambda layer); "
                             f"zoo loads model files with safe_mode on") from None
        raise UsageError(f"{path}: not a loadable Keras model ({msg[:200]})") from None


def train(spec: Spec, run: Path, *, data_dir=None, resume=False, device=None, quiet=False, log=print) -> dict:
    """Train the model a spec describes into the run folder. Returns metrics.json's content.

    Raises DataError for bad data, TrainingError for a NaN/inf loss or a missing device.
    """
    import keras

    from . import build, data as data_mod, spec as spec_mod

    backend = keras.backend.backend()
    device_name = configure(device, spec.train.seed)
    dataset = data_mod.load_dataset(spec, data_dir)
    x_train, y_train = dataset.x_train, dataset.y_train
    validation = None
    if spec.train.validation == "test":
        validation = (dataset.x_test, dataset.y_test)
    elif isinstance(spec.train.validation, float):
        order = epoch_permutation(len(x_train), spec.train.seed, -1 % 2**31)
        n_val = max(1, int(len(x_train) * spec.train.validation))
        val, keep = order[:n_val], order[n_val:]
        validation = (x_train[val], y_train[val])
        x_train, y_train = x_train[keep], y_train[keep]

    bs, epochs, seed = spec.train.batch_size, spec.train.epochs, spec.train.seed
    steps = math.ceil(len(x_train) / bs)
    history = []
    first_epoch = 0
    if resume and (run / "history.json").exists():
        runs.check(run, "history.json")  # edited by hand? say so rather than resume from it
        history = runs.read_json(run / "history.json")
        first_epoch = len(history)
    if first_epoch:
        if first_epoch >= spec.train.epochs:
            log(f"{run}: already trained for {first_epoch} epochs (requested {spec.train.epochs}); nothing to resume")
        runs.check(run, f"checkpoints/epoch-{first_epoch:04d}.keras")
        model = load_checkpoint(run / "checkpoints" / f"epoch-{first_epoch:04d}.keras")
        compile_model(model, spec, steps, optimizer=model.optimizer)
        log(f"resuming {run.name} after epoch {first_epoch}")
    # first: the folder is a run from here on
    made_from = {"@spec": runs.save_text(run, "spec.json", spec_mod.dumps(spec), "train"), "@data": dataset.digest()}
    if not first_epoch:
        model = build.build_model(spec)
        build.adapt(model, x_train)
        compile_model(model, spec, steps)
        # A fresh start replaces the run: nothing of an earlier training may be taken
        # for this one's (export would otherwise find the old model beside a new history).
        runs.start_over(run)
        runs.save_json(run, "history.json", [], "train", extra=made_from)

    if backend == "tensorflow":
        batches = _tf_batches(x_train, y_train, bs, seed, first_epoch, epochs) if first_epoch < epochs else None
    else:
        batches = _py_batches(x_train, y_train, bs, seed, first_epoch)
    val_data = _eval_batches(*validation, bs) if validation is not None else None

    tty = sys.stdout.isatty()
    state = {"epoch": first_epoch}
    if not quiet:
        log(f"training {spec.name}: {len(x_train):,} examples, {epochs - first_epoch} epoch(s), "
            f"batch {bs}, {spec.train.optimizer} lr {spec.train.learning_rate}, on {device_name} ({backend})")
    started = time.perf_counter()
    if first_epoch < epochs:
        model.fit(batches, epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                  validation_data=val_data, shuffle=False, callbacks=_callbacks(spec, run, history, state, quiet, tty, made_from),
                  verbose=1 if tty and not quiet else 0)
    wall = time.perf_counter() - started
    if state.get("nan"):
        epoch, step, loss = state["nan"]
        kept = f"the checkpoint of epoch {state['epoch']} is kept" if state["epoch"] else "no epoch completed"
        raise TrainingError(f"loss became {loss} in epoch {epoch} (by step {step}): training diverged; "
                            f"lower the learning rate (now {spec.train.learning_rate}, try --learning-rate "
                            f"{spec.train.learning_rate / 10:g}); {kept}")

    if spec.train.validation == "test" and history:  # the last epoch already evaluated the test set
        test = {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_")}
    else:
        test = model.evaluate(*_as_eval(dataset.x_test, dataset.y_test, bs), verbose=0, return_dict=True)
    metrics = {
        "name": spec.name,
        "test": {k: float(v) for k, v in test.items()},
        "epochs": len(history),
        "train_examples": int(len(x_train)),
        "test_examples": int(len(dataset.x_test)),
        "wall_seconds": round(wall, 3),
        "samples_per_second": round(len(x_train) * (epochs - first_epoch) / wall, 1) if wall > 0 and epochs > first_epoch else None,
        "device": device_name,
        "backend": backend,
        "data": dataset.source,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": versions(),
    }
    if not spec.is_classifier:
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in model.get_layer("predictions").weights[:2])
        metrics["w"] = kernel.reshape(-1).tolist()
        metrics["b"] = bias.reshape(-1).tolist()
    with runs.artefact(run, "model.keras", "train", extra=made_from) as tmp:  # removes all made from an older model
        model.save(tmp)
    runs.save_json(run, "metrics.json", metrics, "train", inputs=["model.keras"])
    from . import plots

    with runs.artefact(run, "curves.png", "train", inputs=["history.json"]) as tmp:
        plots.curves(history, spec, tmp)
    if spec.is_classifier and len(spec.model.input_shape) == 2:
        logits = keras.ops.convert_to_numpy(model(dataset.x_test[:18], training=False))
        with runs.artefact(run, "predictions.png", "train", inputs=["model.keras"]) as tmp:
            plots.predictions(dataset.x_test[:18], dataset.y_test[:18], np.argmax(logits, axis=-1),
                              dataset.class_names, tmp)
    return metrics


def _as_eval(x, y, bs):
    data = _eval_batches(x, y, bs)
    return (data,) if not isinstance(data, tuple) else data


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("zoo", "keras", "tensorflow", "numpy", "jax", "torch", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
