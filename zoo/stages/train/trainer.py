"""Training: spec + data -> a trained model, its history, metrics, checkpoints and plots.

Speed: for models this small Keras's per-step overhead, not arithmetic, sets the
time. So on the TensorFlow backend zoo runs its own compiled epoch (CompiledEpochs):
the training set stays resident as tensors and one tf.function call gathers every
batch of an epoch from its permutation and applies the Keras optimizer, as a
hand-written TF loop does (benchmarks/train_bench.py measures both); the same call ends
by evaluating the validation set, resident too. XLA is off on CPU, where it was slower
(benchmarks/RESULTS.md, "XLA on CPU"). The jax and torch backends run `model.fit` one
epoch at a time (FitEpochs) in the same order.

Reproducibility: the seed fixes the initial weights, and the permutation of epoch e
is a pure function of (seed, e), so a resumed run sees the same batches as an
uninterrupted one; TensorFlow op determinism is on.

Durability: after each epoch the checkpoint `checkpoints/epoch-NNNN.keras` is written
(atomically), then `history.json` (on TensorFlow by EpochWriter, on a thread, while the
next epoch trains; the run waits for it before it ends, however it ends); `--resume`
continues from the epoch history.json names, refusing a spec whose model, data or seed
differ from the run's and applying changed optimizer settings for real (the optimizer is
rebuilt, its state carried). A NaN/inf loss stops training at once and keeps the last good
checkpoint.
Early stopping and the learning-rate schedule are functions of history.json and the
epoch number, so a resumed run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from zoo.core import backend as backend_mod
from zoo.core import files, provenance, runs
from zoo.core.contract import (
    CHECKPOINTS,
    CURVES_PNG,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_KERAS,
    PREDICTIONS,
    PREDICTIONS_PNG,
    SPEC_FILE,
)
from zoo.core.errors import DataError, TrainingError, UsageError
from zoo.spec import Spec, keys

MIN_STEPS_PER_EXECUTION = 16  # steps per compiled call: amortizes Python overhead, keeps the progress bar live
KEEP_CHECKPOINTS = 2


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


def learning_rate_at(t, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based) under train.schedule: a pure function of the spec."""
    sched = t.schedule
    if sched.kind == "step":
        return t.learning_rate * (0.1 if sched.gamma is None else sched.gamma) ** (epoch // (sched.step_size or 1))
    if sched.kind == "cosine":
        low = sched.min_learning_rate or 0.0
        return low + (t.learning_rate - low) * (1 + math.cos(math.pi * epoch / t.epochs)) / 2
    return t.learning_rate


def steps_per_execution(steps_per_epoch):
    """The smallest divisor of steps_per_epoch that is at least MIN_STEPS_PER_EXECUTION.

    (model.fit fallback only.) It must divide the epoch, so that a call never runs
    into the next epoch's batches.
    """
    for d in range(MIN_STEPS_PER_EXECUTION, steps_per_epoch + 1):
        if steps_per_epoch % d == 0:
            return d
    return steps_per_epoch


def _loss_and_metric(spec: Spec):
    import keras

    if spec.is_classifier:
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
    return keras.losses.MeanSquaredError(), keras.metrics.MeanAbsoluteError(name="mae")


def compile_model(model, spec: Spec, steps_per_epoch, optimizer=None):
    """Compile for saving (checkpoints carry the optimizer), evaluate and the fit fallback."""
    import keras

    loss, metric = _loss_and_metric(spec)
    backend = keras.backend.backend()
    model.compile(optimizer=optimizer or make_optimizer(spec.train), loss=loss, metrics=[metric],
                  # torch's trainer runs one step per call (Keras refuses more)
                  steps_per_execution=1 if backend == "torch" else steps_per_execution(steps_per_epoch),
                  # XLA was slower on CPU (benchmarks/RESULTS.md) and clashes with TF op
                  # determinism; jax always compiles.
                  jit_compile=backend == "jax")


def epoch_permutation(n, seed, epoch):
    """The order of the training set in `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


EVAL_BATCH = 4096


def tf_cast(value):
    import tensorflow as tf

    return tf.cast(value, tf.float32)


def len_of(x):
    """The batch size of a tensor, as float32 (in-graph)."""
    import tensorflow as tf

    return tf.cast(tf.shape(x)[0], tf.float32)


class CompiledEpochs:
    """TensorFlow backend: one tf.function call trains one whole epoch.

    The training set stays resident as tensors; the epoch's permutation comes in as
    an int32 tensor and a `tf.range` loop gathers each batch, runs the Keras model
    under a GradientTape and applies the Keras optimizer: what a hand-written TF loop
    does, with the spec's model, loss and optimizer. The loop stops at the first
    non-finite loss, before that step's update, and says which step it was.
    """

    def __init__(self, model, spec: Spec, x_train, y_train, validation=None):
        import tensorflow as tf

        self.model, self.spec = model, spec
        self.classifier = spec.is_classifier
        self.x, self.y = tf.constant(x_train), tf.constant(y_train)
        # the validation set, resident too: each epoch's call ends with its evaluation
        self.val = None if validation is None else (tf.constant(validation[0]), tf.constant(validation[1]))
        self.optimizer = model.optimizer
        self.optimizer.build(model.trainable_variables)
        opt = self.optimizer
        self.plain_sgd = (type(opt).__name__ == "SGD" and not opt.momentum and opt.weight_decay is None
                          and opt.clipnorm is None and opt.clipvalue is None and opt.global_clipnorm is None
                          and not opt.use_ema and not opt.gradient_accumulation_steps)
        # With op determinism on, tf.nn.sparse_softmax_cross_entropy_with_logits swaps its fused
        # kernel for log_softmax + a batched gather (the GPU kernel is not deterministic): more
        # ops every step and a longer trace. The CPU kernel is deterministic; use it there.
        self.fused_xent = not tf.config.list_logical_devices("GPU")
        self._epoch = tf.function(self._train_epoch, jit_compile=False, autograph=False)

    def _loss_and_metric(self, y, out):
        """(mean loss, summed accuracy or absolute error): plain TF ops, the math Keras's
        SparseCategoricalCrossentropy(from_logits) / MSE and accuracy / MAE compute."""
        import tensorflow as tf

        if self.classifier:
            if self.fused_xent:
                per_example = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=out, labels=y)[0]
            else:
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y, out)
            loss = tf.reduce_mean(per_example)
            right = tf.equal(tf.argmax(out, axis=-1, output_type=y.dtype), y)
            return loss, tf.reduce_sum(tf.cast(right, tf.float32))
        error = y - out
        return tf.reduce_mean(tf.square(error)), tf.reduce_sum(tf.reduce_mean(tf.abs(error), axis=-1))

    def _step(self, xb, yb):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = self.model(xb, training=True)
            loss, metric = self._loss_and_metric(yb, out)
        return loss, metric, tape.gradient(loss, self.model.trainable_variables)

    def _apply(self, grads):
        opt, variables = self.optimizer, self.model.trainable_variables
        if self.plain_sgd:  # what keras SGD.update_step does without momentum, in fewer ops to trace
            lr = tf_cast(opt.learning_rate)
            for v, g in zip(variables, grads):
                v.assign_sub(g * lr)
            opt.iterations.assign_add(1)
        else:
            opt.apply(grads, variables)

    def _train_epoch(self, order, batch_size):
        """The epoch's graph, written with tf.while_loop and tf.cond: the function is traced
        with autograph off, whose source-to-source conversion cost more than the trace itself
        (~0.2 s of the first epoch, benchmarks/RESULTS.md)."""
        import tensorflow as tf

        n = tf.shape(order)[0]
        steps = (n + batch_size - 1) // batch_size

        def more(step, loss_sum, metric_sum, bad_step, bad_loss):
            return tf.logical_and(step < steps, tf.equal(bad_step, 0))

        def train_step(step, loss_sum, metric_sum, bad_step, bad_loss):
            idx = order[step * batch_size:tf.minimum((step + 1) * batch_size, n)]
            loss, metric, grads = self._step(tf.gather(self.x, idx), tf.gather(self.y, idx))

            def update():
                self._apply(grads)
                return loss_sum + loss * len_of(idx), metric_sum + metric, bad_step, bad_loss

            def stop():  # before this step's update
                return loss_sum, metric_sum, step + 1, loss

            return (step + 1, *tf.cond(tf.math.is_finite(loss), update, stop))

        zero = tf.constant(0.0)
        _, loss_sum, metric_sum, bad_step, bad_loss = tf.while_loop(
            more, train_step, (tf.constant(0), zero, zero, tf.constant(0), zero))
        val_loss, val_metric = zero, zero
        if self.val is not None:  # (a Python branch: decided once, at tracing)
            xv, yv = self.val
            nv = tf.shape(xv)[0]

            def evaluate(start, loss_sum, metric_sum):
                end = tf.minimum(start + EVAL_BATCH, nv)
                loss, metric = self._eval_batch(xv[start:end], yv[start:end])
                return start + EVAL_BATCH, loss_sum + loss, metric_sum + metric

            _, val_loss, val_metric = tf.while_loop(lambda start, *_: start < nv, evaluate,
                                                    (tf.constant(0), zero, zero))
        return loss_sum, metric_sum, bad_step, bad_loss, val_loss, val_metric

    def _eval_batch(self, xb, yb):
        loss, metric = self._loss_and_metric(yb, self.model(xb, training=False))
        return loss * len_of(xb), metric

    def train_epoch(self, order, batch_size) -> dict:
        """Train one epoch in `order`. Returns its logs (with val_* after evaluating the
        validation set, in the same call, when there is one), or {"nan": (step, loss)}."""
        import tensorflow as tf

        loss_sum, metric_sum, bad_step, bad_loss, val_loss, val_metric = self._epoch(
            tf.constant(order, tf.int32), tf.constant(batch_size, tf.int32))
        if int(bad_step):
            return {"nan": (int(bad_step), float(bad_loss))}
        n, name = len(order), "accuracy" if self.classifier else "mae"
        logs = {"loss": float(loss_sum) / n, name: float(metric_sum) / n}
        if self.val is not None:
            nv = int(self.val[0].shape[0])
            logs.update({"val_loss": float(val_loss) / nv, f"val_{name}": float(val_metric) / nv})
        return logs

    def evaluate(self, x, y) -> dict:
        """Loss and accuracy (or MAE) over (x, y), eagerly in chunks of EVAL_BATCH.

        For the one-off evaluations (the test set after training). The per-epoch validation
        runs inside the epoch's tf.function instead (train_epoch): a tf.function of its own
        cost ~0.4 s of tracing, more than ten eager passes (benchmarks/RESULTS.md), while in
        the epoch's graph the forward pass adds little to the one trace.
        """
        import tensorflow as tf

        xs, ys = tf.constant(x), tf.constant(y)
        loss_sum, metric_sum = 0.0, 0.0
        for i in range(0, len(x), EVAL_BATCH):
            loss, metric = self._eval_batch(xs[i:i + EVAL_BATCH], ys[i:i + EVAL_BATCH])
            loss_sum += float(loss)
            metric_sum += float(metric)
        return {"loss": float(loss_sum) / len(x), ("accuracy" if self.classifier else "mae"): float(metric_sum) / len(x)}


class FitEpochs:
    """The jax and torch backends: one `model.fit(epochs=1)` per epoch, in the same order.

    Slower than CompiledEpochs (Keras's per-step overhead), but backend-neutral. Like it,
    an epoch ends by evaluating `validation` (here with model.evaluate) when there is one.
    """

    def __init__(self, model, spec: Spec, x_train, y_train, validation=None):
        self.model, self.spec, self.x, self.y = model, spec, x_train, y_train
        self.val = validation

    def train_epoch(self, order, batch_size) -> dict:
        import keras

        state = {}

        class StopOnNan(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    state["nan"] = (batch + 1, float(loss))
                    self.model.stop_training = True

        history = self.model.fit(self.x[order], self.y[order], batch_size=batch_size, epochs=1, shuffle=False,
                                 verbose=0, callbacks=[StopOnNan()])
        if state:
            return {"nan": state["nan"]}
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        if not math.isfinite(logs.get("loss", 0.0)):
            return {"nan": ("end", logs["loss"])}
        if self.val is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(*self.val).items()})
        return logs

    def evaluate(self, x, y) -> dict:
        return {k: float(v) for k, v in self.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True).items()}


def epoch_runner(model, spec: Spec, x_train, y_train, compiled=None, validation=None):
    """CompiledEpochs on TensorFlow, FitEpochs elsewhere (or when `compiled` is False); either
    ends each epoch by evaluating `validation` (x, y), when given, into its val_* logs."""
    import keras

    if compiled is None:
        compiled = keras.backend.backend() == "tensorflow"
    return (CompiledEpochs if compiled else FitEpochs)(model, spec, x_train, y_train, validation)


def format_epoch(record, epochs):
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4g}" if k == "learning_rate" else f"{k} {v:.4f}"
              for k, v in record.items() if k not in ("epoch", "seconds") and isinstance(v, float)]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


# ----- early stopping: its state is a function of history.json, so resume keeps it ---------

def early_stopping_state(history, es):
    """(best epoch, epochs since it) of `history` under early_stopping `es`; (0, 0) for none."""
    if es is None or not history:
        return 0, 0
    maximize = es.monitor.endswith("accuracy")
    best_epoch, best = 0, None
    for record in history:
        value = record.get(es.monitor)
        if value is None:
            continue
        if best is None or (value > best + es.min_delta if maximize else value < best - es.min_delta):
            best_epoch, best = record["epoch"], value
    return best_epoch, history[-1]["epoch"] - best_epoch


def stopped_early(history, es) -> bool:
    return es is not None and bool(history) and early_stopping_state(history, es)[1] >= es.patience


# ----- honest resume -------------------------------------------------------------------------

# Keys that --resume applies for real from the next epoch (the optimizer is rebuilt from
# the spec and its state carried over; the schedule is a function of the spec and the
# epoch). Every other key of model, data and train defines what the checkpoints are and
# may not change under --resume.
RESUME_APPLIES = ("train.learning_rate", "train.momentum", "train.weight_decay", "train.batch_size",
                  "train.epochs", "train.early_stopping", "train.schedule")
RESUME_IGNORES = ("name", "description", "export")  # not part of training


def spec_changes(old: Spec, new: Spec) -> dict:
    """{dotted key: (old value, new value)} for every training-relevant key that differs."""
    from zoo.spec import resolve

    return keys.diff(resolve(old), resolve(new), ignore=RESUME_IGNORES)


def check_resume(old: Spec, new: Spec, run: Path) -> dict:
    """The changes --resume will apply; UsageError (exit 2) naming every key it cannot."""
    changes = spec_changes(old, new)
    refused = {k: v for k, v in changes.items() if not keys.under(k, RESUME_APPLIES)}
    if refused:
        named = ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, (a, b) in refused.items())
        raise UsageError(f"{run}: cannot --resume: {named} differ from the run's spec.json, and its checkpoints "
                         f"were trained with the old values; train afresh (without --resume) or under another "
                         f"name. --resume can change only {', '.join(k.split('.', 1)[1] for k in RESUME_APPLIES)}")
    return changes


def _short(value):
    import json

    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def rebuild_optimizer(model, spec: Spec):
    """A new optimizer from the spec, carrying the checkpoint optimizer's state (iterations,
    momentum and moment buffers) over wherever the variables match."""
    old = model.optimizer
    new = make_optimizer(spec.train)
    new.build(model.trainable_variables)
    if old is not None and type(old) is type(new):
        carried = {v.path.split("/", 1)[-1]: v for v in old.variables}
        for v in new.variables:
            src = carried.get(v.path.split("/", 1)[-1])
            if src is not None and tuple(src.shape) == tuple(v.shape) and "learning_rate" not in v.path:
                v.assign(src)
    return new


def optimizer_record(optimizer) -> dict:
    """The optimizer training really used, read back from the optimizer object."""
    import keras

    config = optimizer.get_config()
    out = {"name": type(optimizer).__name__}
    for key in ("momentum", "weight_decay", "beta_1", "beta_2", "rho"):
        if config.get(key) is not None:
            out[key] = float(config[key])
    out["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return out


# ----- the run's files: one helper each ---------------------------------------------------------

# Each is recorded in the run's provenance.json; `made_from` holds the digests of the
# spec and the data ({"@spec": ..., "@data": ...}) that the training files come from.

def write_model(run: Path, model, made_from: dict) -> Path:
    """model.keras: the trained model (atomic). Removes everything made from an older one."""
    with provenance.artefact(run, MODEL_KERAS, "train", extra=made_from) as tmp:
        model.save(tmp)
    return run / MODEL_KERAS


def write_history(run: Path, history, made_from: dict) -> Path:
    """history.json: one record per completed epoch; writing it commits the epoch."""
    provenance.save_json(run, HISTORY_FILE, history, "train", extra=made_from)
    return run / HISTORY_FILE


def write_metrics(run: Path, metrics: dict) -> Path:
    """metrics.json: the test metrics of model.keras, and how they were made."""
    provenance.save_json(run, METRICS_FILE, metrics, "train", inputs=["model.keras"])
    return run / METRICS_FILE


def checkpoint_path(run: Path, epoch: int) -> Path:
    return run / CHECKPOINTS / f"epoch-{epoch:04d}.keras"


def write_checkpoint(run: Path, model, epoch: int, made_from: dict) -> None:
    """checkpoints/epoch-NNNN.keras: the model and optimizer state after `epoch` (atomic)."""
    with provenance.artefact(run, checkpoint_path(run, epoch).relative_to(run).as_posix(), "train", extra=made_from) as tmp:
        model.save(tmp)


class EpochWriter:
    """Commits epochs on a background thread while the next epoch trains.

    model.save is ~15 ms of Python walking Keras's object graph, per epoch; TensorFlow
    releases the GIL while an epoch's graph runs, so the write overlaps the next epoch.
    What is saved is a snapshot: a clone of the model and its optimizer whose variables
    are assigned from the live ones when the epoch ends. The order is the synchronous
    one: checkpoint, then history.json (which commits the epoch), then pruning; commit()
    first waits for the previous epoch's, and close() (in a finally) waits for the last,
    so an interrupted or diverged run leaves every finished epoch committed and no
    temporary file. A failure in the writer is raised in the training thread.
    """

    def __init__(self, model, spec: Spec, steps, run: Path, made_from: dict):
        import keras

        opt = model.optimizer
        self.shadow = keras.models.clone_model(model)
        compile_model(self.shadow, spec, steps, optimizer=type(opt).from_config(opt.get_config()))
        self.shadow.optimizer.build(self.shadow.trainable_variables)
        live = [*model.variables, *opt.variables]
        copy = [*self.shadow.variables, *self.shadow.optimizer.variables]
        if len(live) != len(copy) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(live, copy)):
            raise TrainingError("internal: the checkpoint snapshot does not mirror the model")  # never seen
        self.pairs = list(zip(live, copy))
        self.run, self.made_from = run, made_from
        self.thread, self.error = None, None
        self._skipsets = None

    @staticmethod
    def make(model, spec: Spec, steps, run: Path, made_from: dict):
        """An EpochWriter, or None where the model cannot be mirrored (then commit synchronously)."""
        try:
            return EpochWriter(model, spec, steps, run, made_from)
        except Exception:
            return None

    def commit(self, epoch: int, history: list, keep=()) -> None:
        import threading

        # Ctrl-C / SIGTERM are held until the writer is started and recorded: an interrupt
        # raised inside Thread.start() would leave a thread that close() cannot join (and a
        # half-assigned snapshot).
        with _signals_held():
            self.wait()
            for live, copy in self.pairs:
                copy.assign(live)
            thread = threading.Thread(target=self._write, args=(epoch, list(history), tuple(keep)),
                                      name=f"zoo-checkpoint-{epoch}")  # not a daemon: exit waits for it
            thread.start()
            self.thread = thread

    def _write(self, epoch, history, keep):
        try:
            _lower_this_threads_priority()
            self._skipsets = _seed_keras_saving_cache(self._skipsets)
            commit_epoch(self.run, self.shadow, epoch, history, self.made_from, keep)
        except BaseException as e:  # raised in the training thread by wait()
            self.error = e

    def wait(self) -> None:
        if self.thread is not None:
            # Ctrl-C / SIGTERM wait until the write is done: an interrupt raised out of join()
            # would leave the writer running while the process unwinds and exits.
            with _signals_held():
                self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    close = wait


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM received in the block are handled when it ends, by the handlers in
    place before it (the first one received; the process then unwinds as usual).

    A signal mask would not do: the kernel hands a process's signal to any thread that does
    not block it (TensorFlow's pool threads), and Python then runs the handler in the main
    thread regardless. Only the main thread handles signals; elsewhere this changes nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received, previous = [], {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


def _lower_this_threads_priority() -> None:
    """Run the calling thread at the lowest CPU priority (nice 19; Linux only, where a thread
    has its own). The checkpoint writer's ~15 ms of Python per epoch otherwise takes a core
    from the epoch training beside it; at nice 19 it runs in the training's gaps, and when
    the next epoch's commit waits for it, alone. Its files and their order are unchanged."""
    if sys.platform.startswith("linux"):
        import threading

        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# The kinds of object Keras's saving walks (keras.src.saving.saving_lib.get_attr_skipset)
_SAVED_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def _seed_keras_saving_cache(skipsets):
    """Work around a Keras 3 slip that costs ~60% of a small model's save.

    For every object model.save walks, saving_lib.get_attr_skipset builds the set of
    attributes to skip from freshly made reference objects (a Layer, an Optimizer, a
    Metric...), and caches it under "saving_attr_skipset_<kind>" while it looks it up under
    "saving_attr_skiplist_<kind>": the cache never hits (~14 ms of a 24 ms checkpoint of the
    softmax model, on the thread that competes with training for the 2 cores). The sets
    depend only on the kind, so they are built once and put where Keras looks, in the
    calling thread's Keras state (it is thread-local). Returns the sets, for the next call;
    where Keras differs from this, nothing is seeded and saving is merely slower.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib

        if skipsets is None:
            skipsets = {kind: saving_lib.get_attr_skipset(kind) for kind in _SAVED_KINDS}
        for kind, skipset in skipsets.items():
            global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", skipset)
    except Exception:
        return {}
    return skipsets


def commit_epoch(run: Path, model, epoch: int, history: list, made_from: dict, keep=()) -> None:
    """The checkpoint of `epoch`, then history.json (which commits it), then pruning."""
    write_checkpoint(run, model, epoch, made_from)
    write_history(run, history, made_from)
    prune_checkpoints(run, keep=keep)


def prune_checkpoints(run: Path, keep=()) -> None:
    """Keep the last KEEP_CHECKPOINTS checkpoints and those of the epochs in `keep`."""
    kept = {checkpoint_path(run, e).name for e in keep}
    for old in sorted((run / CHECKPOINTS).glob("epoch-*.keras"))[:-KEEP_CHECKPOINTS]:
        if old.name not in kept:
            provenance.invalidate(run, f"checkpoints/{old.name}")


def train_run(spec: Spec, run: Path, *, data_dir=None, resume=False, device=None, quiet=False, log=print,
          compiled=None) -> dict:
    """Train the model a spec describes into the run folder. Returns metrics.json's content.

    Raises DataError for bad data, TrainingError for a NaN/inf loss or a missing device,
    UsageError when --resume meets a spec that changed what the checkpoints are.
    `compiled` picks the epoch runner (default: CompiledEpochs on TensorFlow).
    """
    import keras

    from zoo import spec as spec_mod
    from zoo.stages import build
    from zoo.stages import data as data_mod

    backend = keras.backend.backend()
    history, first_epoch, changes = [], 0, {}
    if resume and (run / HISTORY_FILE).exists():
        provenance.check(run, HISTORY_FILE)  # edited by hand? say so rather than resume from it
        history = files.read_json(run / HISTORY_FILE)
        first_epoch = len(history)
    if first_epoch and (run / SPEC_FILE).is_file():
        provenance.check(run, SPEC_FILE)
        changes = check_resume(spec_mod.load_spec(run / SPEC_FILE), spec, run)  # before any data or model work
    device_name = backend_mod.configure(device, spec.train.seed)
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

    t = spec.train
    bs, epochs, seed, es = t.batch_size, t.epochs, t.seed, t.early_stopping
    steps = math.ceil(len(x_train) / bs)
    if first_epoch:
        provenance.check(run, checkpoint_path(run, first_epoch).relative_to(run).as_posix())
        model = build.load_model(checkpoint_path(run, first_epoch))
        compile_model(model, spec, steps, optimizer=rebuild_optimizer(model, spec))
        if first_epoch >= epochs or stopped_early(history, es):
            log(f"{run}: already trained for {first_epoch} epochs (requested {epochs}"
                f"{', stopped early' if stopped_early(history, es) else ''}); nothing to resume")
        else:
            said = "; ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items())
            log(f"resuming {run.name} after epoch {first_epoch}" + (f", applying {said}" if said else ""))
    # first: the folder is a run from here on
    made_from = {"@spec": provenance.save_text(run, SPEC_FILE, spec_mod.dumps(spec), "train"), "@data": dataset.digest()}
    if not first_epoch:
        model = build.build_model(spec)
        build.adapt(model, x_train)
        compile_model(model, spec, steps)
        # A fresh start replaces the run: nothing of an earlier training may be taken
        # for this one's (export would otherwise find the old model beside a new history).
        runs.start_over(run)
        write_history(run, [], made_from)

    runner = epoch_runner(model, spec, x_train, y_train, compiled, validation)
    tty = sys.stdout.isatty()
    if not quiet:
        log(f"training {spec.name}: {len(x_train):,} examples, {epochs - first_epoch} epoch(s), "
            f"batch {bs}, {t.optimizer} lr {t.learning_rate}"
            f"{'' if t.schedule.kind == 'constant' else ' (' + t.schedule.kind + ' schedule)'}, "
            f"on {device_name} ({backend})")
    bar = keras.utils.Progbar(epochs - first_epoch, unit_name="epoch") if tty and not quiet else None
    started = time.perf_counter()
    writer = EpochWriter.make(model, spec, steps, run, made_from) if isinstance(runner, CompiledEpochs) else None
    nan, epochs_run = None, 0
    try:
        for epoch in range(first_epoch, epochs):
            if stopped_early(history, es):
                break
            epoch_started = time.perf_counter()
            model.optimizer.learning_rate.assign(learning_rate_at(t, epoch))
            logs = runner.train_epoch(epoch_permutation(len(x_train), seed, epoch), bs)
            if "nan" in logs:
                nan = (epoch + 1, *logs["nan"])
                break
            if not all(math.isfinite(v) for v in logs.values()):
                nan = (epoch + 1, "end", next(v for v in logs.values() if not math.isfinite(v)))
                break
            record = {"epoch": epoch + 1, **logs, "learning_rate": optimizer_record(model.optimizer)["learning_rate"],
                      "seconds": round(time.perf_counter() - epoch_started, 4)}
            recorded = {k: [a, b] for k, (a, b) in changes.items() if k != "train.epochs"}  # more epochs: resume's purpose
            if recorded and epoch == first_epoch:
                record["changed_on_resume"] = recorded
            history.append(record)
            keep = [early_stopping_state(history, es)[0]] if es else ()
            if writer is not None:  # checkpoint and history.json written while the next epoch trains
                writer.commit(epoch + 1, history, keep)
            else:
                commit_epoch(run, model, epoch + 1, history, made_from, keep)
            epochs_run += 1
            if bar is not None:
                bar.update(epochs_run, values=[(k, v) for k, v in logs.items()])
            elif not quiet:
                print(format_epoch(record, epochs), flush=True)
    finally:
        if writer is not None:
            writer.close()  # the last epoch committed (also when interrupted or diverged)
    wall = time.perf_counter() - started
    if nan:
        epoch, step, loss = nan
        if (epoch, step) == (1, 1) and not first_epoch and isinstance(runner, CompiledEpochs):
            # the very first loss is computed before any update: no learning rate is to blame
            raise DataError(f"the untrained model's loss on the first batch is already {loss}, before any update: "
                            f"the data's values overflow float32 arithmetic (largest |x| in the training set: "
                            f"{float(np.max(np.abs(x_train))):.3g}); rescale them (data.preprocessing.rescale "
                            f"or standardize) or clean the data; the learning rate is not the cause")
        kept = f"the checkpoint of epoch {len(history)} is kept" if history else "no epoch completed"
        raise TrainingError(f"loss became {loss} in epoch {epoch} (by step {step}): training diverged; "
                            f"lower the learning rate (now {t.learning_rate}, try --learning-rate "
                            f"{t.learning_rate / 10:g}); {kept}")

    best_epoch = early_stopping_state(history, es)[0] if es else (history[-1]["epoch"] if history else 0)
    if es and history and best_epoch != history[-1]["epoch"]:  # restore the best epoch's weights
        model.set_weights(build.load_model(checkpoint_path(run, best_epoch)).get_weights())
        if not quiet:
            log(f"early stopping: {es.monitor} best in epoch {best_epoch}; restored its weights")
    if spec.train.validation == "test" and history and best_epoch == history[-1]["epoch"]:
        # the last epoch already evaluated the test set with these weights
        test = {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_")}
    else:
        test = runner.evaluate(dataset.x_test, dataset.y_test)
    resumes = [{"after_epoch": h["epoch"] - 1, "changed": h["changed_on_resume"]}
               for h in history if "changed_on_resume" in h]
    metrics = {
        "name": spec.name,
        "test": {k: float(v) for k, v in test.items()},
        "epochs": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early(history, es),
        "optimizer": optimizer_record(model.optimizer),
        "changes_on_resume": resumes,
        "train_examples": int(len(x_train)),
        "test_examples": int(len(dataset.x_test)),
        "wall_seconds": round(wall, 3),
        "samples_per_second": round(len(x_train) * epochs_run / wall, 1) if wall > 0 and epochs_run else None,
        "device": device_name,
        "backend": backend,
        "trainer": type(runner).__name__,
        "data": dataset.source,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": backend_mod.versions(),
    }
    if not spec.is_classifier:
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in model.get_layer(PREDICTIONS).weights[:2])
        metrics["w"] = kernel.reshape(-1).tolist()
        metrics["b"] = bias.reshape(-1).tolist()
    write_model(run, model, made_from)
    write_metrics(run, metrics)
    from zoo.stages import plots

    with provenance.artefact(run, CURVES_PNG, "train", inputs=["history.json"]) as tmp:
        plots.curves(history, spec, tmp)
    if spec.is_classifier and len(spec.model.input_shape) == 2:
        logits = keras.ops.convert_to_numpy(model(dataset.x_test[:18], training=False))
        with provenance.artefact(run, PREDICTIONS_PNG, "train", inputs=["model.keras"]) as tmp:
            plots.predictions(dataset.x_test[:18], dataset.y_test[:18], np.argmax(logits, axis=-1),
                              dataset.class_names, tmp)
    return metrics
