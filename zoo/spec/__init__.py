"""The spec: its schema, loading and validation, dotted keys, and the catalog.

Everything here is pure Python and pydantic: no TensorFlow, no numpy.
"""

from zoo.spec.load import dumps, json_schema, load_spec, parse_json, resolve, spec_dir, validate
from zoo.spec.schema import CHECKS, Spec

__all__ = ["CHECKS", "Spec", "dumps", "json_schema", "load_spec", "parse_json", "resolve", "spec_dir", "validate"]
