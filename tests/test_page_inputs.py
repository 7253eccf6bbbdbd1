"""The page's API, `window.zoo.predict`, holds one set of rules for every input type it takes:
NaN, Infinity, values beyond float32 and non-numbers are a rejected promise, never NaN outputs.
In a real headless Chromium, offline (see test_web.py)."""

from __future__ import annotations

import pytest
from test_web import _export_web, _need_ort_web, browser, digits, open_page  # noqa: F401  (fixtures)

KINDS = ["Array.from", "Float32Array.from", "Float64Array.from"]
BAD = [("NaN", "finite"), ("Infinity", "finite"), ("-Infinity", "finite"), ("1e39", "fit float32"),
       ("-3.5e38", "fit float32")]


@pytest.fixture(scope="module")
def page_of_digits(digits, tmp_path_factory):  # noqa: F811
    _need_ort_web()
    _export_web(digits, tmp_path_factory.mktemp("pageinputs"))
    return digits


def _outcome(page, kind, bad, where=17):
    script = f"""() => {{
        const values = new Array(64).fill(0.5); values[{where}] = {bad};
        return window.zoo.predict({kind}(values)).then(r => 'resolved ' + JSON.stringify(r.probabilities[0][0]),
                                                       e => 'rejected ' + e.message);
    }}"""
    return page.evaluate(script)


@pytest.mark.parametrize("kind", KINDS)
def test_every_input_type_rejects_what_float32_cannot_hold(page_of_digits, open_page, kind):  # noqa: F811
    page, _, _ = open_page(page_of_digits)
    for bad, words in BAD:
        if kind == "Float32Array.from" and bad in ("1e39", "-3.5e38"):
            continue  # a Float32Array cannot hold them: it stores Infinity, which is the NaN/Infinity case
        got = _outcome(page, kind, bad)
        assert got.startswith("rejected") and words in got, (kind, bad, got)
    assert _outcome(page, kind, "0.25").startswith("resolved "), "a good input still resolves"
    assert _outcome(page, kind, "3.4e38").startswith("resolved "), "the largest float32 is a float32"


def test_non_numbers_are_rejected(page_of_digits, open_page):  # noqa: F811
    page, _, _ = open_page(page_of_digits)
    for bad in ("'0.5'", "null", "true", "[0.5]", "{}"):
        got = _outcome(page, "Array.from", bad)
        assert got.startswith("rejected"), (bad, got)
