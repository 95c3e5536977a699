// The cnnlab page, shared part: DOM and API helpers, tabs, the served-model badge. The views are in
// try.js, model.js and train.js (loaded after this file, in that order; train.js starts the page).
// Everything calls the JSON API (see /docs); the page computes nothing about the model itself.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") Object.assign(node.style, v);  // CSSOM, which the page's CSP allows
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  children.forEach((c) => node.append(c));
  return node;
};
const pct = (p) => (100 * p).toFixed(1) + "%";
const shapeText = (s) => "(" + s.map((v) => (v === null ? "None" : v)).join(", ") + ")";

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) {
    const err = new Error(body.error || response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}
const postJSON = (path, data) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });

// --- tabs and the served-model badge ------------------------------------------------------------
const loaders = { model: () => loadModel(), runs: () => loadRuns(), train: () => loadOptions() };

function showView(name) {
  document.querySelectorAll("nav button").forEach((b) => b.setAttribute("aria-selected", b.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== "view-" + name));
  if (loaders[name]) loaders[name]();
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));

let model = null;  // GET /api/model, or null when nothing is served

async function refreshServed() {
  try {
    model = await api("/api/model");
    const acc = model.metrics && model.metrics.test_accuracy;
    $("#served").textContent = `serving ${model.name}` + (acc != null ? ` · test accuracy ${pct(acc)}` : "");
    $("#served").classList.remove("none");
  } catch (err) {
    model = null;
    $("#served").textContent = "no model served";
    $("#served").classList.add("none");
  }
}
