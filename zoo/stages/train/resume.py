"""Honest resume, and early stopping: both are functions of history.json.

`--resume` continues from the epoch history.json names, refusing a spec whose model,
data or seed differ from the run's and applying changed optimizer settings for real
(the optimizer is rebuilt, its state carried). Early stopping's state is computed from
the history, so a resumed run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.core import files, provenance
from zoo.core.contract import HISTORY_FILE, SPEC_FILE
from zoo.core.errors import UsageError
from zoo.spec import Spec, keys, load_spec, resolve

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
    return keys.diff(resolve(old), resolve(new), ignore=RESUME_IGNORES)


def check_resume(old: Spec, new: Spec, run: Path) -> dict:
    """The changes --resume will apply; UsageError (exit 2) naming every key it cannot."""
    changes = spec_changes(old, new)
    refused = {k: v for k, v in changes.items() if not keys.under(k, RESUME_APPLIES)}
    if refused:
        named = ", ".join(f"{k} ({short(a)} -> {short(b)})" for k, (a, b) in refused.items())
        raise UsageError(f"{run}: cannot --resume: {named} differ from the run's spec.json, and its checkpoints "
                         f"were trained with the old values; train afresh (without --resume) or under another "
                         f"name. --resume can change only {', '.join(k.split('.', 1)[1] for k in RESUME_APPLIES)}")
    return changes


def resume_state(spec: Spec, run: Path, resume: bool):
    """(history, first epoch, changes) to continue from: ([], 0, {}) for a fresh start.

    Checks history.json and spec.json against the run's provenance (edited by hand? say so
    rather than resume from it) and `spec` against the run's spec (check_resume), before
    any data or model work.
    """
    history, first_epoch, changes = [], 0, {}
    if resume and (run / HISTORY_FILE).exists():
        provenance.check(run, HISTORY_FILE)
        history = files.read_json(run / HISTORY_FILE)
        first_epoch = len(history)
    if first_epoch and (run / SPEC_FILE).is_file():
        provenance.check(run, SPEC_FILE)
        changes = check_resume(load_spec(run / SPEC_FILE), spec, run)
    return history, first_epoch, changes


def short(value):
    """`value` as JSON, cut to 40 characters for a message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
