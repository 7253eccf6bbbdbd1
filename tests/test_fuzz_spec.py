"""Property tests of the spec loader: whatever comes in, a valid Spec or a SpecError comes out.

Inputs are random JSON values, every catalog spec with keys dropped, renamed or
retyped, and raw JSON text with duplicate keys, NaN/Infinity literals, truncation
and garbage bytes. A returned Spec must also survive the round trip through
`dumps` (what `zoo train` writes to a run's spec.json). A SpecError must hold at
least one problem, each a (path, message) pair of one-line strings. The CLI turns
each problem into one "Error: " line on stderr, exit code 2, never a traceback.

About 2,300 examples in all; deadline=None because a 10,000-element array takes a
few milliseconds to validate.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import catalog_specs, write_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.cli import main
from zoo.core.errors import SpecError
from zoo.spec import Spec, dumps, load_spec, parse_json, validate

CATALOG = {p.name: json.loads(p.read_text()) for p in catalog_specs()}
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                  HealthCheck.large_base_example])


# ----- the property -----------------------------------------------------------------------

def assert_spec_or_spec_error(fn, *args):
    """Call the loader; it returns a Spec that round-trips, or raises a well-formed SpecError."""
    try:
        spec = fn(*args)
    except SpecError as e:
        assert e.problems, "a SpecError must name at least one problem"
        for path, message in e.problems:
            assert isinstance(path, str), f"path {path!r} is not a str"
            assert isinstance(message, str) and message.strip(), f"empty message at {path!r}"
            # the CLI prints one line per problem: neither part may break the line
            assert "\n" not in path and "\r" not in path, f"path {path!r} would break the line"
            assert "\n" not in message and "\r" not in message, f"message {message!r} would break the line"
        assert len(str(e).split("\n")) == len(e.problems)
        return None
    assert isinstance(spec, Spec), f"returned {type(spec).__name__}, not a Spec"
    # what `zoo train` writes to spec.json must load again as the same spec
    text = dumps(spec)
    assert validate(parse_json(text, "round trip"), "round trip") == spec
    return spec


# ----- strategies -------------------------------------------------------------------------

NASTY = [
    -1, 0, -0.0, 1, 2, 3, 10, 255, 256, 65537, 10**6, 2**31, 2**63, 10**100, 10**4000,
    0.5, 1.0, 1e-300, 5e-324, 1e308, -1e308, 0.1, 0.999999, 1.0000001,
    float("nan"), float("inf"), float("-inf"),  # what `--learning-rate nan` hands to validate()
    "NaN", "Infinity", "-Infinity", "1", "256", "0.1", "", " ", "\t", "true", "null",
    "relu", "softmax", "mlp", "digits", "npz", "csv", "sgd", "test", "none",
    "../../x", "..", "/etc/passwd", "a/b", "con", "mnist-mlp", "Mnist", "-x", "_x", "a" * 65,
    "é", "名前", "🦓" * 50, "\u0000", "\ud800", "\u2028", "a\nb", "x" * 5000,
    "keras.layers.Lambda", "builtins.eval", "__import__('os').system('true')", "lambda x: x",
    True, False, None, [], {}, [None], [1, 2, 3], [[8, 8]], {"units": 64}, {"": 1}, {"__class__": "x"},
]


def json_leaves():
    return (st.sampled_from(NASTY) | st.none() | st.booleans() | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))


def json_values(max_leaves=25):
    return st.recursive(json_leaves(), lambda inner: st.lists(inner, max_size=6)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=max_leaves)


# Every strategy draws fresh objects: hypothesis replays and shrinks examples, so a
# mutable value shared between examples (a dict from sampled_from, say) that one example
# mutates changes the next one (FlakyStrategyDefinition) and can grow without bound.
def fresh(values):
    return st.sampled_from(values).map(copy.deepcopy)


@st.composite
def huge_array(draw):
    item = draw(fresh([1, 0.5, "a", None, 64, {"units": 1}, [8, 8]]))
    n = draw(st.sampled_from([1000, 10_000, 70_000]))
    return [copy.deepcopy(item) for _ in range(n)] if isinstance(item, (dict, list)) else [item] * n


@st.composite
def deeply_nested(draw):
    value = draw(fresh([1, "x", None, {}, []]))
    for _ in range(draw(st.integers(50, 950))):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


def replacement_values():
    return json_leaves() | json_values(10) | huge_array() | deeply_nested()


MAX_SITES = 64  # a container's first items that mutations may target: bounds work and memory


def paths(value, prefix=(), depth=0):
    """(path to a container, key or index in it) in a JSON value: the first MAX_SITES
    items of each container, 12 levels deep (a 70,000-item array is one site, not 70,000)."""
    if depth > 12:
        return
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value)) if isinstance(value, list) else []
    for k, v in items[:MAX_SITES]:
        yield prefix, k
        yield from paths(v, prefix + (k,), depth + 1)


def at(value, path):
    for part in path:
        value = value[part]
    return value


@st.composite
def mutated_spec(draw):
    """A catalog spec with one to four mutations: drop, rename, retype, add, nest."""
    spec = copy.deepcopy(CATALOG[draw(st.sampled_from(sorted(CATALOG)))])
    for _ in range(draw(st.integers(1, 4))):
        where = sorted(paths(spec), key=repr)
        if not where:
            break
        parent_path, key = draw(st.sampled_from(where))
        parent = at(spec, parent_path)
        op = draw(st.sampled_from(["drop", "rename", "retype", "retype", "add", "nest", "negate", "stringify"]))
        if op == "drop":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from([key.upper(), key + "s", key[:-1], "_" + key, key.replace("_", "-"),
                                        key + "\u200b", " " + key]) | st.text(max_size=12))
            parent[new] = parent.pop(key)
        elif op == "retype":
            parent[key] = draw(replacement_values())
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values(5))
        elif op == "nest":
            parent[key] = [parent[key]] if draw(st.booleans()) else {key if isinstance(key, str) else "x": parent[key]}
        elif op == "negate" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = -parent[key] if parent[key] else -1
        elif op == "stringify":
            parent[key] = json.dumps(parent[key])
    return spec


# ----- random JSON values -----------------------------------------------------------------

@settings(max_examples=400, **FAST)
@given(json_values(40))
def test_random_json_values(value):
    assert_spec_or_spec_error(validate, value)


@settings(max_examples=150, **FAST)
@given(st.dictionaries(st.sampled_from(["version", "name", "description", "model", "data", "train", "export"])
                       | st.text(max_size=8), json_values(15), max_size=8))
def test_random_objects_with_spec_keys(value):
    assert_spec_or_spec_error(validate, value)


# ----- mutations of every catalog spec ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_spec_is_valid_and_round_trips(name):
    assert assert_spec_or_spec_error(validate, CATALOG[name]) is not None


@settings(max_examples=900, **FAST)
@given(mutated_spec())
def test_mutated_catalog_specs(spec):
    assert_spec_or_spec_error(validate, spec)
    # the same value as JSON text takes the file's path through parse_json (NaN/inf excepted:
    # JSON has no spelling for them, so json.dumps writes the literals parse_json refuses)
    try:
        text = json.dumps(spec, allow_nan=False)
    except ValueError:
        with pytest.raises(SpecError):
            parse_json(json.dumps(spec))
        return
    assert_spec_or_spec_error(lambda t: validate(parse_json(t)), text)


@settings(max_examples=150, **FAST)
@given(st.sampled_from(sorted(CATALOG)),
       st.sampled_from(["learning_rate", "batch_size", "epochs", "seed", "momentum", "weight_decay", "validation"]),
       st.sampled_from([0, -1, 1, 10**9, 0.0, -0.5, 0.5, 1e308, float("nan"), float("inf"), float("-inf"), True, "1"])
       | st.floats() | st.integers())
def test_command_line_overrides(name, key, value):
    """`zoo train --learning-rate X` puts a Python float (nan and inf included) into the spec."""
    spec = copy.deepcopy(CATALOG[name])
    spec.setdefault("train", {})[key] = value
    result = assert_spec_or_spec_error(validate, spec)
    if result is not None and isinstance(value, float):
        assert math.isfinite(value), f"train.{key}={value} was accepted"


# ----- raw JSON text ----------------------------------------------------------------------

KEY = re.compile(r'"([^"\\]+)":')


@settings(max_examples=150, **FAST)
@given(st.sampled_from(sorted(CATALOG)), st.data())
def test_duplicate_keys_are_refused(name, data):
    text = json.dumps(CATALOG[name], indent=data.draw(st.sampled_from([None, 2])))
    matches = list(KEY.finditer(text))
    m = data.draw(st.sampled_from(matches))
    try:
        value = json.dumps(data.draw(json_values(5)), allow_nan=False)
    except ValueError:  # NaN would be refused first, for another reason
        value = "1"
    duplicate = f'"{m.group(1)}": {value}, '
    text = text[:m.start()] + duplicate + text[m.start():]
    with pytest.raises(SpecError) as e:
        validate(parse_json(text, "dup.json"), "dup.json")
    assert_spec_or_spec_error(lambda t: validate(parse_json(t)), text)
    assert any("duplicate key" in message and m.group(1) in message for _, message in e.value.problems)


@settings(max_examples=150, **FAST)
@given(st.sampled_from(sorted(CATALOG)), st.data())
def test_nan_and_infinity_literals_are_refused(name, data):
    spec = copy.deepcopy(CATALOG[name])
    numbers = [(p, k) for p, k in paths(spec) if type(at(spec, p)[k]) in (int, float)]
    parent_path, key = data.draw(st.sampled_from(sorted(numbers, key=repr)))
    at(spec, parent_path)[key] = "@@number@@"
    literal = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400"]))
    text = json.dumps(spec).replace('"@@number@@"', literal)
    with pytest.raises(SpecError):  # 1e999 is not a literal, but parses to inf: refused all the same
        validate(parse_json(text))
    assert_spec_or_spec_error(lambda t: validate(parse_json(t)), text)


@st.composite
def mangled_text(draw):
    text = json.dumps(CATALOG[draw(st.sampled_from(sorted(CATALOG)))], indent=draw(st.sampled_from([None, 2])))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "delete", "replace", "wrap"]))
        i = draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:i]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(["{", "}", "[", "]", ",", ":", '"', "\\", "\x00", "\ufeff",
                                                     "NaN", "//", "'", "\ud800", "🦓"]) | st.text(max_size=5)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif op == "replace" and text:
            j = draw(st.integers(0, len(text) - 1))
            text = text[:j] + draw(st.characters()) + text[j + 1:]
        elif op == "wrap":
            depth = draw(st.integers(1, 2000))
            text = "[" * depth + text + "]" * depth
    return text


@settings(max_examples=300, **FAST)
@given(mangled_text())
def test_mangled_json_text(text):
    assert_spec_or_spec_error(lambda t: validate(parse_json(t)), text)


# ----- files: load_spec -------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@st.composite
def spec_file_bytes(draw):
    kind = draw(st.sampled_from(["bytes", "utf16", "bom", "mangled", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    text = json.dumps(CATALOG[draw(st.sampled_from(sorted(CATALOG)))])
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "bom":
        return b"\xef\xbb\xbf" + draw(st.sampled_from([b"", b" ", b"\n"])) + text.encode()
    if kind == "mangled":
        return draw(mangled_text()).encode("utf-8", "surrogatepass")
    return text.encode()


@settings(max_examples=200, **FAST)
@given(spec_file_bytes())
def test_load_spec_on_arbitrary_bytes(scratch, raw):
    path = scratch / "spec.json"
    path.write_bytes(raw)
    assert_spec_or_spec_error(load_spec, path)


@pytest.mark.parametrize("make", ["missing", "directory", "empty", "whitespace", "too_large", "fifo", "symlink_loop"])
def test_load_spec_on_odd_paths(tmp_path, make):
    import os

    path = tmp_path / "spec.json"
    if make == "directory":
        path.mkdir()
    elif make == "empty":
        path.write_text("")
    elif make == "whitespace":
        path.write_text(" \n\t ")
    elif make == "too_large":
        path.write_text('{"description": "' + "x" * 1_100_000 + '"}')
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "symlink_loop":
        path.symlink_to(path)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert_spec_or_spec_error(load_spec, path)
    assert str(path) in str(e.value)


# ----- the CLI: `zoo check` ---------------------------------------------------------------

def check(path):
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_one_line_per_problem(result, path):
    problems = None
    try:
        load_spec(path)
    except SpecError as e:
        problems = e.problems
    assert problems, "the file should be invalid"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == len(problems), lines
    for line, (where, _) in zip(lines, problems):
        assert line.startswith("Error: "), line
        assert str(path) in line
        assert where in line, f"{where!r} not named in {line!r}"
    return lines


BAD_SPECS = {
    "several_problems": {"version": 1, "name": "x", "model": {"kind": "mlp", "input_shape": [8, 8], "num_classes": -3,
                                                             "hidden": [{"units": 0}], "colour": 1},
                         "data": {"dataset": "digits"}, "train": {"epochs": "10"}},
    "unsafe_name": {**CATALOG["digits-softmax.json"], "name": "../../x"},
    "python_object": {**CATALOG["digits-softmax.json"], "model": {**CATALOG["digits-softmax.json"]["model"],
                                                                   "kind": "keras.layers.Lambda"}},
    "newline_in_key": {**CATALOG["digits-softmax.json"], "a\nb\r\nc": 1},
    "cross_field": {**CATALOG["digits-softmax.json"], "model": {"kind": "linear", "input_shape": [8, 8], "num_classes": 10}},
    "not_an_object": [1, 2, 3],
    "wrong_version": {**CATALOG["digits-softmax.json"], "version": 2},
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_cli_check_one_error_line_per_problem(tmp_path, case):
    path = write_spec(tmp_path, BAD_SPECS[case])
    lines = assert_one_line_per_problem(check(path), path)
    if case == "several_problems":
        assert len(lines) == 4


@pytest.mark.parametrize("text", ['{"version": 1, "name": "a", "name": "b"}', '{"version": NaN}', '{"version": 1,',
                                  "\x00\x01\x02", "[" * 100_000, ""])
def test_cli_check_bad_json_text(tmp_path, text):
    path = tmp_path / "spec.json"
    path.write_text(text)
    assert_one_line_per_problem(check(path), path)


def test_cli_check_in_a_real_process(zoo, tmp_path):
    """The installed command, not CliRunner: same lines, exit code 2, no traceback."""
    path = write_spec(tmp_path, BAD_SPECS["several_problems"])
    done = zoo("check", path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.rstrip("\n").split("\n")
    assert len(lines) == 4 and all(line.startswith("Error: ") for line in lines), lines
    missing = zoo("check", tmp_path / "nope.json")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
