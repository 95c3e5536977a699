// The Data tab: audit a --data folder (near-duplicates, likely label errors), then fix it by moving files:
// relabel (to another class folder) or remove (to the folder's trash), each confirmed, each with undo.
// The server does every check and move (see /docs, /api/data/...); this module only shows and asks.
import { $, api, el } from "./common.js";

const q = encodeURIComponent;
const folder = () => $("#data-folder").value;
let loaded = false;

export async function loadData() {
  if (loaded) return;
  loaded = true;
  const { folders } = await api("/api/data/folders");
  $("#data-folder").replaceChildren(...folders.map((f) => el("option", { value: f, text: f })));
  $("#data-audit").disabled = folders.length === 0;
  $("#data-status").textContent = folders.length ? "" : "no folder: start the server with cnnlab serve --data FOLDER";
  if (folders.length) loadJournal();
}

function thumb(path) {
  return el("figure", { class: "data-photo" },
    el("img", { src: `/api/data/file?folder=${q(folder())}&path=${q(path)}`, alt: path, title: path, width: 96, height: 96 }),
    el("figcaption", { class: "small", text: path }),
    el("button", { class: "small", "data-action": "similar", text: "Find similar", onclick: () => findSimilar(path) }));
}

// A button that asks once more before it acts: the first click arms it, the second does it.
function confirmButton(label, action, act) {
  const button = el("button", { "data-action": action, text: label });
  button.addEventListener("click", async () => {
    if (!button.dataset.armed) {
      button.dataset.armed = "1";
      button.textContent = "Confirm: " + label.toLowerCase();
      return;
    }
    button.disabled = true;
    try {
      await act();
      button.textContent = "Done";
      await loadJournal();
    } catch (err) {
      $("#data-error").textContent = err.message;
      button.disabled = false;
    }
  });
  return button;
}

const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function audit() {
  $("#data-error").textContent = "";
  $("#data-status").textContent = "auditing (the first time every photo is embedded; this can take minutes)...";
  try {
    const r = await api(`/api/data/audit?folder=${q(folder())}`);
    $("#data-status").textContent = `${r.images} photos: ${r.near_duplicates.length} near-duplicate groups, ` +
      `${r.suspect_labels.length} likely label errors`;
    $("#data-suspects").replaceChildren(...r.suspect_labels.map((s) => el("div", { class: "data-item", "data-path": s.path },
      thumb(s.path),
      el("p", { text: `filed as ${s.label}, looks like ${s.suggested} (${s.confidence.toFixed(2)})` }),
      confirmButton(`Move to ${s.suggested}`, "relabel", () => post("/api/data/relabel", { folder: folder(), path: s.path, label: s.suggested })),
      confirmButton("Remove to trash", "remove", () => post("/api/data/remove", { folder: folder(), path: s.path })))));
    $("#data-groups").replaceChildren(...r.near_duplicates.map((g) => el("div", { class: "data-item" },
      el("p", { text: `similarity ${g.similarity.toFixed(3)}; ${g.splits.join(", ")}; ${g.classes.join(", ")}` }),
      ...g.paths.map((p) => el("div", { class: "data-member", "data-path": p }, thumb(p),
        confirmButton("Remove to trash", "remove", () => post("/api/data/remove", { folder: folder(), path: p })))))));
  } catch (err) {
    $("#data-error").textContent = err.message;
    $("#data-status").textContent = "";
  }
}

async function findSimilar(path) {
  $("#data-similar").replaceChildren(el("p", { class: "muted", text: `photos like ${path}...` }));
  try {
    const { matches } = await api(`/api/data/similar?folder=${q(folder())}&path=${q(path)}&k=8`);
    $("#data-similar").replaceChildren(...matches.map((m) => el("div", { class: "data-item" }, thumb(m.path),
      el("p", { class: "small", text: m.similarity.toFixed(3) }))));
  } catch (err) {
    $("#data-error").textContent = err.message;
  }
}

async function loadJournal() {
  const { changes } = await api(`/api/data/journal?folder=${q(folder())}`);
  const undone = new Set(changes.filter((c) => c.action === "undo").map((c) => c.undoes));
  $("#data-journal").replaceChildren(...changes.map((c) => el("li", { "data-id": c.id },
    `#${c.id} ${c.action}${c.undoes ? " of #" + c.undoes : ""}: ${c.from} → ${c.to} `,
    c.action !== "undo" && !undone.has(c.id)
      ? el("button", { "data-action": "undo", text: "Undo", onclick: async () => {
        try { await post("/api/data/undo", { folder: folder(), id: c.id }); await loadJournal(); } catch (err) { $("#data-error").textContent = err.message; }
      } })
      : "")));
}

$("#data-audit").addEventListener("click", audit);
$("#data-folder").addEventListener("change", () => { loadJournal(); });
