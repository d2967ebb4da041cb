// Dashboards: a tenant's named grids of panels (a panel is a metric query
// drawn as a line, area, bar or one number), stored through
// /api/v1/dashboards and versioned: a save names the version it was made
// from, so two people editing at once cannot overwrite each other. Every
// panel is live: a metric subscription over the dashboard's range (ranges
// longer than the live window's limit are queried again every minute).

import { h, fill, field, notice } from "../dom.js";
import { TimeChart, formatNumber } from "../chart.js";
import { toSeries } from "./metrics.js";

const KINDS = ["line", "area", "bar", "stat"];
const AGGREGATIONS = ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];
const RANGES = [[900, "15 min"], [3600, "1 h"], [21600, "6 h"], [86400, "24 h"], [604800, "7 d"]];
const MAX_WINDOW = 86400;
const COLUMNS = 12;

/** Places panels in order, left to right, top to bottom, on the 12 columns. */
export function pack(panels) {
  let x = 0, y = 0, rowHeight = 0;
  return panels.map((p) => {
    const width = Math.min(COLUMNS, Math.max(1, p.width));
    if (x + width > COLUMNS) { x = 0; y += rowHeight; rowHeight = 0; }
    const placed = { ...p, x, y, width };
    x += width;
    rowHeight = Math.max(rowHeight, p.height);
    return placed;
  });
}

/** A bucket that keeps a panel under the query limits over `range` seconds. */
export function bucketFor(range) {
  return [1, 10, 60, 300, 3600, 86400].find((b) => (range + 300) / b + 1 <= 1000) ?? 86400;
}

export function mount(root, ctx) {
  const id = (location.hash.match(/^#\/dashboards\/([0-9a-f-]+)/) || [])[1];
  return id ? board(root, ctx, id) : index(root, ctx);
}

function index(root, { api }) {
  const list = h("ul", { class: "dashboard-list" });
  const title = h("input", { type: "text", id: "new-dashboard-title", required: true, maxlength: 200 });
  const range = h("select", { id: "new-dashboard-range" }, RANGES.map(([s, l]) => h("option", { value: s, selected: s === 86400 }, l)));
  const error = h("div", { class: "field-error", role: "alert" });
  const form = h("form", { class: "new-dashboard", onsubmit: async (e) => {
    e.preventDefault();
    fill(error);
    try {
      const created = await api.createDashboard({ title: title.value, range_seconds: Number(range.value), panels: [] });
      location.hash = `#/dashboards/${created.id}`;
    } catch (err) {
      fill(error, err.message);
    }
  } }, field("Title", title), field("Range", range), h("button", { type: "submit" }, "Create dashboard"), error);
  fill(root, h("div", { class: "dashboards" }, h("h2", {}, "Dashboards"), list, h("h3", {}, "New dashboard"), form));
  (async () => {
    fill(list, notice("loading", "Loading…"));
    try {
      const page = await api.dashboards();
      if (!page.dashboards.length) return fill(list, notice("empty", "No dashboards yet."));
      fill(list, page.dashboards.map((d) => h("li", {},
        h("a", { href: `#/dashboards/${d.id}` }, d.title), " ",
        h("span", { class: "muted" }, `${d.panels.length} panels`))));
    } catch (err) {
      fill(list, notice("error", err.message));
    }
  })();
  return () => {};
}

function board(root, { api, live }, id) {
  let dashboard = null;
  let panels = [];
  const stops = [];
  const heading = h("h2", {});
  const note = h("div", { class: "status", "aria-live": "polite" });
  const grid = h("div", { class: "grid" });
  const editor = h("details", { class: "panel-editor" });
  const save = h("button", { type: "button", onclick: () => persist() }, "Save");
  const remove = h("button", { type: "button", class: "secondary", onclick: async () => {
    try {
      await api.deleteDashboard(id, dashboard.version);
      location.hash = "#/dashboards";
    } catch (err) { fill(note, notice("error", err.message)); }
  } }, "Delete dashboard");
  fill(root, h("div", { class: "board" }, h("a", { href: "#/dashboards" }, "← Dashboards"), heading, note,
    h("div", { class: "actions" }, save, remove), grid, editor));

  function stopAll() { while (stops.length) stops.pop()(); }

  // A view left while its dashboard loads must not start its panels.
  let gone = false;

  async function load() {
    fill(note, notice("loading", "Loading…"));
    try {
      dashboard = await api.dashboard(id);
    } catch (err) {
      return fill(note, notice("error", err.message));
    }
    if (gone) return;
    panels = dashboard.panels.map((p) => ({ ...p }));
    fill(heading, dashboard.title);
    fill(note);
    render();
    editPanel();
  }

  async function persist() {
    const body = { title: dashboard.title, description: dashboard.description, range_seconds: dashboard.range_seconds, panels: pack(panels) };
    try {
      dashboard = await api.replaceDashboard(id, dashboard.version, body);
      panels = dashboard.panels.map((p) => ({ ...p }));
      fill(note, notice("live", `Saved (version ${dashboard.version}).`));
      render();
    } catch (err) {
      const stale = err.status === 409 || err.status === 412;
      fill(note, notice("error", stale ? `Changed elsewhere since you opened it: ${err.message}. Reload to see it.` : err.message));
    }
  }

  function render() {
    stopAll();
    fill(grid);
    if (!panels.length) fill(grid, notice("empty", "No panels yet: add one below."));
    pack(panels).forEach((p, i) => {
      const body = h("div", { class: "panel-body" });
      const card = h("section", { class: "panel", "aria-label": p.title || p.query.metric, dataset: { panel: i } },
        h("header", {}, h("h3", {}, p.title || p.query.metric),
          h("span", { class: "panel-tools" },
            h("button", { type: "button", class: "link", "aria-label": "move earlier", onclick: () => move(i, -1) }, "←"),
            h("button", { type: "button", class: "link", "aria-label": "move later", onclick: () => move(i, 1) }, "→"),
            h("button", { type: "button", class: "link", "aria-label": "remove panel", onclick: () => { panels.splice(i, 1); render(); } }, "×"))),
        body);
      card.style.gridColumn = `${p.x + 1} / span ${p.width}`;
      card.style.gridRow = `${p.y + 1} / span ${p.height}`;
      grid.append(card);
      stops.push(draw(p, body));
    });
  }

  function move(i, by) {
    const j = i + by;
    if (j < 0 || j >= panels.length) return;
    [panels[i], panels[j]] = [panels[j], panels[i]];
    render();
  }

  /** Draws one panel, live; returns what stops it. */
  function draw(panel, body) {
    const range = dashboard.range_seconds;
    const chart = panel.kind === "stat" ? null : new TimeChart(body, { kind: panel.kind });
    const stat = panel.kind === "stat" ? h("div", { class: "stat" }, "–") : null;
    if (stat) body.append(stat);
    const buckets = new Map();
    const show = () => {
      const end = Date.now(), start = end - range * 1000;
      const groups = new Map();
      for (const [key, b] of buckets) {
        if (Date.parse(b.start) < start - panel.query.bucket_seconds * 1000) { buckets.delete(key); continue; }
        const g = key.slice(0, key.lastIndexOf("|"));
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(b);
      }
      const answer = { aggregations: panel.query.aggregations,
        series: [...groups].map(([g, bs]) => ({ group: panel.query.group_by ? g : null, buckets: bs })) };
      if (stat) {
        const newest = answer.series.flatMap((s) => s.buckets).sort((a, b) => (a.start < b.start ? 1 : -1))[0];
        fill(stat, newest ? formatNumber(newest.values[panel.query.aggregations[0]]) : "–");
        stat.dataset.value = newest ? String(newest.values[panel.query.aggregations[0]]) : "";
      } else {
        chart.set(toSeries(answer), { start, end, bucket: panel.query.bucket_seconds * 1000 });
      }
    };
    const take = (series) => { for (const s of series) for (const b of s.buckets) buckets.set(`${s.group ?? ""}|${b.start}`, b); };
    let stop;
    if (range <= MAX_WINDOW) {
      let pending = false;
      stop = live.subscribe("metric", (frame) => {
        if (frame.type === "error") return fill(body, notice("error", frame.message));
        if (frame.type === "snapshot") buckets.clear();
        if (frame.type !== "snapshot" && frame.type !== "update") return;
        take(frame.series);
        if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; show(); }); }
      }, { ...panel.query, window_seconds: range });
    } else {
      const refresh = async () => {
        const end = new Date(), start = new Date(end - range * 1000);
        try {
          const answer = await api.query({ ...panel.query, start: start.toISOString(), end: end.toISOString() });
          buckets.clear();
          take(answer.series);
          show();
        } catch (err) { fill(body, notice("error", err.message)); }
      };
      refresh();
      const timer = setInterval(refresh, 60000);
      stop = () => clearInterval(timer);
    }
    return () => { stop(); chart?.destroy(); };
  }

  function editPanel() {
    const title = h("input", { type: "text", id: "panel-title", maxlength: 200 });
    const kind = h("select", { id: "panel-kind" }, KINDS.map((k) => h("option", { value: k }, k)));
    const metric = h("input", { type: "text", id: "panel-metric", required: true, list: "panel-metrics" });
    const metrics = h("datalist", { id: "panel-metrics" });
    const agg = h("select", { id: "panel-aggregation" }, AGGREGATIONS.map((a) => h("option", { value: a, selected: a === "avg" }, a)));
    const groupBy = h("input", { type: "text", id: "panel-group-by", placeholder: "label (optional)" });
    const width = h("input", { type: "number", id: "panel-width", min: 1, max: 12, value: 6 });
    const height = h("input", { type: "number", id: "panel-height", min: 1, max: 24, value: 4 });
    const error = h("div", { class: "field-error", role: "alert" });
    api.metrics("").then((page) => fill(metrics, page.metrics.map((m) => h("option", { value: m.name })))).catch(() => {});
    const form = h("form", { class: "panel-form", onsubmit: (e) => {
      e.preventDefault();
      fill(error);
      panels.push({
        title: title.value, kind: kind.value,
        query: { metric: metric.value.trim(), aggregations: [agg.value], bucket_seconds: bucketFor(dashboard.range_seconds),
          filters: [], group_by: groupBy.value.trim() || null },
        x: 0, y: 0, width: Number(width.value), height: Number(height.value),
      });
      render();
      fill(note, notice("empty", "Not saved yet: press Save."));
    } }, field("Title", title), field("Kind", kind), field("Metric", metric), metrics, field("Aggregation", agg),
    field("Group by", groupBy), field("Width (of 12)", width), field("Height", height),
    h("button", { type: "submit" }, "Add panel"), error);
    fill(editor, h("summary", {}, "Add a panel"), form);
  }

  load();
  return () => { gone = true; stopAll(); };
}
