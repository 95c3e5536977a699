// Try the model: the drawing pad (mouse, pen, touch; undo; photos), debounced live predictions, response maps;
// for a model of colour photos, photos only (upload or drop) and the Grad-CAM heat map over the photo.
import { $, api, el, model, pct, shapeText } from "./common.js";

// --- try the model: drawing pad ------------------------------------------------------------------
const pad = $("#pad");
const ink = pad.getContext("2d");
let items = [];  // strokes {points} and photos {image, file}, in the order they were made; undo pops
let stroke = null;
let photoMode = false;  // the served model takes colour images: photos, not digits drawn on the pad

// Called whenever the served model may have changed (common.js `model` is its GET /api/model).
export function applyMode() {
  const photo = Boolean(model) && model.input_shape[2] === 3;
  if (photo === photoMode) return;
  photoMode = photo;
  $("#view-try").classList.toggle("photo", photo);
  $("#try-title").textContent = photo ? "Your photo" : "Draw a digit";
  $("#try-hint").textContent = photo ? "Drop a photo on the frame, or click it to upload one (JPEG, PNG, GIF, BMP, WebP)."
                                     : "Mouse, pen or finger. The prediction updates as you draw.";
  $(".drop-hint").textContent = photo ? "drop a photo here" : "draw here, or drop a photo";
  $("#cam-card").hidden = !photo;
  items = items.filter((item) => item.image || !photo);  // strokes mean nothing to a photo model
  redraw();
  resetPrediction();
}

export function redraw() {
  $("#drop").classList.toggle("has-input", items.length > 0);  // the hint would cover the photo or the strokes
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  for (const item of items) {
    if (item.image) {
      const s = Math.min(pad.width / item.image.naturalWidth, pad.height / item.image.naturalHeight);
      const w = item.image.naturalWidth * s, h = item.image.naturalHeight * s;
      ink.drawImage(item.image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    } else {
      drawStroke(item.points);
    }
  }
}

function drawStroke(points) {
  ink.strokeStyle = "#000";
  ink.fillStyle = "#000";
  ink.lineWidth = 18;  // about MNIST's stroke width once the digit is scaled to its 20-pixel box
  ink.lineCap = "round";
  ink.lineJoin = "round";
  if (points.length === 1) {
    ink.beginPath();
    ink.arc(points[0][0], points[0][1], ink.lineWidth / 2, 0, 7);
    ink.fill();
    return;
  }
  ink.beginPath();
  points.forEach(([x, y], i) => (i ? ink.lineTo(x, y) : ink.moveTo(x, y)));
  ink.stroke();
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [((event.clientX - r.left) * pad.width) / r.width, ((event.clientY - r.top) * pad.height) / r.height];
}

pad.addEventListener("pointerdown", (event) => {
  if (photoMode) { $("#upload").click(); return; }  // no drawing for a photo model: a click picks a photo
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  stroke = { points: [padPoint(event)] };
  items.push(stroke);
  redraw();
  schedulePredict();
});
pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  stroke.points.push(padPoint(event));
  drawStroke(stroke.points.slice(-2));
  schedulePredict();
});
const endStroke = () => {
  if (!stroke) return;
  stroke = null;
  redraw();  // the pad is now exactly a replay of `items`, so undo gives back the very same pixels
  schedulePredict();
};
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("#clear").addEventListener("click", () => { items = []; redraw(); resetPrediction(); });
$("#undo").addEventListener("click", () => {
  items.pop();
  redraw();
  items.length ? schedulePredict() : resetPrediction();
});

function usePhoto(file) {
  if (!file) return;
  const image = new Image();
  image.onload = () => { redraw(); URL.revokeObjectURL(image.src); };
  image.onerror = () => URL.revokeObjectURL(image.src);  // the server still says what is wrong with it
  image.src = URL.createObjectURL(file);
  items = [{ image, file }];
  redraw();
  schedulePredict();
}
$("#upload").addEventListener("change", (event) => { usePhoto(event.target.files[0]); event.target.value = ""; });
const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  usePhoto(event.dataTransfer.files[0]);
});

// --- try the model: predictions, debounced ------------------------------------------------------
// At most one request in flight; changes made meanwhile are sent as soon as it returns.
let timer = null, inFlight = false, dirty = false, generation = 0;

function schedulePredict() {
  dirty = true;
  pad.dataset.state = "busy";  // "idle" once the page shows the answer for what is on the pad
  if (!timer && !inFlight) timer = setTimeout(sendPredict, 60);
}

function padBlob() {
  // A photo on its own goes as the original file (full resolution); anything drawn goes as the canvas.
  if (items.length === 1 && items[0].file) return Promise.resolve(items[0].file);
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

async function sendPredict() {
  timer = null;
  if (!items.length) { pad.dataset.state = "idle"; return; }
  dirty = false;
  inFlight = true;
  const mine = generation;
  try {
    const form = new FormData();
    form.append("file", await padBlob(), "drawing.png");
    const started = performance.now();
    const result = await api("/api/predict?top_k=10&echo=1", { method: "POST", body: form });
    if (mine !== generation) return;
    const id = encodeURIComponent(result.image_id);
    const [maps, cam] = await Promise.all([api("/api/explain/maps?image=" + id),
                                           photoMode ? api("/api/explain/gradcam?image=" + id) : null]);
    if (mine !== generation) return;
    showPrediction(result, performance.now() - started);
    showMaps(maps.layers);
    if (cam) showCam(result, cam);
    $("#predict-error").textContent = "";
  } catch (err) {
    if (mine === generation) $("#predict-error").textContent = err.message;
  } finally {
    inFlight = false;
    if (dirty && items.length) schedulePredict();
    else pad.dataset.state = "idle";
  }
}

// After the served model changed: clear the old answer, and ask the new model about the pad's image.
export function predictAgain() {
  applyMode();
  resetPrediction();
  if (items.length) schedulePredict();
}

function resetPrediction() {
  generation += 1;  // answers to requests sent before the reset are dropped
  $("#top-class").textContent = "–";
  $("#top-prob").textContent = "";
  $("#bars").replaceChildren();
  $("#maps").replaceChildren();
  $("#input-image").removeAttribute("src");
  $("#cam-photo").removeAttribute("src");
  $("#cam-heat").removeAttribute("src");
  $("#cam-caption").textContent = "";
  $("#predict-error").textContent = "";
  $("#latency").textContent = "";
}

function showPrediction(result, ms) {
  const best = result.top[0];
  $("#top-class").textContent = best.class;
  $("#top-class").dataset.index = best.index;
  $("#top-prob").textContent = `${pct(best.probability)} sure`;
  $("#bars").replaceChildren(...result.top.map((t, i) => el("div", { class: "bar" + (i === 0 ? " best" : "") },
    el("span", { class: "label", text: t.class }),
    el("span", { class: "track" }, el("span", { class: "fill", style: { width: `${(100 * t.probability).toFixed(1)}%` } })),
    el("span", { class: "value", text: pct(t.probability) }))));
  $("#input-image").src = result.input;
  $("#input-caption").textContent = `the ${result.input_shape.join("×")} input the model received`;
  $("#latency").textContent = `server ${result.milliseconds.toFixed(1)} ms · round trip with maps ${ms.toFixed(0)} ms`;
}

function showCam(result, cam) {
  $("#cam-photo").src = result.input;
  $("#cam-heat").src = cam.heatmap;
  $("#cam-heat").dataset.class = cam.class;
  $("#cam-caption").textContent = `where the model found “${cam.class}” (${pct(cam.probability)}); ` +
    `Grad-CAM took ${cam.milliseconds.toFixed(0)} ms`;
}
$("#cam-alpha").addEventListener("input", (event) => ($("#cam-heat").style.opacity = event.target.value / 100));

function showMaps(layers) {
  $("#maps").replaceChildren(...layers.map((layer) => {
    const img = el("img", { src: layer.image, alt: `response maps of ${layer.name}`, class: "pixelated" });
    img.addEventListener("load", () => {
      // Small maps are blown up more, so every layer's panel is about the same width.
      const k = Math.max(1, Math.min(8, Math.floor(440 / img.naturalWidth)));
      img.style.width = img.naturalWidth * k + "px";
    });
    const shown = layer.channels < layer.output_shape[3] ? ` · first ${layer.channels} channels` : "";
    const title = `${layer.name} (${layer.type}) ${shapeText(layer.output_shape)}${shown}`;
    return el("figure", { class: "map", tabindex: "0", onclick: () => zoom(title, layer.image),
                          onkeydown: (e) => { if (e.key === "Enter") zoom(title, layer.image); } },
      img, el("figcaption", {}, el("b", { text: layer.name }), ` ${layer.type} ${shapeText(layer.output_shape)}${shown}`));
  }));
}

function zoom(title, src) {
  $("#zoom-title").textContent = title;
  $("#zoom-image").src = src;
  $("#zoom").hidden = false;
}
$("#zoom").addEventListener("click", () => ($("#zoom").hidden = true));
document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("#zoom").hidden = true; });

