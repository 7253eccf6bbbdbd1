// The page's script: a plain ES module, no build step. It loads model.json (the model's
// contract, written by `zoo export --web`), onnxruntime-web (the WebAssembly build) and
// model.onnx, then exposes
//
//   window.zoo = {ready: Promise, predict(input) -> Promise<{logits, probabilities}>}
//
// (regression models: {predictions}). `input` is a Uint8Array, Float32Array or plain array
// of numbers holding one example or a batch, row-major; each output is a plain array of
// rows, one per example. The page's own controls call the same predict().

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
};

let config, ort, session;
let queue = Promise.resolve(); // onnxruntime-web runs one call of a session at a time

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function init() {
  config = await fetchJson("model.json");
  try {
    ort = await import("onnxruntime-web"); // resolved by the import map in index.html
  } catch (e) {
    throw new Error(`cannot load onnxruntime-web from ${config.ort.module} (${e.message})`);
  }
  ort.env.wasm.numThreads = 1; // threads need a cross-origin-isolated page; one is plenty here
  ort.env.wasm.proxy = false;
  const integrity = config.ort.integrity[config.ort.wasm];
  const wasm = await fetch(config.ort.wasm, integrity ? { integrity } : {});
  if (!wasm.ok) throw new Error(`cannot load ${config.ort.wasm}: HTTP ${wasm.status}`);
  ort.env.wasm.wasmBinary = await wasm.arrayBuffer(); // the only copy used: never another URL
  session = await ort.InferenceSession.create(config.model || "model.onnx", { executionProviders: ["wasm"] });
  return config;
}

const exampleSize = () => config.input.shape.reduce((a, b) => a * b, 1);

const FLOAT32_MAX = 3.4028234663852886e38;

// One set of rules for every input type (plain array, Float32Array, Uint8Array, any typed
// array): numbers only, finite, and within what the model's dtype holds. A Float32Array of
// NaN or a plain 1e39 would otherwise run, and answer NaN.
function toTyped(input) {
  const Typed = globalThis[config.input.js]; // Uint8Array or Float32Array, from the contract
  const values = Array.from(input);
  if (!values.every((v) => typeof v === "number")) throw new Error("inputs must be numbers");
  if (!values.every(Number.isFinite)) throw new Error("inputs must be finite numbers (no NaN or Infinity)");
  if (config.input.dtype === "uint8") {
    if (!values.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
      throw new Error("this model takes uint8 pixel values: integers 0..255");
    }
  } else if (!values.every((v) => Math.abs(v) <= FLOAT32_MAX)) {
    throw new Error("inputs must fit float32 (|x| <= 3.4e38)");
  }
  return input instanceof Typed ? input : Typed.from(values);
}

async function predict(input) {
  await ready;
  if (config.columns) return runFeeds(...tableFeeds(input)); // a table: an object of columns
  if (input == null || typeof input.length !== "number") {
    throw new Error("predict(input): give a Uint8Array, Float32Array or array of numbers");
  }
  const x = toTyped(input);
  const size = exampleSize();
  if (x.length === 0 || x.length % size !== 0) {
    throw new Error(`predict(input): ${x.length} values is not a whole number of examples of ` +
      `${size} (shape [${config.input.shape}])`);
  }
  const batch = x.length / size;
  const feeds = { [config.input.name]: new ort.Tensor(config.input.dtype, x, [batch, ...config.input.shape]) };
  return runFeeds(feeds, batch);
}

async function runFeeds(feeds, batch) {
  const run = queue.then(() => session.run(feeds));
  queue = run.catch(() => {});
  const out = await run;
  const result = {};
  for (const name of config.outputs) {
    const data = Array.from(out[name].data);
    const width = data.length / batch;
    result[name] = Array.from({ length: batch }, (_, i) => data.slice(i * width, (i + 1) * width));
  }
  return result;
}

const ready = init();
window.zoo = { ready, predict, current: null };

// ----- the page ---------------------------------------------------------------------------

ready.then(setUp, (e) => {
  const advice = config?.ort?.advice ?? "Serve this folder with `zoo web RUN` (a page opened as a file cannot load its model).";
  status(`Error: ${e.message}. ${advice}`, true);
  console.error(e);
});

async function setUp() {
  document.title = `${config.name} · zoo`;
  $("title").textContent = config.name;
  $("description").textContent = config.description;
  const metrics = Object.entries(config.metrics).map(([k, v]) => `${k} ${Number(v).toFixed(4)}`).join(", ");
  const where = config.ort.source === "local" ? "local copy in ort/" : `CDN, ${config.ort.module}`;
  $("footer").textContent = `Input "${config.input.name}" [batch, ${config.input.shape}] ${config.input.dtype}; ` +
    `outputs ${config.outputs.join(", ")}. Test metrics: ${metrics || "not recorded"}. ` +
    `Model: ${config.model || "model.onnx"} (variant ${config.variant || "float32"}). ` +
    `onnxruntime-web ${config.ort.version} (WebAssembly, ${where}).`;
  if (config.columns) {
    $("footer").textContent = `Inputs: ${config.columns.length} columns, each [batch, 1] (text: string, ` +
      `numbers: float32, blank = missing); outputs ${config.outputs.join(", ")}. Test metrics: ` +
      `${metrics || "not recorded"}. onnxruntime-web ${config.ort.version} (WebAssembly, ${where}).`;
  }
  if (config.view === "image") setUpImage();
  else if (config.view === "table") setUpTable();
  else setUpForm();
  if (config.examples) await setUpExamples();
  status(`ready: runs in this browser with onnxruntime-web ${config.ort.version}`);
}

async function show(x) {
  const out = await predict(x);
  window.zoo.current = { input: config.columns ? x : Array.from(x), ...Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v[0]])) };
  if (config.is_classifier) {
    const p = out.probabilities[0];
    const top = p.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
    $("bars").innerHTML = "";
    for (const [v, i] of top) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.index = i;
      row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="p"></span>`;
      row.querySelector(".name").textContent = config.class_names[i];
      row.querySelector(".fill").style.width = `${(100 * v).toFixed(1)}%`;
      row.querySelector(".p").textContent = `${(100 * v).toFixed(1)}%`;
      $("bars").append(row);
    }
  } else {
    $("values").textContent = out.predictions[0].map((v) => v.toPrecision(6)).join("\n");
  }
  return out;
}

// Draws one example (a flat array, shape [h, w], values 0..ink) onto a canvas of h x w pixels.
function paint(canvas, values, h, w) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const ink = config.drawing.ink;
  for (let i = 0; i < h * w; i++) {
    const g = Math.max(0, Math.min(255, Math.round((255 * values[i]) / ink)));
    img.data.set([g, g, g, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// Area-averages a grey image (Float32Array, sw x sh, 0..1) from the box (x0, y0, bw, bh) into tw x th.
function resample(src, sw, x0, y0, bw, bh, tw, th) {
  const out = new Float32Array(tw * th);
  const sx = bw / tw, sy = bh / th;
  for (let ty = 0; ty < th; ty++) {
    for (let tx = 0; tx < tw; tx++) {
      let sum = 0, area = 0;
      for (let y = Math.floor(y0 + ty * sy); y < Math.ceil(y0 + (ty + 1) * sy); y++) {
        const wy = Math.min(y + 1, y0 + (ty + 1) * sy) - Math.max(y, y0 + ty * sy);
        for (let x = Math.floor(x0 + tx * sx); x < Math.ceil(x0 + (tx + 1) * sx); x++) {
          const wx = Math.min(x + 1, x0 + (tx + 1) * sx) - Math.max(x, x0 + tx * sx);
          sum += wx * wy * src[y * sw + x];
          area += wx * wy;
        }
      }
      out[ty * tw + tx] = area ? sum / area : 0;
    }
  }
  return out;
}

function grey(ctx, w, h) {
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const g = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) g[i] = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / (3 * 255);
  return g;
}

// A drawing (or image) as the training data looks: light on dark, the thing scaled into a
// box (digits: 20/28 of a 28x28 frame, then centred by its centre of mass, as MNIST was;
// otherwise the whole frame), at full contrast, then values 0..ink in the model's dtype.
function toModelInput(g, w, h) {
  const [H, W] = config.input.shape;
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    if (g[y * w + x] > 0.05) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
  }
  let frame = new Float32Array(H * W);
  if (x1 >= 0) {
    const digit = config.drawing.style === "digit";
    const box = digit && H >= 20 ? Math.round((20 * H) / 28) : H;
    const side = Math.max(x1 - x0 + 1, y1 - y0 + 1); // keep the aspect ratio: a square box round the ink
    const cx = (x0 + x1 + 1) / 2, cy = (y0 + y1 + 1) / 2;
    const small = resample(padded(g, w, h, cx - side / 2, cy - side / 2, side), side, 0, 0, side, side, box, box);
    let ox = Math.floor((W - box) / 2), oy = Math.floor((H - box) / 2);
    if (digit && box < H) { // shift so the centre of mass is the frame's centre
      let m = 0, mx = 0, my = 0;
      for (let y = 0; y < box; y++) for (let x = 0; x < box; x++) { const v = small[y * box + x]; m += v; mx += v * x; my += v * y; }
      if (m > 0) {
        ox = Math.max(0, Math.min(W - box, Math.round(W / 2 - mx / m - 0.5)));
        oy = Math.max(0, Math.min(H - box, Math.round(H / 2 - my / m - 0.5)));
      }
    }
    for (let y = 0; y < box; y++) for (let x = 0; x < box; x++) frame[(y + oy) * W + x + ox] = small[y * box + x];
  }
  // Stretch to full contrast: a thin stroke shrunk into a few pixels must still read as ink
  // (the 8x8 digits count a 4x4 block of a 32x32 bitmap each, so their strokes reach 16).
  const peak = frame.reduce((a, b) => Math.max(a, b), 0);
  if (peak > 0) frame = frame.map((v) => v / peak);
  const ink = config.drawing.ink;
  const Typed = globalThis[config.input.js];
  return Typed.from(frame, (v) => (config.input.dtype === "uint8" ? Math.round(v * ink) : v * ink));
}

// The square (left, top, side) cut from a grey image, zero outside it.
function padded(g, w, h, left, top, side) {
  const out = new Float32Array(side * side);
  left = Math.round(left); top = Math.round(top);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
    const sx = x + left, sy = y + top;
    if (sx >= 0 && sy >= 0 && sx < w && sy < h) out[y * side + x] = g[sy * w + sx];
  }
  return out;
}

function setUpImage() {
  $("image-view").hidden = false;
  const [H, W] = config.input.shape;
  const pad = $("pad"), ctx = pad.getContext("2d", { willReadFrequently: true });
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  const data = { mnist: "MNIST", fashion_mnist: "Fashion-MNIST", digits: "scikit-learn digits" }[config.dataset] || "training";
  $("pad-hint").textContent = `Draw light on dark, as the ${data} images are.`;
  $("seen-hint").textContent = `${H}×${W} ${config.input.dtype}, values 0–${config.drawing.ink}.`;
  const update = async () => {
    const x = toModelInput(grey(ctx, pad.width, pad.height), pad.width, pad.height);
    paint($("seen"), x, H, W);
    await show(x);
  };
  window.zoo.fromPad = update;
  let last = null;
  const point = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  pad.addEventListener("pointerdown", (e) => { last = point(e); pad.setPointerCapture(e.pointerId); });
  pad.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = point(e);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = pad.width / 14; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
    last = p;
  });
  const end = () => { if (last) { last = null; update(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointerleave", end);
  $("clear").addEventListener("click", () => { clear(); $("bars").innerHTML = ""; paint($("seen"), new Float32Array(H * W), H, W); });
  const load = (file) => {
    const img = new Image();
    img.onload = () => {
      clear();
      const s = Math.min(pad.width / img.width, pad.height / img.height);
      ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
      const g = grey(ctx, pad.width, pad.height);
      let border = 0, n = 0; // a light background (a photo of a shoe on white): invert it, as the data is light on dark
      for (let i = 0; i < pad.width; i++) { border += g[i] + g[(pad.height - 1) * pad.width + i]; n += 2; }
      if (border / n > 0.5) {
        const d = ctx.getImageData(0, 0, pad.width, pad.height);
        for (let i = 0; i < d.data.length; i += 4) for (let c = 0; c < 3; c++) d.data[i + c] = 255 - d.data[i + c];
        ctx.putImageData(d, 0, 0);
      }
      update();
      URL.revokeObjectURL(img.src);
    };
    img.src = URL.createObjectURL(file);
  };
  $("file").addEventListener("change", (e) => e.target.files[0] && load(e.target.files[0]));
  pad.addEventListener("dragover", (e) => { e.preventDefault(); pad.classList.add("over"); });
  pad.addEventListener("dragleave", () => pad.classList.remove("over"));
  pad.addEventListener("drop", (e) => { e.preventDefault(); pad.classList.remove("over"); if (e.dataTransfer.files[0]) load(e.dataTransfer.files[0]); });
}

function setUpForm() {
  $("form-view").hidden = false;
  const size = exampleSize();
  for (let i = 0; i < size; i++) {
    const label = document.createElement("label");
    label.textContent = `x[${i}] `;
    const input = document.createElement("input");
    input.type = "number"; input.step = "any"; input.value = "0"; input.name = `x${i}`;
    label.append(input);
    $("form").append(label);
  }
  const run = () => show(Array.from($("form").elements, (e) => Number(e.value)));
  $("run").addEventListener("click", run);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
}

function decode(examples) {
  const bytes = Uint8Array.from(atob(examples.input_base64), (c) => c.charCodeAt(0));
  return examples.dtype === "uint8" ? bytes : new Float32Array(bytes.buffer);
}

async function setUpExamples() {
  const examples = await fetchJson(config.examples);
  const x = decode(examples);
  const out = await predict(x);
  const size = exampleSize();
  let worst = 0;
  for (const [name, rows] of Object.entries(examples.expected)) {
    rows.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - out[name][i][j])); }));
  }
  $("examples-panel").hidden = false;
  $("agreement").textContent = `${examples.count} examples; largest difference from the outputs saved ` +
    `at export: ${worst.toExponential(2)}.`;
  window.zoo.examples = { count: examples.count, maxAbsDiff: worst };
  for (let i = 0; i < examples.count; i++) {
    const one = x.slice(i * size, (i + 1) * size);
    const cell = document.createElement("div");
    cell.className = "example";
    const label = document.createElement("span");
    if (config.is_classifier) {
      const p = out.probabilities[i];
      const best = p.indexOf(Math.max(...p));
      const truth = examples.labels ? examples.labels[i] : null; // the test set's own label, where known
      label.textContent = (truth === null ? "" : `true ${config.class_names[truth]} · `) +
        `pred ${config.class_names[best]} ${(100 * p[best]).toFixed(0)}%`;
      if (truth !== null && truth !== best) cell.classList.add("wrong");
    } else {
      label.textContent = out.predictions[i].map((v) => v.toPrecision(4)).join(", ");
    }
    if (config.view === "image") {
      const c = document.createElement("canvas");
      paint(c, one, ...config.input.shape);
      cell.append(c);
    } else {
      const pre = document.createElement("code");
      pre.textContent = `[${Array.from(one, (v) => +v.toPrecision(4)).join(", ")}] → `;
      cell.append(pre);
    }
    cell.append(label);
    cell.addEventListener("click", () => {
      if (config.view === "image") paint($("seen"), one, ...config.input.shape);
      else Array.from($("form").elements).forEach((e, j) => { e.value = one[j]; });
      show(one);
    });
    $("grid").append(cell);
  }
  if (config.view === "image") paint($("seen"), x.slice(0, size), ...config.input.shape);
  await show(x.slice(0, size)); // something to look at before the first stroke
}

// ----- tables: one named input per column ---------------------------------------------------
// predict({column: value or [values]}): text for a category, a number for a number; null,
// undefined, "" or NaN is missing. Columns are named as in the CSV (or as the graph's inputs).

function tableFeeds(rows) {
  if (rows == null || typeof rows !== "object" || Array.isArray(rows) || ArrayBuffer.isView(rows)) {
    throw new Error("predict(row): this model takes an object of columns, e.g. " +
      `{${config.columns.slice(0, 2).map((c) => `"${c.name}": ...`).join(", ")}}`);
  }
  const missing = (v) => v == null || v === "" || (typeof v === "number" && Number.isNaN(v));
  const feeds = {};
  let batch = null;
  for (const c of config.columns) {
    const given = c.name in rows ? rows[c.name] : rows[c.input];
    if (given === undefined) throw new Error(`predict(row): no column "${c.name}"`);
    const values = Array.isArray(given) ? given : [given];
    batch = batch ?? values.length;
    if (values.length !== batch || batch === 0) {
      throw new Error(`predict(row): column "${c.name}" has ${values.length} values, the first column ${batch}`);
    }
    if (c.dtype === "string") {
      feeds[c.input] = new ort.Tensor("string", values.map((v) => (missing(v) ? "" : String(v))), [batch, 1]);
    } else {
      const numbers = values.map((v) => (missing(v) ? NaN : Number(v)));
      const bad = values.find((v, i) => !missing(v) && !Number.isFinite(numbers[i]));
      if (bad !== undefined) throw new Error(`predict(row): column "${c.name}" takes numbers, not ${JSON.stringify(bad)}`);
      feeds[c.input] = new ort.Tensor("float32", Float32Array.from(numbers), [batch, 1]);
    }
  }
  return [feeds, batch];
}

function setUpTable() {
  $("form-view").hidden = false;
  for (const c of config.columns) {
    const label = document.createElement("label");
    label.textContent = `${c.name} `;
    const input = document.createElement("input");
    input.name = c.name;
    input.placeholder = "blank = missing";
    label.append(input);
    if (c.dtype === "string") { // the known categories to choose from, or free text
      const list = document.createElement("datalist");
      list.id = `choices-${c.input}`;
      for (const v of c.categories) list.append(Object.assign(document.createElement("option"), { value: v }));
      input.setAttribute("list", list.id);
      input.value = c.categories[0] ?? "";
      label.append(list);
    } else {
      input.type = "number"; input.step = "any"; input.value = String(+Number(c.mean).toPrecision(4));
    }
    $("form").append(label);
  }
  const row = () => Object.fromEntries(Array.from($("form").querySelectorAll("input"), (e) => [e.name, e.value]));
  const run = () => show(row());
  $("run").addEventListener("click", run);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  run(); // something to look at before the first change
}
