"""The text files of zoo/deploy/assets: read as they are, or as the card's program templates."""

from __future__ import annotations

import string
from importlib import resources


def text(name: str) -> str:
    """zoo/deploy/assets/`name`, as text."""
    return resources.files("zoo.deploy.assets").joinpath(name).read_text(encoding="utf-8")


def template(name: str) -> string.Template:
    """A program template of zoo/deploy/assets/ (`$name` fills in a value, `$$` is a dollar sign)."""
    return string.Template(text(name).removesuffix("\n"))
