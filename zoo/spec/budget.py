"""How much memory a spec asks for, estimated before anything is built or loaded.

A spec that would need more than the machine has must be refused at validation (exit 2,
with the estimate), not die later in an allocation (three hidden layers of 65,536 units are
a [65536, 65536] float32 matrix each, 17 GB). The estimate counts, in float32:

- parameters: every Dense layer's kernel and bias, times the copies training keeps
  (weights, gradients, the checkpoint writer's snapshot, and the optimizer's slots and
  their snapshot: adam/adamw 2 slots, rmsprop 1 (2 with momentum), sgd 0 (1 with momentum));
- activations: one batch through every layer, forward and backward;
- data: every example of a built-in or synthetic dataset, twice (the array and the resident
  tensor). Files (npz, csv) are measured when they are read (zoo.stages.data); a table
  before it is read and again before it is encoded (zoo.stages.table_memory), its model
  counted at the encoded width (`features`).

The limit is `ZOO_MEMORY_LIMIT` (a size such as `16GiB`, `512MiB` or bytes), default 8 GiB.
Only the standard library is imported here.
"""

from __future__ import annotations

import math
import os
import re

DEFAULT_LIMIT = 8 * 1024**3
LIMIT_VARIABLE = "ZOO_MEMORY_LIMIT"

# examples x features of the datasets whose size is known from the spec alone
BUILTIN_EXAMPLES = {"fashion_mnist": 70_000, "mnist": 70_000, "digits": 1_797}

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int | None:
    """Bytes from '16GiB', '512 MB', '1e9'-free plain sizes; None if it is not a size."""
    m = _SIZE.match(text or "")
    if not m or m.group(2).lower() not in _UNITS:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def memory_limit() -> int:
    """The limit in bytes: ZOO_MEMORY_LIMIT, or DEFAULT_LIMIT when unset or not a size."""
    value = parse_size(os.environ.get(LIMIT_VARIABLE, ""))
    return DEFAULT_LIMIT if value is None else value


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # unreachable


def layer_widths(spec, features=None) -> list[int]:
    """Features in, every hidden layer's units, the outputs."""
    m = spec.model
    # a table's width is its encoded columns', known once the CSV is read: counted as 1 until then
    if features is None:
        features = math.prod(m.input_shape) if m.input_shape is not None else 1
    return [features, *[h.units for h in m.hidden], spec.num_outputs or 1]  # (missing: its own check)


def parameters(spec, features=None) -> int:
    widths, bias = layer_widths(spec, features), 1 if spec.model.use_bias else 0
    return sum(a * b + b * bias for a, b in zip(widths, widths[1:]))


def _slots(train) -> int:
    slots = {"sgd": 0, "adam": 2, "adamw": 2, "rmsprop": 1}[train.optimizer]
    return slots + (1 if train.momentum and train.optimizer in ("sgd", "rmsprop") else 0)


def examples(spec) -> int:
    """Examples the dataset holds when the spec alone says (0 for files: measured when read)."""
    d = spec.data
    if d.dataset == "synthetic_linear":
        return d.synthetic.num_examples if d.synthetic is not None else 1000
    return BUILTIN_EXAMPLES.get(d.dataset, 0)


def estimate(spec, features=None) -> dict[str, int]:
    """Bytes of parameters (with their training copies), activations and data; `features`:
    the input width where the spec alone does not say it (a table's encoded columns)."""
    widths, t = layer_widths(spec, features), spec.train
    batch = min(t.batch_size, examples(spec) or t.batch_size)
    return {"parameters": parameters(spec, features) * 4 * (3 + 2 * _slots(t)),
            "activations": batch * sum(widths) * 4 * 2,
            "data": examples(spec) * widths[0] * 4 * 2}


def over_limit_message(what: str, needed: int, limit: int) -> str:
    return (f"{what} would take an estimated {human(needed)} of memory, over the limit of {human(limit)}; "
            f"make it smaller, or raise the limit ({LIMIT_VARIABLE}={human_setting(needed)})")


def human_setting(n: int) -> str:
    return f"{math.ceil(n / 1024**3) + 1}GiB"


def check_memory(spec):
    """[(path, message)]: the spec's estimated memory, if over the limit."""
    parts, limit = estimate(spec), memory_limit()
    total = sum(parts.values())
    if total <= limit:
        return
    biggest = max(parts, key=parts.get)
    path = {"parameters": "model.hidden" if spec.model.hidden else "model.input_shape",
            "activations": "train.batch_size", "data": "data"}[biggest]
    said = ", ".join(f"{k} {human(v)}" for k, v in parts.items())
    yield path, over_limit_message(f"this spec ({said}; {parameters(spec):,} parameters)", total, limit)
