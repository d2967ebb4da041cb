// Time-series charts on a canvas, drawn in one pass per series. The axis,
// tick and number logic are plain functions (exported) so a unit test can
// call them; the chart keeps only what it was last given.

import { h } from "./dom.js";

const SECOND = 1000, MINUTE = 60 * SECOND, HOUR = 60 * MINUTE, DAY = 24 * HOUR;

/** Round tick values for [min, max]: about `count` of them, at 1, 2 or 5 × 10^k. */
export function niceTicks(min, max, count = 5) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) { const pad = Math.abs(min) || 1; min -= pad; max += pad; }
  const raw = (max - min) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

const TIME_STEPS = [SECOND, 5 * SECOND, 15 * SECOND, 30 * SECOND, MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 30 * DAY];

/** Tick times (ms) over [start, end] at a round step giving about `count`. */
export function timeTicks(start, end, count = 6) {
  const step = TIME_STEPS.find((s) => (end - start) / s <= count) ?? 30 * DAY;
  const ticks = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) ticks.push(t);
  return { ticks, step };
}

/** A tick's label: the time of day for short steps, the date for long ones. */
export function timeLabel(t, step) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  if (step >= DAY) return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return step < MINUTE ? `${hm}:${pad(d.getSeconds())}` : hm;
}

/** A number as a person reads it: 1.23k, 4.5M, 0.0012, 17. */
export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a === 0) return "0";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) if (a >= size) return `${trim(v / size)}${unit}`;
  if (a < 0.001) return v.toExponential(2);
  return trim(v);
}

function trim(v) {
  return String(Number(v.toPrecision(4)));
}

/** The full value for a tooltip: exact, as the API answered it. */
export function exact(v) {
  return v === null || v === undefined ? "–" : String(v);
}

/** The index of the point nearest to `t` in sorted `points` ([t, v] pairs). */
export function nearest(points, t) {
  let lo = 0, hi = points.length - 1;
  if (hi < 0) return -1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && t - points[lo - 1][0] < points[lo][0] - t) return lo - 1;
  return lo;
}

/**
 * The runs of points to draw as one line: a missing bucket (a step longer
 * than `bucket`) breaks the line, so a gap shows as a gap.
 */
export function runs(points, bucket) {
  const out = [];
  let run = [];
  for (const p of points) {
    if (run.length && p[0] - run[run.length - 1][0] > bucket) { out.push(run); run = []; }
    run.push(p);
  }
  if (run.length) out.push(run);
  return out;
}

export class TimeChart {
  /** `kind`: line, area or bar; `threshold`: a value to draw across. */
  constructor(container, { kind = "line", threshold } = {}) {
    this.kind = kind;
    this.threshold = threshold;
    this.canvas = h("canvas", { class: "chart-canvas", role: "img", "aria-label": "chart" });
    this.tip = h("div", { class: "chart-tip", hidden: true });
    this.legend = h("ul", { class: "chart-legend" });
    this.el = h("div", { class: "chart" }, h("div", { class: "chart-area" }, this.canvas, this.tip), this.legend);
    container.append(this.el);
    this.series = [];
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
  }

  /** `series`: [{name, points: [[ms, value], …] sorted}]; `range`: {start, end, bucket} in ms. */
  set(series, range) {
    this.series = series;
    this.range = range;
    // What a test or benchmark waits for: the points drawn.
    this.canvas.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
    this.draw();
    this.drawLegend();
  }

  colors() {
    const style = getComputedStyle(this.el);
    return Array.from({ length: 8 }, (_, i) => style.getPropertyValue(`--series-${i}`).trim() || "#36c");
  }

  bounds() {
    let min = Infinity, max = -Infinity;
    for (const s of this.series) for (const [, v] of s.points) if (Number.isFinite(v)) { min = Math.min(min, v); max = Math.max(max, v); }
    if (this.threshold !== undefined) { min = Math.min(min, this.threshold); max = Math.max(max, this.threshold); }
    if (this.kind !== "line" && min > 0) min = 0;
    if (!Number.isFinite(min)) { min = 0; max = 1; }
    const ticks = niceTicks(min, max, 5);
    return { min: Math.min(min, ticks[0] ?? min), max: Math.max(max, ticks[ticks.length - 1] ?? max), ticks };
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height || !this.range) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(this.el);
    const ink = style.getPropertyValue("--ink-muted").trim() || "#666";
    const grid = style.getPropertyValue("--grid").trim() || "#ddd";
    const pad = { left: 56, right: 12, top: 10, bottom: 24 };
    const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
    const { start, end, bucket } = this.range;
    const { min, max, ticks } = this.bounds();
    const x = (t) => pad.left + ((t - start) / Math.max(1, end - start)) * plotW;
    const y = (v) => pad.top + plotH - ((v - min) / (max - min || 1)) * plotH;
    this.geometry = { x, pad, plotW, start, end };
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = ink;
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.left, yy); ctx.lineTo(width - pad.right, yy); ctx.stroke();
      ctx.fillText(formatNumber(v), pad.left - 6, yy);
    }
    const time = timeTicks(start, end, Math.max(2, Math.floor(plotW / 90)));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of time.ticks) ctx.fillText(timeLabel(t, time.step), x(t), height - pad.bottom + 6);
    const colors = this.colors();
    const barW = Math.max(1, (bucket / Math.max(1, end - start)) * plotW / Math.max(1, this.series.length) - 1);
    this.series.forEach((s, i) => {
      const color = colors[i % colors.length];
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1.5;
      if (this.kind === "bar") {
        for (const [t, v] of s.points) {
          if (!Number.isFinite(v)) continue;
          const left = x(t) + i * barW;
          ctx.fillRect(left, Math.min(y(v), y(0)), barW, Math.abs(y(0) - y(v)));
        }
        return;
      }
      for (const run of runs(s.points, bucket)) {
        ctx.beginPath();
        run.forEach(([t, v], k) => (k ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
        if (run.length === 1) ctx.arc(x(run[0][0]), y(run[0][1]), 2, 0, 2 * Math.PI);
        ctx.stroke();
        if (this.kind === "area") {
          ctx.lineTo(x(run[run.length - 1][0]), y(Math.max(min, 0)));
          ctx.lineTo(x(run[0][0]), y(Math.max(min, 0)));
          ctx.globalAlpha = 0.2; ctx.fill(); ctx.globalAlpha = 1;
        }
      }
    });
    if (this.threshold !== undefined) {
      ctx.strokeStyle = style.getPropertyValue("--danger").trim() || "#c33";
      ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(pad.left, y(this.threshold)); ctx.lineTo(width - pad.right, y(this.threshold)); ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  drawLegend() {
    const colors = this.colors();
    this.legend.replaceChildren(...this.series.map((s, i) =>
      h("li", {}, h("span", { class: `swatch swatch-${i % colors.length}` }), s.name)));
  }

  hover(event) {
    if (!this.geometry || !this.series.length) return;
    const { x, pad, plotW, start, end } = this.geometry;
    const rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const t = start + ((px - pad.left) / plotW) * (end - start);
    const rows = [];
    let at = null;
    for (const s of this.series) {
      const i = nearest(s.points, t);
      if (i < 0) continue;
      const [pt, v] = s.points[i];
      if (at === null || Math.abs(pt - t) < Math.abs(at - t)) at = pt;
      rows.push([s.name, pt, v]);
    }
    if (at === null) return;
    const shown = rows.filter(([, pt]) => pt === at);
    this.tip.replaceChildren(
      h("div", { class: "chart-tip-time" }, new Date(at).toISOString()),
      ...shown.map(([name, , v]) => h("div", {}, `${name}: ${exact(v)}`)),
    );
    this.tip.hidden = false;
    this.tip.style.left = `${Math.min(x(at) + 8, rect.width - 200)}px`;
    this.tip.style.top = "8px";
  }

  destroy() {
    this.resize.disconnect();
    this.el.remove();
  }
}
