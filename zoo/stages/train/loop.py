"""The epoch runners: one call trains one epoch in a given order and returns its logs.

Speed: for models this small Keras's per-step overhead, not arithmetic, sets the
time. So on the TensorFlow backend zoo runs its own compiled epoch (CompiledEpochs):
the training set stays resident as tensors and one tf.function call gathers every
batch of an epoch from its permutation and applies the Keras optimizer, as a
hand-written TF loop does (benchmarks/train_bench.py measures both); the same call ends
by evaluating the validation set, resident too. XLA is off on CPU, where it was slower
(benchmarks/RESULTS.md, "XLA on CPU"). The jax and torch backends run `model.fit` one
epoch at a time (FitEpochs) in the same order. `epoch_runner` picks one, once.

Reproducibility: the permutation of epoch e is a pure function of (seed, e), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.spec import Spec


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
        self.use(x_train, y_train, validation)
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

    def use(self, x_train, y_train, validation=None) -> None:
        """Train on these arrays from now on (resident as tensors; the traced epoch takes them as
        arguments, so arrays of the same shapes reuse its trace: zoo.stages.train.reuse)."""
        import tensorflow as tf

        self.x, self.y = tf.constant(x_train), tf.constant(y_train)
        # the validation set, resident too: each epoch's call ends with its evaluation
        self.val = None if validation is None else (tf.constant(validation[0]), tf.constant(validation[1]))

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

    def _train_epoch(self, order, batch_size, x, y, val):
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
            loss, metric, grads = self._step(tf.gather(x, idx), tf.gather(y, idx))

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
        if val is not None:  # (a Python branch: decided once, at tracing)
            xv, yv = val
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
            tf.constant(order, tf.int32), tf.constant(batch_size, tf.int32), self.x, self.y, self.val)
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

