"""card.md: what the model is, its data, its metrics, and how to call the ONNX file.

The Python, JavaScript (Node) and C++ snippets are whole programs that run as written in
the run folder: each reads test_data_set_0/input_0.pb, runs model.onnx and prints one
line per example, `index class name probability` (classifiers) or `index value ...`
(regression). tests/test_card_snippets.py runs all three on real exported models.
"""

from __future__ import annotations

import json

from zoo.core import provenance
from zoo.core.contract import (
    BATCH_DIM,
    CARD_FILE,
    DTYPES,
    INPUT_NAME,
    LABELED_OUTPUT,
    LOGITS,
    METRICS_FILE,
    MODEL_ONNX,
    PREDICTIONS,
    PROBABILITIES,
    TEST_DATA_SET,
    Contract,
)

TEST_INPUT = f"{TEST_DATA_SET}/input_0.pb"
TESTED_WITH = ("zoo's test suite (tests/test_card_snippets.py) runs these three programs exactly as this "
               "card prints them, on a freshly exported classifier and regression model: the Python one with "
               "onnxruntime 1.31 (pip), the JavaScript one with Node 20 and onnxruntime-node 1.30 (npm, "
               "`--ignore-scripts`), the C++ one built with g++ 12 against the C/C++ headers of Debian's "
               "libonnxruntime-dev 1.21 (API version 21; the pip wheel ships `libonnxruntime.so` but no headers) "
               "and linked with the pip wheel's `libonnxruntime.so.1`. Each prints the same classes as onnxruntime "
               "in Python.")


def write_card(run, spec, metrics, opset) -> None:
    c = Contract.from_spec(spec)
    from zoo.deploy.triton import card_section

    parts = [_about(spec, c, metrics, opset), _python(c), _javascript(c), _cpp(c), _browser(c),
             card_section(c, run), _tested()]  # card_section: "Serve it" (zoo serve, curl, tritonclient, Triton)
    provenance.save_text(run, CARD_FILE, "\n".join(parts), "export", inputs=[MODEL_ONNX, METRICS_FILE])


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
{classes}
Files: `model.onnx`, `model.keras`, `spec.json`, `metrics.json`, `verify.json`, and
`{TEST_DATA_SET}/` (input_0.pb, output_0.pb, ...: TensorProtos to check any runtime).

Each program below runs in this folder: it reads `{TEST_INPUT}`, runs `model.onnx` and
prints one line per example: {'`index class name probability`' if c.is_classifier else '`index value ...`'}.
"""


def _python(c: Contract) -> str:
    if c.is_classifier:
        body = f"""classes = {json.dumps(c.labels())}
session = ort.InferenceSession("{MODEL_ONNX}", providers=["CPUExecutionProvider"])
x = numpy_helper.to_array(onnx.load_tensor("{TEST_INPUT}"))  # (n, {_shape(c)}) {c.input_dtype}, raw values
logits, probabilities = session.run(["{LOGITS}", "{PROBABILITIES}"], {{"{INPUT_NAME}": x}})
for i, p in enumerate(probabilities):
    best = int(np.argmax(p))
    print(i, best, classes[best], f"{{p[best]:.6f}}")"""
    else:
        body = f"""session = ort.InferenceSession("{MODEL_ONNX}", providers=["CPUExecutionProvider"])
x = numpy_helper.to_array(onnx.load_tensor("{TEST_INPUT}"))  # (n, {_shape(c)}) {c.input_dtype}
(predictions,) = session.run(["{PREDICTIONS}"], {{"{INPUT_NAME}": x}})
for i, row in enumerate(predictions):
    print(i, " ".join(f"{{v:.6f}}" for v in row))"""
    return f"""## Python (onnxruntime)

`pip install onnxruntime onnx`, then `python predict.py`:

```python
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

{body}
```
"""


_JS_READ_TENSOR = """// An ONNX TensorProto: field 1 holds the dims, field 9 the raw little-endian values.
function readTensor(path) {
  const bytes = readFileSync(path);
  let at = 0;
  const varint = () => {
    let value = 0, shift = 0, byte;
    do { byte = bytes[at++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80);
    return value;
  };
  const dims = [];
  let raw = null;
  while (at < bytes.length) {
    const key = varint(), field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) { const v = varint(); if (field === 1) dims.push(v); }
    else if (wire === 2) {
      const end = varint() + at;
      if (field === 1) while (at < end) dims.push(varint());
      else if (field === 9) raw = bytes.subarray(at, end);
      at = end;
    } else if (wire === 5) at += 4;
    else if (wire === 1) at += 8;
    else throw new Error(`${path}: unexpected protobuf wire type ${wire}`);
  }
  return { dims, raw };
}"""


def _javascript(c: Contract) -> str:
    dtype = c.input_dtype
    typed = DTYPES[dtype]["js"]
    data = ("new Uint8Array(raw)" if dtype == "uint8" else
            f"new {typed}(new Uint8Array(raw).buffer)")  # a copy: typed arrays need aligned bytes
    if c.is_classifier:
        tail = f"""const classes = {json.dumps(c.labels())};
const p = results.{LABELED_OUTPUT}.data, k = classes.length;
for (let i = 0; i < dims[0]; i++) {{
  const row = Array.from(p.subarray(i * k, (i + 1) * k));
  const best = row.indexOf(Math.max(...row));
  console.log(i, best, classes[best], row[best].toFixed(6));
}}"""
    else:
        tail = """const y = results.predictions.data, k = y.length / dims[0];
for (let i = 0; i < dims[0]; i++) {
  console.log(i, Array.from(y.subarray(i * k, (i + 1) * k), (v) => v.toFixed(6)).join(" "));
}"""
    return f"""## JavaScript (Node, onnxruntime-node)

An ES module: save it as `predict.mjs` here, `npm install --ignore-scripts onnxruntime-node`
(its install script downloads optional extras; the CPU build is in the package), then
`node predict.mjs`. In a browser, `import * as ort from "onnxruntime-web"` takes the same
calls: `zoo export RUN --web` writes a page that does.

```js
import * as ort from "onnxruntime-node";
import {{ readFileSync }} from "node:fs";

{_JS_READ_TENSOR}

const {{ dims, raw }} = readTensor("{TEST_INPUT}");
const x = new ort.Tensor("{dtype}", {data}, dims);  // (n, {_shape(c)}) raw values
const session = await ort.InferenceSession.create("{MODEL_ONNX}");
const results = await session.run({{ {INPUT_NAME}: x }});
{tail}
```
"""


def _cpp(c: Contract) -> str:
    ctype = DTYPES[c.input_dtype]["c"]
    outs = list(c.outputs)
    labeled = outs.index(LABELED_OUTPUT) if c.is_classifier else 0
    if c.is_classifier:
        names = ", ".join(json.dumps(n) for n in c.labels())
        report = f"""  const char* classes[] = {{{names}}};
  const size_t k = {len(c.labels())};
  const float* p = outputs[{labeled}].GetTensorData<float>();
  std::cout << std::fixed << std::setprecision(6);
  for (int64_t i = 0; i < t.dims[0]; ++i) {{
    const float* row = p + i * k;
    size_t best = std::max_element(row, row + k) - row;
    std::cout << i << " " << best << " " << classes[best] << " " << row[best] << "\\n";
  }}"""
    else:
        report = f"""  const float* y = outputs[0].GetTensorData<float>();
  const size_t k = {c.output_widths[0]};
  std::cout << std::fixed << std::setprecision(6);
  for (int64_t i = 0; i < t.dims[0]; ++i) {{
    std::cout << i;
    for (size_t j = 0; j < k; ++j) std::cout << " " << y[i * k + j];
    std::cout << "\\n";
  }}"""
    return f"""## C++ (onnxruntime C++ API)

Save as `predict.cpp` here; with onnxruntime's headers and library installed (a release
archive, or Debian's `libonnxruntime-dev`):
`g++ -std=c++17 -O2 predict.cpp -I/usr/include/onnxruntime -lonnxruntime -o predict && ./predict`

```cpp
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

struct Tensor {{
  std::vector<int64_t> dims;
  std::string raw;
}};

// An ONNX TensorProto: field 1 holds the dims, field 9 the raw little-endian values.
static Tensor read_tensor(const char* path) {{
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(std::string("cannot open ") + path);
  const std::string b((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto varint = [&]() {{
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {{
      const uint8_t byte = static_cast<uint8_t>(b.at(at++));
      value |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }}
  }};
  Tensor t;
  while (at < b.size()) {{
    const uint64_t key = varint(), field = key >> 3, wire = key & 7;
    if (wire == 0) {{
      const uint64_t v = varint();
      if (field == 1) t.dims.push_back(int64_t(v));
    }} else if (wire == 2) {{
      const size_t n = varint(), end = at + n;
      if (field == 1) while (at < end) t.dims.push_back(int64_t(varint()));
      else if (field == 9) t.raw = b.substr(at, n);
      at = end;
    }} else if (wire == 5) {{
      at += 4;
    }} else if (wire == 1) {{
      at += 8;
    }} else {{
      throw std::runtime_error("unexpected protobuf wire type");
    }}
  }}
  return t;
}}

int main() {{
  const Tensor t = read_tensor("{TEST_INPUT}");
  std::vector<{ctype}> x(t.raw.size() / sizeof({ctype}));  // (n, {_shape(c)}) raw values
  std::memcpy(x.data(), t.raw.data(), t.raw.size());

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "zoo");
  Ort::Session session(env, "{MODEL_ONNX}", Ort::SessionOptions{{}});
  auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  Ort::Value input = Ort::Value::CreateTensor<{ctype}>(memory, x.data(), x.size(), t.dims.data(), t.dims.size());
  const char* input_names[] = {{"{INPUT_NAME}"}};
  const char* output_names[] = {{{", ".join(json.dumps(o) for o in outs)}}};
  auto outputs = session.Run(Ort::RunOptions{{nullptr}}, input_names, &input, 1, output_names, {len(outs)});

{report}
  return 0;
}}
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
