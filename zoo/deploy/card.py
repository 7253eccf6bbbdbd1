"""card.md: what the model is, its data, its metrics, and how to call the ONNX file.

The Python, JavaScript (Node) and C++ programs are whole programs that run as written in
the run folder: each reads test_data_set_0/input_0.pb, runs model.onnx and prints one
line per example, `index class name probability` (classifiers) or `index value ...`
(regression). tests/test_card_snippets.py runs all three on real exported models. Their
text lives in zoo/deploy/assets/ as templates (card_predict.<language>.txt, with the part
that differs between classifiers and regression in card_predict_<kind>.<language>.txt),
filled from the contract. The "Serve it" section shows zoo serve, a curl request (the one
zoo serve prints too), a tritonclient program and a stock Triton server.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.core import provenance
from zoo.core.contract import (
    BATCH_DIM,
    CARD_FILE,
    DTYPES,
    INPUT_NAME,
    LABELED_OUTPUT,
    LOGITS,
    METRICS_FILE,
    MODEL_KERAS,
    MODEL_ONNX,
    PREDICTIONS,
    PROBABILITIES,
    SPEC_FILE,
    TEST_DATA_SET,
    VERIFY_FILE,
    Contract,
    test_data_name,
)
from zoo.deploy.serve_card import serve_section
from zoo.deploy.templates import template

TEST_INPUT = test_data_name("input", 0)
TESTED_WITH = ("zoo's test suite (tests/test_card_snippets.py) runs these three programs exactly as this "
               "card prints them, on a freshly exported classifier and regression model: the Python one with "
               "onnxruntime 1.31 (pip), the JavaScript one with Node 20 and onnxruntime-node 1.30 (npm, "
               "`--ignore-scripts`), the C++ one built with g++ 12 against the C/C++ headers of Debian's "
               "libonnxruntime-dev 1.21 (API version 21; the pip wheel ships `libonnxruntime.so` but no headers) "
               "and linked with the pip wheel's `libonnxruntime.so.1`. Each prints the same classes as onnxruntime "
               "in Python.")


def write_card(run, spec, metrics, opset) -> None:
    if spec.is_table:  # one named input per column: a card of its own
        from zoo.deploy import table_card

        return table_card.write_card(run, spec, metrics, opset)
    c = Contract.from_spec(spec)
    parts = [_about(spec, c, metrics, opset), _python(c), _javascript(c), _cpp(c), _browser(c), serve_section(c, run),
             _tested()]
    variants = _verified_variants(run)
    if variants:  # the table comes from verify.json: the card is then made from it too
        from zoo.deploy.variants_card import variants_section

        parts.insert(1, variants_section(variants))
    provenance.save_text(run, CARD_FILE, "\n".join(parts), "export",
                         inputs=[MODEL_ONNX, METRICS_FILE] + ([VERIFY_FILE] if variants else []))


def _verified_variants(run) -> dict | None:
    """verify.json's content where it is current and holds variants' figures; else None."""
    from zoo.core.errors import ZooError
    from zoo.core.files import read_json

    try:
        provenance.check_chain(Path(run), VERIFY_FILE)
        report = read_json(Path(run) / VERIFY_FILE)
    except ZooError:
        return None
    return report if report.get("variants") else None


def _bare(name: str) -> str:
    return Path(name).name


def _shape(c: Contract) -> str:
    return ", ".join(map(str, c.input_shape))


def _about(spec, c: Contract, metrics, opset) -> str:
    m = spec.model
    test = ", ".join(f"{k} {v:.4f}" for k, v in ((metrics or {}).get("test") or {}).items()) or "not recorded"
    out_desc = ("`logits` (batch, num_classes) and `probabilities` (softmax of the logits)"
                if c.is_classifier else f"`predictions` (batch, {spec.num_outputs})")
    layers = " → ".join([f"{m.input_shape} {m.input_dtype}"] + [str(h.units) for h in m.hidden] + [str(spec.num_outputs)])
    classes = f"\nClasses: {', '.join(m.class_names)}\n" if m.class_names else ""
    return f"""# {spec.name}

{spec.description or 'A zoo model.'}

- kind: {m.kind} ({layers})
- data: `{spec.data.dataset}`{f' ({spec.data.path})' if spec.data.path else ''}
- training: {spec.train.optimizer}, learning rate {spec.train.learning_rate}, batch {spec.train.batch_size}, {spec.train.epochs} epochs, seed {spec.train.seed}
- test metrics: {test}
- ONNX: opset {opset}; input `{INPUT_NAME}` {[BATCH_DIM, *m.input_shape]} {m.input_dtype}, raw values (preprocessing is inside the graph); outputs {out_desc}
{_image_line(spec)}{classes}
Files: `{MODEL_ONNX}`, `{MODEL_KERAS}`, `{SPEC_FILE}`, `{METRICS_FILE}`, `{VERIFY_FILE}`, and
`{TEST_DATA_SET}/` ({_bare(TEST_INPUT)}, {_bare(test_data_name("output", 0))}, ...: TensorProtos to check any runtime).

Each program below runs in this folder: it reads `{TEST_INPUT}`, runs `{MODEL_ONNX}` and
prints one line per example: {'`index class name probability`' if c.is_classifier else '`index value ...`'}.
"""


def _image_line(spec) -> str:
    """The card's word on images for `zoo predict` (and the page): what an image must be."""
    from zoo.stages.predict import image_reading

    said = image_reading(spec.model.input_shape, spec.data.dataset)
    return f"- images (`zoo predict MODEL.onnx IMAGE`): {said}\n" if said else ""


def _values(c: Contract) -> dict:
    """What the programs' templates fill in, all from the contract."""
    dtype = c.input_dtype
    outs = list(c.outputs)
    return {
        "model_onnx": MODEL_ONNX, "test_input": TEST_INPUT, "input_name": INPUT_NAME, "input_dtype": dtype,
        "shape": _shape(c), "classes": json.dumps(c.labels()), "labeled_output": LABELED_OUTPUT,
        "logits_output": LOGITS, "probabilities_output": PROBABILITIES, "predictions_output": PREDICTIONS,
        # a copy for float32: typed arrays need aligned bytes
        "js_data": "new Uint8Array(raw)" if dtype == "uint8" else f"new {DTYPES[dtype]['js']}(new Uint8Array(raw).buffer)",
        "ctype": DTYPES[dtype]["c"], "output_names": ", ".join(json.dumps(o) for o in outs), "output_count": len(outs),
        "cpp_classes": ", ".join(json.dumps(n) for n in c.labels()), "class_count": len(c.labels()),
        "labeled_index": outs.index(LABELED_OUTPUT) if c.is_classifier else 0, "output_width": c.output_widths[0],
    }


def program(c: Contract, language: str) -> str:
    """The card's whole program in `language` ("py", "mjs" or "cpp") for this contract, as printed."""
    values = _values(c)
    body = template(f"card_predict_{'classifier' if c.is_classifier else 'regression'}.{language}.txt")
    return template(f"card_predict.{language}.txt").substitute(values, body=body.substitute(values))


def _python(c: Contract) -> str:
    return f"""## Python (onnxruntime)

`pip install onnxruntime onnx`, then `python predict.py`:

```python
{program(c, "py")}
```
"""


def _javascript(c: Contract) -> str:
    return f"""## JavaScript (Node, onnxruntime-node)

An ES module: save it as `predict.mjs` here, `npm install --ignore-scripts onnxruntime-node`
(its install script downloads optional extras; the CPU build is in the package), then
`node predict.mjs`. In a browser, `import * as ort from "onnxruntime-web"` takes the same
calls: `zoo export RUN --web` writes a page that does.

```js
{program(c, "mjs")}
```
"""


def _cpp(c: Contract) -> str:
    return f"""## C++ (onnxruntime C++ API)

Save as `predict.cpp` here; with onnxruntime's headers and library installed (a release
archive, or Debian's `libonnxruntime-dev`):
`g++ -std=c++17 -O2 predict.cpp -I/usr/include/onnxruntime -lonnxruntime -o predict && ./predict`

```cpp
{program(c, "cpp")}
```
"""


def _browser(c: Contract) -> str:
    return f"""## In the browser (onnxruntime-web)

`zoo export RUN --web` writes `web/` beside the model: a page that runs it with
onnxruntime-web (WebAssembly){', draws or loads an image and shows the top classes' if c.is_classifier else ', with a form for the inputs'};
`zoo web RUN` serves it on 127.0.0.1. Other pages call `window.zoo.predict(x)`.
"""


def _tested() -> str:
    return f"""## How these snippets were tested

{TESTED_WITH}
"""
