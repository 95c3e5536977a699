// Train (spec checked as you type, live curves over server-sent events) and the run list.
import { $, api, el, pct, postJSON, refreshServed } from "./common.js";
import { lineChart } from "./charts.js";
import { loadModel, summaryTable } from "./model.js";
import { predictAgain } from "./try.js";

// --- train --------------------------------------------------------------------------------------
let options = null, specOk = false, specTimer = null, events = null;
const live = { loss: [], acc: [], valLoss: [], valAcc: [], epochLoss: [], epochAcc: [] };
let liveEpochs = 1;

export async function loadOptions() {
  if (options) return;
  try {
    options = await api("/api/train/options");
  } catch (err) {
    $("#train-error").textContent = err.message;
    return;
  }
  $("#t-data").replaceChildren(...options.datasets.map((d) => el("option", { value: d.name, text: `${d.name} (${d.kind})` })));
  $("#t-zoo").replaceChildren(...options.zoo.map((z) => el("option", { value: z.name, text: z.name, title: z.description })));
  $("#t-opt").replaceChildren(el("option", { value: "", text: "(the plan's)" }),
    ...options.optimizers.map((o) => el("option", { value: o, text: o })));
  checkSpec();
}

// The form shows the plan the server would follow for this data and model (as `cnnlab train` would);
// only what the user changes from it is sent, so an untouched form trains exactly that plan.
let planned = {};
const PLANNED = { epochs: "#t-epochs", batch_size: "#t-batch", optimizer: "#t-opt", lr: "#t-lr" };

async function loadPlan() {
  const text = modelText();
  try {
    const plan = await postJSON("/api/train/plan", { data: $("#t-data").value, model: text });
    if (text !== modelText()) return;
    const train = plan.train || {}, before = planned;
    planned = {};
    for (const [key, sel] of Object.entries(PLANNED)) {
      planned[key] = train[key] == null ? "" : String(train[key]);
      if ($(sel).value === (before[key] ?? "")) $(sel).value = planned[key];  // what the user typed stays
    }
    $("#t-plan").textContent = (plan.transfer ? "plan: the pretrained backbone (ImageNet) with a new head. " : "") +
      plan.reasons.join(" ");
  } catch (err) {
    $("#t-plan").textContent = "";
  }
}

const modelText = () =>
  document.querySelector("input[name=model-kind]:checked").value === "zoo" ? $("#t-zoo").value : $("#t-spec").value;

function queueCheck() {
  clearTimeout(specTimer);
  specTimer = setTimeout(checkSpec, 250);
}
["#t-zoo", "#t-data"].forEach((s) => $(s).addEventListener("change", checkSpec));
$("#t-spec").addEventListener("input", () => {
  document.querySelector("input[name=model-kind][value=custom]").checked = true;
  queueCheck();
});
document.querySelectorAll("input[name=model-kind]").forEach((r) => r.addEventListener("change", checkSpec));

async function checkSpec() {
  const text = modelText();
  try {
    const res = await postJSON("/api/spec", { model: text, data: $("#t-data").value });
    if (text !== modelText()) return;  // typed on meanwhile; the next check will answer
    specOk = true;
    $("#spec-error").textContent = "";
    $("#t-spec").classList.remove("invalid");
    summaryTable($("#spec-summary"), res.summary);
    loadPlan();
  } catch (err) {
    if (text !== modelText()) return;
    specOk = false;
    $("#spec-error").textContent = err.message;
    $("#t-spec").classList.toggle("invalid", text.trim() !== "" || modelText() === $("#t-spec").value);
    $("#spec-summary").replaceChildren();
  }
  $("#t-start").disabled = !specOk || Boolean(events);
}

const numberOrNull = (sel) => ($(sel).value.trim() === "" ? null : Number($(sel).value));

$("#train-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#train-error").textContent = "";
  const body = { data: $("#t-data").value, model: modelText(),
    limit_train: numberOrNull("#t-limit-train"), limit_test: numberOrNull("#t-limit-test") };
  for (const [key, sel] of Object.entries(PLANNED)) {  // sent only when changed from the plan
    const value = $(sel).value.trim();
    if (value !== "" && value !== planned[key]) body[key] = key === "optimizer" ? value : Number(value);
  }
  try {
    await postJSON("/api/train", body);
    follow();
  } catch (err) {
    $("#train-error").textContent = err.status === 409 ? `Busy: ${err.message}` : err.message;
  }
});

$("#t-stop").addEventListener("click", async () => {
  try {
    await api("/api/train/stop", { method: "POST" });
    $("#train-status").textContent = "stopping after this step; the run is still saved…";
  } catch (err) {
    $("#train-error").textContent = err.message;
  }
});

export function drawLive() {
  const xRange = [0, liveEpochs];
  lineChart($("#live-loss"), { title: "Loss", xRange, series: [
    { label: "train (running)", color: "#1f77b4", points: live.loss, width: 1.5 },
    { label: "train (epoch)", color: "#1f77b4", points: live.epochLoss, dots: true, width: 0 },
    { label: "validation", color: "#ff7f0e", points: live.valLoss, dots: true }] });
  lineChart($("#live-acc"), { title: "Accuracy", xRange, series: [
    { label: "train (running)", color: "#2ca02c", points: live.acc, width: 1.5 },
    { label: "train (epoch)", color: "#2ca02c", points: live.epochAcc, dots: true, width: 0 },
    { label: "validation", color: "#ff7f0e", points: live.valAcc, dots: true }] });
}

export function follow() {
  if (events) events.close();
  Object.values(live).forEach((a) => (a.length = 0));
  $("#train-log").textContent = "";
  drawLive();
  events = new EventSource("/api/train/events");
  $("#t-start").disabled = true;
  $("#t-stop").disabled = false;
  const log = (line) => ($("#train-log").textContent += line + "\n");
  const on = (name, fn) => events.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  const finish = () => {
    events.close();
    events = null;
    $("#t-stop").disabled = true;
    $("#t-start").disabled = !specOk;
  };
  on("start", (e) => {
    liveEpochs = e.epochs || 1;
    drawLive();
    $("#train-status").textContent = e.transfer
      ? `training ${e.model} (pretrained) + a new head on ${e.data} → run ${e.run}`
      : `training ${e.model} on ${e.train_images.toLocaleString("en")} ${e.data} images, ` +
        `${e.epochs} epoch${e.epochs === 1 ? "" : "s"}, batch ${e.batch_size} → run ${e.run}`;
    log(`run ${e.run}`);
  });
  on("log", (e) => log(e.line));
  on("step", (e) => {
    const x = e.epoch - 1 + e.step / e.steps;
    live.loss.push([x, e.loss]);
    live.acc.push([x, e.accuracy]);
    drawLive();
  });
  on("epoch", (e) => {
    live.epochLoss.push([e.epoch, e.loss]);
    live.epochAcc.push([e.epoch, e.accuracy]);
    if (e.val_loss != null) { live.valLoss.push([e.epoch, e.val_loss]); live.valAcc.push([e.epoch, e.val_accuracy]); }
    log(`epoch ${e.epoch}: loss ${e.loss.toFixed(4)}, accuracy ${e.accuracy.toFixed(4)}` +
        (e.val_loss != null ? `, val_loss ${e.val_loss.toFixed(4)}, val_accuracy ${e.val_accuracy.toFixed(4)}` : "") +
        ` (${e.seconds.toFixed(1)} s)`);
    drawLive();
  });
  on("done", (e) => {
    finish();
    const status = $("#train-status");
    status.replaceChildren(`${e.stopped ? "stopped; " : ""}saved run ${e.run}: test accuracy ${pct(e.test_accuracy)}. `,
      el("button", { type: "button", class: "primary", text: "Serve this run", onclick: () => serveRun(e.run) }));
    log(`done: test accuracy ${e.test_accuracy.toFixed(4)}, test loss ${e.test_loss.toFixed(4)}`);
    if (e.warning) log(e.warning);
    loadRuns();
  });
  on("error", (e) => { finish(); $("#train-error").textContent = "training failed: " + e.error; });
  on("idle", () => finish());
}

// --- runs -------------------------------------------------------------------------------------------
export async function loadRuns() {
  try {
    const res = await api("/api/runs");
    const head = el("tr", {}, ...["run", "model", "data", "epochs", "test accuracy", "test loss", "params", "created", ""]
      .map((h) => el("th", { text: h })));
    const rows = res.runs.map((r) => el("tr", { "data-run": r.name, class: r.name === res.served ? "served" : "" },
      el("td", { class: "mono", text: r.name }),
      ...(r.error ? [el("td", { colspan: "7", class: "error", text: r.error })] : [
        el("td", { text: r.model ?? "" }), el("td", { text: r.data ?? "" }), el("td", { class: "num", text: r.epochs ?? "" }),
        el("td", { class: "num", text: r.test_accuracy != null ? pct(r.test_accuracy) : "" }),
        el("td", { class: "num", text: r.test_loss != null ? r.test_loss.toFixed(4) : "" }),
        el("td", { class: "num", text: r.params != null ? r.params.toLocaleString("en") : "" }),
        el("td", { text: (r.created || "").replace("T", " ") })]),
      el("td", {}, r.name === res.served ? el("span", { class: "badge", text: "serving" })
        : el("button", { type: "button", text: "Serve", disabled: r.error ? "" : null, onclick: () => serveRun(r.name) }))));
    $("#runs").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    $("#runs-error").textContent = res.runs.length ? "" : "No runs yet: train one on the Train tab.";
  } catch (err) {
    $("#runs-error").textContent = err.message;
  }
}

async function serveRun(name) {
  try {
    await postJSON("/api/model", { run: name });
  } catch (err) {
    $("#runs-error").textContent = err.message;
    return;
  }
  await refreshServed();
  predictAgain();
  loadRuns();
  if (!$("#view-model").hidden) loadModel();
}
