"""Dotted spec keys, the one place they are parsed, set and compared.

`model.hidden[0].units` names a value inside a spec's JSON. The sweep sets keys from
`--set KEY=V1,V2`, the API sets train overrides, and `--resume` compares two specs key by
key: all three go through the functions here.
"""

from __future__ import annotations

import json
import re

from zoo.core.errors import SpecError, UsageError

_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def key_path(key: str, flag="--set") -> list:
    """`model.hidden[0].units` -> ["model", "hidden", 0, "units"]; UsageError if malformed."""
    parts, pos = [], 0
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if not m or (pos == 0 and key.startswith(".")) or (pos > 0 and m.group(1) and key[pos] != "."):
            raise UsageError(f"{flag} {key}: not a key path; write it like train.learning_rate or model.hidden[0].units")
        parts.append(m.group(1) if m.group(1) else int(m.group(2)))
        pos = m.end()
    if not parts or not isinstance(parts[0], str):
        raise UsageError(f"{flag} {key!r}: not a key path; write it like train.learning_rate or model.hidden[0].units")
    return parts


def set_key(data: dict, key: str, value, source="--set") -> dict:
    """`data` with `value` at `key` (a copy); SpecError naming `source` when the path leads nowhere."""
    data = json.loads(json.dumps(data))
    parts, node, where = key_path(key, source), data, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        label = where + (f"[{part}]" if isinstance(part, int) else ("." if where else "") + part)
        if isinstance(part, int):
            if not isinstance(node, list):
                raise SpecError(source, [(where, f"is not a list; {key} cannot index it")])
            if part >= len(node):
                raise SpecError(source, [(label, f"out of range: the spec's {where} has {len(node)} item(s)")])
        else:
            if not isinstance(node, dict):
                raise SpecError(source, [(where, f"is not an object; {key} cannot reach into it")])
            if not last and node.get(part) is None and part in node:
                node[part] = {}  # an optional section left out (data.synthetic): start it
        if last:
            node[part] = value
        elif isinstance(part, str) and part not in node:
            node[part] = {}  # validation names the unknown key and lists the valid ones
            node = node[part]
        else:
            node = node[part]
        where = label
    return data


def flatten(value, prefix="") -> dict:
    """{dotted key: leaf value} of a JSON object (lists are leaves)."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def under(key: str, prefixes) -> bool:
    """Whether `key` is one of `prefixes` or lies inside one."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def diff(a: dict, b: dict, ignore=()) -> dict:
    """{dotted key: (value in a, value in b)} for every key whose values differ, outside `ignore`."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and not under(k, ignore)}
