"""What training applies to the model: optimizer, learning-rate schedule, loss and metric.

Each is a function of the spec (and, for the learning rate, the epoch), so a resumed run
rebuilds exactly what an uninterrupted one used. `rebuild_optimizer` is --resume's: a
new optimizer from the spec, carrying the checkpoint's state over.
"""

from __future__ import annotations

import math

from zoo.spec import Spec

MIN_STEPS_PER_EXECUTION = 16  # steps per compiled call: amortizes Python overhead, keeps the progress bar live


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
    """The Keras loss and metric of the spec's task: cross-entropy and accuracy, or MSE and MAE."""
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
