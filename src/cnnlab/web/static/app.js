// The cnnlab page: tabs, and the start. The views are the modules try.js, model.js and train.js.
import { api, refreshServed } from "./common.js";
import { loadData } from "./data.js";
import { loadModel } from "./model.js";
import { drawLive, follow, loadOptions, loadRuns } from "./train.js";
import { applyMode, redraw } from "./try.js";

// --- tabs ----------------------------------------------------------------------------------------------
const loaders = { model: () => loadModel(), runs: () => loadRuns(), train: () => loadOptions(), data: () => loadData() };

function showView(name) {
  document.querySelectorAll("nav button").forEach((b) => b.setAttribute("aria-selected", b.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== "view-" + name));
  if (loaders[name]) loaders[name]();
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));

// --- start -------------------------------------------------------------------------------------------
redraw();
drawLive();
refreshServed().then(applyMode);
api("/api/train").then((s) => { if (s.state === "running") { showView("train"); follow(); } }).catch(() => {});
