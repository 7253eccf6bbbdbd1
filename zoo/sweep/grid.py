"""The grid: `--set KEY=V1,V2` and `--seeds` parsed, every combination applied to the spec and
validated exactly like a spec file, each named after the spec it makes.

Keys are the dotted spec keys of zoo.spec.keys (`model.hidden[0].units`). Nothing here
touches Optuna, TensorFlow or the file system beyond reading the spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from zoo.core.errors import SpecError, UsageError
from zoo.spec import Spec, load_spec, resolve, validate
from zoo.spec.keys import key_path, set_key

METRICS = {"accuracy": "maximize", "loss": "minimize", "mae": "minimize"}
SEED_KEY = "train.seed"
FIXED_KEYS = {"name": "the sweep names each trial's run", "version": "the spec format"}


def _value(text: str):
    text = text.strip()
    if not text:
        raise ValueError("empty value")
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: sgd, relu


def parse_set(text: str) -> tuple[str, list]:
    """`KEY=V1,V2,...` -> (KEY, [V1, V2, ...]). Values are JSON (0.1, 64, true, [8, 8]) or words (sgd)."""
    key, sep, rhs = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=V1,V2,... such as --set train.learning_rate=0.05,0.1")
    key_path(key)
    if key in FIXED_KEYS:
        raise UsageError(f"--set {key}: cannot be swept ({FIXED_KEYS[key]})")
    try:
        values = json.loads(f"[{rhs}]")  # 0.05,0.1 | [8,8],[64] | "a,b"
    except ValueError:
        try:
            values = [_value(v) for v in rhs.split(",")]
        except ValueError:
            values = None
    if not values:
        raise UsageError(f"--set {key}: no values (an empty grid); give them as {key}=V1,V2")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise UsageError(f"--set {key}: a value is repeated in {rhs}; give each value once")
    return key, values


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected integers separated by commas, such as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text}: a seed is repeated; give each seed once")
    return seeds


def choose_seeds(seeds: str | None, seed: int | None) -> str | None:
    """--seeds S1,S2 or --seed S (the train option every command has), never both."""
    if seed is not None and seeds is not None:
        raise UsageError("give either --seed or --seeds")
    return seeds if seeds is not None else (None if seed is None else str(seed))


def combo_label(values: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "(spec as is)"


@dataclass(frozen=True)
class Point:
    """One trial: a combination of swept values and a seed, and the spec they make."""

    values: dict  # swept key -> value, in --set order (the seed not included)
    seed: int
    run: str  # the run folder's name
    spec: dict  # the resolved, validated spec (its name is `run`)

    @property
    def combo(self) -> str:
        return combo_label(self.values)


@dataclass
class Plan:
    spec_name: str
    keys: list  # swept keys, in --set order
    choices: dict  # key -> values
    seeds: list
    metric: str
    direction: str
    points: list = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.metric, [p.spec for p in self.points]], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def default_study(self) -> str:
        return f"{self.spec_name[:48]}-sweep-{self.fingerprint[:8]}"

    def definition(self, heartbeat: int) -> dict:
        return {"spec": self.spec_name, "keys": self.keys, "choices": self.choices, "seeds": self.seeds,
                "metric": self.metric, "direction": self.direction, "trials": len(self.points),
                "heartbeat": heartbeat, "fingerprint": self.fingerprint,
                "runs": [p.run for p in self.points]}


def run_name(spec_name: str, spec: dict) -> str:
    """`<spec name>-<8 hex>`: the hash of the resolved spec (name aside) the overrides make."""
    body = {k: v for k, v in spec.items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    return f"{spec_name[:55]}-{digest}"


def plan(spec: Spec | str | Path, sets=(), seeds=None, fixed=None, metric=None) -> Plan:
    """Validate every combination of the grid before anything runs.

    Args:
        spec: the base spec (or its file).
        sets: `KEY=V1,V2` strings, as given to --set.
        seeds: `0,1,2` (or a list of ints); default: the spec's train.seed.
        fixed: {key: value} applied to every trial (zoo run's --epochs and friends).
        metric: the test metric to rank by (default accuracy, or loss for regression).

    Raises:
        UsageError for a malformed or empty grid; SpecError for combinations the spec
        validation refuses, every distinct problem once.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    grid = dict(parse_set(s) for s in sets)
    if len(grid) != len(sets):
        raise UsageError("--set: a key is given twice; give all its values in one --set KEY=V1,V2")
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    seeds = list(seeds) if seeds else [spec.train.seed]
    _check_grid(grid, seeds, fixed)
    metric = metric or ("accuracy" if spec.is_classifier else "loss")
    allowed = ["accuracy", "loss"] if spec.is_classifier else ["loss", "mae"]
    if metric not in allowed:
        raise UsageError(f"--metric {metric}: {spec.name} reports {' and '.join(allowed)}; pick one of them")
    base = resolve(spec)
    for key, value in fixed.items():
        base = set_key(base, key, value)
    points = _points(spec.name, base, grid, seeds)
    return Plan(spec.name, list(grid), grid, seeds, metric, METRICS[metric], points)


def _check_grid(grid: dict, seeds: list, fixed: dict) -> None:
    if SEED_KEY in grid:
        raise UsageError(f"--set {SEED_KEY}: give seeds with --seeds 0,1,2")
    for key in fixed:
        if key in grid:
            raise UsageError(f"{key} is both fixed by its option and swept by --set; give one of them")
    if not grid and len(seeds) < 2:
        raise UsageError("nothing to sweep (an empty grid): give --set KEY=V1,V2 and/or --seeds 0,1,2")


def _points(spec_name: str, base: dict, grid: dict, seeds: list) -> list[Point]:
    """Every combination x seed applied to `base` and validated; SpecError naming each problem once."""
    keys = list(grid)
    points, problems = [], {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(keys, combo))
        for seed in seeds:
            data = base
            try:
                for key, value in {**values, SEED_KEY: seed}.items():
                    data = set_key(data, key, value)
                checked = resolve(validate(data, "--set"))
            except SpecError as e:
                for p, m in e.problems:
                    problems.setdefault(p, m)
                continue
            name = run_name(spec_name, checked)
            twin = next((q for q in points if q.run == name), None)
            if twin is not None:  # compared after parsing: 1 and 1.0 are one learning rate
                raise UsageError(f"--set: {combo_label(values)} and {combo_label(twin.values)} make the same spec "
                                 f"(the same value spelled twice); give each value once")
            checked["name"] = name
            points.append(Point(values, seed, name, checked))
    if problems:
        raise SpecError("--set", list(problems.items()))
    return points
