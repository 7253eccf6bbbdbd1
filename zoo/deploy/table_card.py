"""card.md for a table: the model takes one named input per column, some of them strings.

The Python, Node and C++ programs hold two example rows literally (a typical row: each
category the first one seen in training, each number the training mean; and a row of
missing values), build the string and float32 tensors, run model.onnx and print one line
per row: `index class name probability` (classifiers) or `index value` (regression).
tests/test_tabular.py runs all three as printed.
"""

from __future__ import annotations

import json

from zoo.core import provenance
from zoo.core.contract import (
    CARD_FILE,
    META_COLUMNS,
    METRICS_FILE,
    MODEL_ONNX,
    PREPROCESSING_FILE,
    TEST_DATA_SET,
    Contract,
)
from zoo.deploy.serve_card import example_rows, serve_section
from zoo.deploy.templates import template


def _cpp_columns(rows: dict[str, list], kinds: dict[str, str]) -> str:
    """The C++ program's column initializers: {"name", text?, {strings}, {numbers}}."""
    lines = []
    for name, values in rows.items():
        if kinds.get(name) == "string":
            cells = ", ".join(json.dumps("" if v is None else v) for v in values)
            lines.append(f"      {{{json.dumps(name)}, true, {{{cells}}}, {{}}}},")
        else:
            cells = ", ".join("NA" if v is None else f"{float(v)!r}f" for v in values)
            lines.append(f"      {{{json.dumps(name)}, false, {{}}, {{{cells}}}}},")
    return "\n".join(lines)


def program(c: Contract, language: str) -> str:
    """The card's whole program in `language` ("py", "mjs" or "cpp") for a table's contract."""
    columns = c.metadata.get(META_COLUMNS) or []
    rows = example_rows(columns)
    kinds = {n: d for n, d, _ in c.columns}
    classes = c.labels() if c.is_classifier else []
    return template(f"card_table_predict.{language}.txt").substitute(
        rows_py=repr(rows), rows_js=json.dumps(rows), classes=json.dumps(classes), model_onnx=MODEL_ONNX,
        last_output=c.outputs[-1], kinds_js=json.dumps(kinds), cpp_columns=_cpp_columns(rows, kinds),
        row_count=len(next(iter(rows.values()), [])), cpp_classes=", ".join(json.dumps(n) for n in classes))


def write_card(run, spec, metrics, opset) -> None:
    c = Contract.from_onnx(run / MODEL_ONNX)
    test = ", ".join(f"{k} {v:.4f}" for k, v in ((metrics or {}).get("test") or {}).items()) or "not recorded"
    cv = (metrics or {}).get("cv")
    cv_line = ("- cross-validation ({folds} folds): ".format(**cv) + ", ".join(
        f"{k} {v:.4f} ± {cv['std'][k]:.4f}" for k, v in cv["mean"].items()) + "\n") if cv else ""
    inputs = "\n".join(f"| `{name}` | {col} | {dtype} |" for name, dtype, col in c.columns)
    text = f"""# {spec.name}

{spec.description or 'A zoo model.'}

- kind: {spec.model.kind} on a table (`{spec.data.dataset}`{f', {spec.data.path}' if spec.data.path else ''}), label `{spec.data.label_column}`
- test metrics: {test}
{cv_line}- ONNX: opset {opset}; outputs {', '.join(f'`{o}`' for o in c.outputs)}{' (in the target units: exp of the log the model learned)' if spec.data.target_transform == 'log' else ''}
{f'{chr(10)}Classes: {", ".join(c.labels())}{chr(10)}' if c.is_classifier else ''}
## Inputs: one per column, each [batch, 1]

Text columns are `string` tensors (an empty string or `NA` is missing; a category never seen in
training counts as none of them), numbers are float32 (NaN is missing). The preprocessing
(standardization, one-hot) is inside the graph; its fitted figures are in `{PREPROCESSING_FILE}`.

| input | column | dtype |
| --- | --- | --- |
{inputs}

`{TEST_DATA_SET}/` holds one `input_N.pb` per input, in this order, and the outputs.

## Python (onnxruntime)

`pip install onnxruntime`, then `python predict.py` here:

```python
{program(c, "py")}
```

## JavaScript (Node, onnxruntime-node)

Save as `predict.mjs` here, `npm install --ignore-scripts onnxruntime-node`, then `node predict.mjs`:

```js
{program(c, "mjs")}
```

## C++ (onnxruntime C++ API, string tensors)

Save as `predict.cpp` here; with onnxruntime's headers and library installed:
`g++ -std=c++17 -O2 predict.cpp -I/usr/include/onnxruntime -lonnxruntime -o predict && ./predict`

```cpp
{program(c, "cpp")}
```
{serve_section(c, run)}"""
    provenance.save_text(run, CARD_FILE, text, "export", inputs=[MODEL_ONNX, METRICS_FILE])
