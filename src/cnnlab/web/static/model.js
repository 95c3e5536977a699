// The model view: summary table, training curves, confusion matrix, and the test images of a cell.
import { $, api, el, model, pct, refreshServed, shapeText } from "./common.js";
import { lineChart } from "./charts.js";

// --- the model -------------------------------------------------------------------------------------
export function summaryTable(table, summary) {
  const head = el("tr", {}, el("th", { text: "Layer (type)" }), el("th", { text: "Output Shape" }), el("th", { text: "Param #" }));
  const rows = summary.layers.map((r) => el("tr", {}, el("td", { text: `${r.name} (${r.type})` }),
    el("td", { class: "mono", text: shapeText(r.output_shape) }), el("td", { class: "num", text: r.params.toLocaleString("en") })));
  const foot = el("tr", { class: "total" }, el("td", { text: "Total params" }), el("td"),
    el("td", { class: "num", text: summary.total_params.toLocaleString("en") }));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows, foot));
}

function historyCharts(lossCanvas, accCanvas, history) {
  const pts = (key) => (history[key] || []).map((v, i) => [i + 1, v]);
  lineChart(lossCanvas, { title: "Loss", series: [
    { label: "train", color: "#1f77b4", points: pts("loss"), dots: true },
    { label: "validation", color: "#ff7f0e", points: pts("val_loss"), dots: true }] });
  lineChart(accCanvas, { title: "Accuracy", series: [
    { label: "train", color: "#1f77b4", points: pts("accuracy"), dots: true },
    { label: "validation", color: "#ff7f0e", points: pts("val_accuracy"), dots: true }] });
}

export async function loadModel() {
  await refreshServed();
  $("#model-error").textContent = model ? "" : "No model is being served. Train one on the Train tab.";
  if (!model) return;
  const m = model.metrics || {}, c = model.config || {};
  const facts = [["run", model.name], ["data", c.data], ["model", c.model],
    ["epochs", model.history ? (model.history.loss || []).length : null],
    ["test accuracy", m.test_accuracy != null ? pct(m.test_accuracy) : null],
    ["test loss", m.test_loss != null ? m.test_loss.toFixed(4) : null],
    ["test images", m.n_test != null ? m.n_test.toLocaleString("en") : null]];
  $("#model-facts").replaceChildren(...facts.filter((f) => f[1] != null)
    .map(([k, v]) => el("div", {}, el("span", { class: "muted", text: k }), el("b", { text: String(v) }))));
  summaryTable($("#summary"), model.summary);
  $("#compact").textContent = model.compact ? "compact: " + model.compact : "";
  historyCharts($("#model-loss"), $("#model-acc"), model.history || {});
  confusionTable(m.confusion_matrix, model.class_names);
}

function confusionTable(cm, names) {
  const table = $("#confusion");
  if (!cm) { table.replaceChildren(el("caption", { text: "no test metrics for this model" })); return; }
  const head = el("tr", {}, el("th", { text: "true \\ pred" }), ...names.map((n) => el("th", { text: n })));
  const rows = cm.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return el("tr", {}, el("th", { text: names[t] }), ...row.map((n, p) => {
      const share = n / total;
      const hue = t === p ? "34, 139, 84" : "214, 39, 40";
      const cell = el("td", { class: "cell" + (n ? " clickable" : ""), text: String(n),
        title: `${n} test images of ${names[t]} predicted as ${names[p]}`,
        style: { background: `rgba(${hue}, ${n ? Math.max(0.06, Math.sqrt(share)) : 0})` } });
      cell.dataset.true = t;
      cell.dataset.predicted = p;
      if (share > 0.5) cell.classList.add("light");
      if (n) cell.addEventListener("click", () => showExamples(t, p));
      return cell;
    }));
  });
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

async function showExamples(t, p) {
  const names = model.class_names;
  $("#examples-title").textContent = t === p ? `Test images of ${names[t]} predicted correctly`
                                             : `Test images of ${names[t]} predicted as ${names[p]}`;
  $("#examples-note").textContent = "loading… (the first time, the model reads the test set)";
  $("#examples").replaceChildren();
  try {
    const res = await api(`/api/model/examples?true=${t}&predicted=${p}&limit=60`);
    $("#examples-note").textContent = `${res.count} image${res.count === 1 ? "" : "s"}` +
      (res.count > res.images.length ? `, first ${res.images.length} shown` : "");
    $("#examples").replaceChildren(...res.images.map((im) => el("figure", {},
      el("img", { src: im.image, class: "pixelated", alt: `test image ${im.index}` }),
      el("figcaption", { text: `#${im.index} · ${pct(im.probability)}` }))));
  } catch (err) {
    $("#examples-note").textContent = err.message;
  }
}

