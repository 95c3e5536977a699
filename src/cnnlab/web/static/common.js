// The cnnlab page's shared helpers: DOM and API calls, and the served model with its badge.
// Everything calls the JSON API (see /docs); the page computes nothing about the model itself.

export const $ = (sel) => document.querySelector(sel);
export const el = (tag, attrs = {}, ...children) => {
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
export const pct = (p) => (100 * p).toFixed(1) + "%";
export const shapeText = (s) => "(" + s.map((v) => (v === null ? "None" : v)).join(", ") + ")";

export async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) {
    const err = new Error(body.error || response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}
export const postJSON = (path, data) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });

// --- the served-model badge ---------------------------------------------------------------------
export let model = null;  // GET /api/model, or null when nothing is served

export async function refreshServed() {
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
