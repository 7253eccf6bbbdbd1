"""Loading a spec: strict JSON, then the schema, then the cross-field checks.

`load_spec(path)` is the one validation path: it parses the JSON strictly, validates
every field (pydantic, zoo.spec.schema), runs the cross-field checks, and raises a single
`SpecError` holding every problem with its JSON path. No TensorFlow is imported here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from zoo.core.errors import SpecError
from zoo.spec.schema import MAX_SPEC_BYTES, SPEC_VERSION, Spec, _CrossFieldProblems


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON; write a number")


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_json(text: str, source="<spec>") -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys. Raises SpecError."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise SpecError(source, [("", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")]) from None
    except ValueError as e:
        raise SpecError(source, [("", f"not valid JSON: {e}")]) from None
    except RecursionError:
        raise SpecError(source, [("", "not valid JSON: nested too deeply")]) from None


def _clean_loc(loc, unknown_key=False) -> tuple:
    """Drop pydantic's union-member tags (`constrained-float`, `literal[...]`) from a location.

    Keys of our models and list indices stay; with `unknown_key` the last part stays
    whatever it looks like: it is a key the user wrote.
    """
    out, cls = [], Spec
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out.append(part)
        elif cls is not None and part in cls.model_fields:
            out.append(part)
            cls = _model_in(cls.model_fields[part].annotation)
        elif cls is not None and part == cls.__name__:  # a union's model member (kernel_initializer)
            continue
        elif (unknown_key and i == len(loc) - 1) or not _is_tag(part):
            out.append(part)
            cls = None
    return tuple(out)


def _is_tag(part: str) -> bool:
    return any(c in part for c in "[]-'(),") or part in ("int", "float", "str", "bool", "none", "list", "dict")


def _path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += ("." if out else "") + str(part)
        else:  # a key the user wrote: quoted, so "\n" cannot break the line
            out += f"[{json.dumps(str(part))}]"
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _field_names(loc) -> list[str]:
    """The valid keys of the object that holds `loc` (for unknown-key messages)."""
    cls = Spec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        cls = _model_in(field.annotation)
        if cls is None:
            return []
    return list(cls.model_fields)


def _model_in(annotation):
    """The BaseModel class inside Optional[...] / list[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _short(value, limit=60) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
    except (ValueError, TypeError, RecursionError):  # too deep, huge int, not JSON (via validate())
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(err) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        valid = ", ".join(_field_names(loc))
        return f"unknown key; valid keys here: {valid}"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and kind not in ("model_type", "dict_type"):
        return f"{msg}; received {_short(err['input'])}"
    return f"{msg}; received {type(err.get('input')).__name__}"


def validate(data: Any, source="<spec>") -> Spec:
    """Validate a parsed JSON value; return a Spec or raise SpecError with every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a JSON object {{...}} at the top, received {type(data).__name__}")])
    if "version" in data and (type(data["version"]) is not int or data["version"] != SPEC_VERSION):
        raise SpecError(source, [("version", f"this zoo reads spec version {SPEC_VERSION}, received {_short(data['version'])}")])
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        problems = {}  # path -> messages; a union's alternatives share one path
        for err in e.errors(include_url=False):
            cross = (err.get("ctx") or {}).get("error")
            if isinstance(cross, _CrossFieldProblems):
                for path, message in cross.problems:
                    problems.setdefault(path, []).append(message)
                continue
            loc = _clean_loc(err["loc"], unknown_key=err["type"] == "extra_forbidden")
            err = {**err, "loc": loc}
            problems.setdefault(_path(loc), []).append(_message(err))
        raise SpecError(source, [(p, " or ".join(dict.fromkeys(ms))) for p, ms in problems.items()]) from None
    except RecursionError:
        raise SpecError(source, [("", "nested too deeply")]) from None


def load_spec(path) -> Spec:
    """Read and validate a spec file. Raises SpecError (exit code 2) for every problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise SpecError(path, [("", "not a file; give the path of a .json spec")])
        if size > MAX_SPEC_BYTES:
            raise SpecError(path, [("", f"{size:,} bytes is too large for a spec (limit {MAX_SPEC_BYTES:,}); is this the right file?")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, [("", "no such file; `zoo list` shows the catalog in specs/")]) from None
    except OSError as e:
        raise SpecError(path, [("", f"cannot read: {e.strerror}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError(path, [("", "not UTF-8 text; a spec is a JSON file")]) from None
    if not text.strip():
        raise SpecError(path, [("", "empty file; a spec is a JSON object, see specs/ for examples")])
    return validate(parse_json(text, path), path)


def resolve(spec: Spec) -> dict:
    """The spec as JSON with every default filled in."""
    return spec.model_dump(mode="json")


def dumps(spec: Spec) -> str:
    return json.dumps(resolve(spec), indent=2) + "\n"


def json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "zoo spec"
    return schema


def spec_dir() -> Path:
    """The catalog folder: $ZOO_SPECS, else ./specs."""
    return Path(os.environ.get("ZOO_SPECS", "specs"))
