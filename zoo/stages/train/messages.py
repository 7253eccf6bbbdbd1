"""What a training says: the line for what a fresh start sets aside, the announcement, and
each epoch's line (or Keras's progress bar on a terminal)."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.core.contract import CHECKPOINTS, MODEL_KERAS, MODEL_ONNX
from zoo.spec import Spec


def removal_line(run: Path, removed: list[str]) -> str:
    """One line saying what a fresh training set aside, and what becomes of it ("" when it only
    replaced the untrained model)."""
    shown = [f"{n}/" if (n == CHECKPOINTS or "." not in n) else n for n in removed if n != MODEL_KERAS]
    if not shown:
        return ""
    again = " (`zoo export` makes the export again)" if MODEL_ONNX in removed else ""
    return (f"retraining {run.name} from scratch: the earlier model's {', '.join(shown)} are set aside, deleted once "
            f"this training completes{again} and put back if it fails or is stopped; `--resume` continues a "
            f"training instead")


def announcement(spec: Spec, n_train: int, first_epoch: int, device_name: str) -> str:
    import keras

    t = spec.train
    return (f"training {spec.name}: {n_train:,} examples, {t.epochs - first_epoch} epoch(s), "
            f"batch {t.batch_size}, {t.optimizer} lr {t.learning_rate}"
            f"{'' if t.schedule.kind == 'constant' else ' (' + t.schedule.kind + ' schedule)'}, "
            f"on {device_name} ({keras.backend.backend()})")


def epoch_display(epochs: int, first_epoch: int, quiet: bool, log):
    """show(epochs run, logs, record) for each finished epoch: nothing when quiet, Keras's
    progress bar when stdout is a terminal, else the epoch's line through `log`."""
    if quiet:
        return lambda done, logs, record: None
    if sys.stdout.isatty():
        import keras

        bar = keras.utils.Progbar(epochs - first_epoch, unit_name="epoch")
        return lambda done, logs, record: bar.update(done, values=[(k, v) for k, v in logs.items()])
    return lambda done, logs, record: log(format_epoch(record, epochs))


def format_epoch(record, epochs):
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4g}" if k == "learning_rate" else f"{k} {v:.4f}"
              for k, v in record.items() if k not in ("epoch", "seconds") and isinstance(v, float)]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
