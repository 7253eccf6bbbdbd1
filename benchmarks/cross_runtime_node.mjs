// Node side of benchmarks/cross_runtime.py: run model.onnx with onnxruntime-node on a raw
// input file, `repeats` timed calls, and write the outputs and the timings as JSON.
//   node cross_runtime_node.mjs MODEL.onnx INPUT.bin DTYPE DIMS_JSON REPEATS OUT.json
import * as ort from "onnxruntime-node";
import { readFileSync, writeFileSync } from "node:fs";

const [model, inputPath, dtype, dimsJson, repeatsText, outPath] = process.argv.slice(2);
const dims = JSON.parse(dimsJson);
const bytes = readFileSync(inputPath);
const copy = new Uint8Array(bytes).buffer; // aligned
const data = dtype === "uint8" ? new Uint8Array(copy) : new Float32Array(copy);
const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"] });
const feeds = { [session.inputNames[0]]: new ort.Tensor(dtype, data, dims) };
let results;
for (let i = 0; i < 5; i++) results = await session.run(feeds); // warm-up
const ms = [];
for (let i = 0; i < Number(repeatsText); i++) {
  const t0 = process.hrtime.bigint();
  results = await session.run(feeds);
  ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
const outputs = Object.fromEntries(session.outputNames.map((n) => [n, Array.from(results[n].data)]));
writeFileSync(outPath, JSON.stringify({ outputs, ms, version: ort.env.versions?.node ?? "" }));
