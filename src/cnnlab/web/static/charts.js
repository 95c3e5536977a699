// Line charts on a <canvas>: training curves for the model view and the live training view.
export function lineChart(canvas, { title, series, xlabel = "epoch", yFixed = null, xRange = null }) {
  // Draw at the screen's pixel density so lines stay sharp; the CSS size is the canvas's attribute size.
  const ratio = window.devicePixelRatio || 1;
  const w = Number(canvas.getAttribute("width")), h = Number(canvas.getAttribute("height"));
  if (canvas.width !== Math.round(w * ratio)) {
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 46, r: 12, t: 26, b: 34 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;

  const all = series.flatMap((s) => s.points);
  canvas.dataset.points = String(all.length);  // lets a test (or a curious person) see that it grew
  ctx.fillStyle = "#222";
  ctx.font = "600 13px system-ui, sans-serif";
  ctx.fillText(title, pad.l, 16);
  if (!all.length) {
    ctx.fillStyle = "#888";
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText("no data yet", pad.l + pw / 2 - 30, pad.t + ph / 2);
    return;
  }
  // xRange fixes the axis (a live run spans 0..epochs from its start, so the curve grows across it).
  let x0 = xRange ? xRange[0] : Math.min(...all.map((p) => p[0]));
  let x1 = xRange ? xRange[1] : Math.max(...all.map((p) => p[0]));
  let y0 = yFixed ? yFixed[0] : Math.min(...all.map((p) => p[1]));
  let y1 = yFixed ? yFixed[1] : Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  if (y1 === y0) { y0 -= 0.05; y1 += 0.05; }
  if (!yFixed) {
    const m = (y1 - y0) * 0.08, low = y0, high = y1;
    y0 -= m;
    y1 += m;
    if (low >= 0) y0 = Math.max(0, y0);  // losses and accuracies are never negative
    if (high <= 1) y1 = Math.min(1, y1);  // nor is an accuracy over 1
  }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y) => pad.t + (1 - (y - y0) / (y1 - y0)) * ph;

  ctx.strokeStyle = "#e4e4e4";
  ctx.fillStyle = "#666";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, Y(y)); ctx.lineTo(pad.l + pw, Y(y)); ctx.stroke();
    ctx.fillText(y.toFixed(y1 - y0 < 0.2 ? 3 : 2), 4, Y(y) + 4);
  }
  // Whole epochs get whole ticks; fractions (live steps) get five evenly spaced ones.
  const whole = Number.isInteger(x0) && Number.isInteger(x1) && x1 - x0 <= 12 &&
    (x1 - x0 >= 2 || all.every((p) => Number.isInteger(p[0])));
  const ticks = whole ? Array.from({ length: x1 - x0 + 1 }, (_, i) => x0 + i)
                      : [0, 1, 2, 3, 4].map((i) => x0 + ((x1 - x0) * i) / 4);
  ticks.forEach((x) => ctx.fillText(String(Number(x.toFixed(2))), X(x) - 8, pad.t + ph + 14));
  ctx.fillText(xlabel, pad.l + pw / 2 - 14, h - 4);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.l, pad.t, pw, ph);

  let lx = pad.l + pw;
  series.slice().reverse().forEach((s) => {
    if (!s.points.length) return;
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = s.width || 2;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    s.points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
    ctx.setLineDash([]);
    if (s.dots) s.points.forEach(([x, y]) => { ctx.beginPath(); ctx.arc(X(x), Y(y), 3, 0, 7); ctx.fill(); });
    const tw = ctx.measureText(s.label).width;
    lx -= tw + 22;
    ctx.fillRect(lx, 10, 12, 3);
    ctx.fillStyle = "#333";
    ctx.fillText(s.label, lx + 15, 15);
  });
}
