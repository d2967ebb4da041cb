// Metrics explorer: pick a metric, aggregations, bucket, range, filters
// and a group-by label; the chart draws the query's answer (one line per
// group and aggregation), the table below lists the same values exactly as
// the API answered them. "Live" follows a trailing window through the
// metric topic and updates in place; "Copy as curl" shows the request.

import { h, fill, field, notice } from "../dom.js";
import { TimeChart } from "../chart.js";

const AGGREGATIONS = ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];
const BUCKETS = [[1, "1 s"], [10, "10 s"], [60, "1 min"], [300, "5 min"], [3600, "1 h"], [86400, "1 day"]];
const RANGES = [[900, "last 15 min"], [3600, "last 1 h"], [21600, "last 6 h"], [86400, "last 24 h"], [604800, "last 7 d"], [0, "custom"]];
const OPS = ["eq", "neq", "in", "not_in"];
/** Rows the table shows at most (the chart draws them all). */
const TABLE_ROWS = 500;
/** The live window's longest (analytics.live.max_window's default). */
const MAX_WINDOW = 86400;

/** A query's series as chart series: one per group and aggregation. */
export function toSeries(answer) {
  const out = [];
  for (const s of answer.series) {
    for (const agg of answer.aggregations) {
      const name = s.group === null ? agg : `${s.group || "(none)"} · ${agg}`;
      const points = s.buckets.map((b) => [Date.parse(b.start), b.values[agg]]).sort((a, b) => a[0] - b[0]);
      out.push({ name, points });
    }
  }
  return out;
}

export function mount(root, { api, live }) {
  const state = { metric: null, labels: [], filters: [], unsubscribe: null, buckets: new Map() };
  const search = h("input", { type: "search", id: "metric-search", placeholder: "search metrics", "aria-label": "search metrics" });
  const list = h("ul", { class: "metric-list", role: "listbox", "aria-label": "metrics" });
  const aggs = h("fieldset", { class: "aggs" }, h("legend", {}, "Aggregations"),
    AGGREGATIONS.map((a) => h("label", {}, h("input", { type: "checkbox", name: "agg", value: a, checked: a === "avg" }), a)));
  const bucket = h("select", { id: "bucket" }, BUCKETS.map(([s, l]) => h("option", { value: s, selected: s === 60 }, l)));
  const range = h("select", { id: "range" }, RANGES.map(([s, l]) => h("option", { value: s, selected: s === 3600 }, l)));
  const from = h("input", { type: "datetime-local", id: "from", step: 1, hidden: true, "aria-label": "from" });
  const to = h("input", { type: "datetime-local", id: "to", step: 1, hidden: true, "aria-label": "to" });
  const groupBy = h("select", { id: "group-by" }, h("option", { value: "" }, "(none)"));
  const filters = h("div", { class: "filters" });
  const liveBox = h("input", { type: "checkbox", id: "live" });
  const run = h("button", { type: "submit" }, "Run");
  const curlButton = h("button", { type: "button", class: "secondary" }, "Copy as curl");
  const curl = h("pre", { class: "curl", hidden: true });
  const status = h("div", { class: "status", "aria-live": "polite" });
  const chartBox = h("div", { class: "chart-box" });
  const table = h("div", { class: "table-box" });
  const chart = new TimeChart(chartBox);

  const form = h("form", { class: "query", onsubmit: (e) => { e.preventDefault(); execute(); } },
    field("Bucket", bucket), field("Range", range), from, to, aggs,
    h("div", { class: "filters-box" }, h("span", { class: "label" }, "Filters"), filters,
      h("button", { type: "button", class: "secondary", onclick: () => addFilter() }, "+ filter")),
    field("Group by", groupBy),
    h("label", { class: "inline" }, liveBox, "Live"),
    h("div", { class: "actions" }, run, curlButton));
  fill(root, h("div", { class: "explorer" },
    h("aside", {}, search, list),
    h("section", {}, h("h2", { id: "metric-name" }, "Pick a metric"), form, curl, status, chartBox, table)));

  range.addEventListener("change", () => { from.hidden = to.hidden = range.value !== "0"; });
  curlButton.addEventListener("click", () => {
    const body = queryBody();
    if (!body) return;
    curl.hidden = false;
    fill(curl, api.curl("POST", "/api/v1/metrics/query", body));
    navigator.clipboard?.writeText(curl.textContent).catch(() => {});
  });
  let searchTimer;
  search.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadMetrics, 200); });

  async function loadMetrics() {
    fill(list, notice("loading", "Loading…"));
    try {
      const page = await api.metrics(search.value.trim());
      if (!page.metrics.length) return fill(list, notice("empty", "No metrics yet."));
      fill(list, page.metrics.map((m) => h("li", {},
        h("button", { type: "button", role: "option", dataset: { metric: m.name }, onclick: () => pick(m) }, m.name))));
    } catch (error) {
      fill(list, notice("error", error.message));
    }
  }

  function pick(m) {
    state.metric = m.name;
    state.labels = m.label_keys;
    fill(document.getElementById("metric-name"), m.name);
    fill(groupBy, h("option", { value: "" }, "(none)"), m.label_keys.map((k) => h("option", { value: k }, k)));
    fill(filters);
    for (const b of list.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.dataset.metric === m.name));
    execute();
  }

  function addFilter() {
    if (!state.metric) return;
    const label = h("select", { "aria-label": "label" }, state.labels.map((k) => h("option", { value: k }, k)));
    const op = h("select", { "aria-label": "operator" }, OPS.map((o) => h("option", { value: o }, o)));
    const listId = `values-${Math.random().toString(36).slice(2)}`;
    const options = h("datalist", { id: listId });
    const values = h("input", { type: "text", list: listId, "aria-label": "values", placeholder: "value (comma-separated for in)" });
    const refresh = async () => {
      try {
        const page = await api.labelValues(state.metric, label.value, "");
        fill(options, page.values.map((v) => h("option", { value: v })));
      } catch { fill(options); }
    };
    label.addEventListener("change", refresh);
    const row = h("div", { class: "filter" }, label, op, values, options,
      h("button", { type: "button", class: "link", "aria-label": "remove filter", onclick: () => row.remove() }, "×"));
    filters.append(row);
    refresh();
  }

  function readFilters() {
    return [...filters.querySelectorAll(".filter")].map((row) => {
      const [label, op] = row.querySelectorAll("select");
      const raw = row.querySelector("input").value;
      const multi = op.value === "in" || op.value === "not_in";
      const values = multi ? raw.split(",").map((v) => v.trim()).filter((v) => v !== "") : [raw];
      return { label: label.value, op: op.value, values };
    });
  }

  function shape() {
    const aggregations = [...aggs.querySelectorAll("input:checked")].map((i) => i.value);
    const group = groupBy.value || null;
    return { metric: state.metric, aggregations, bucket_seconds: Number(bucket.value), filters: readFilters(), group_by: group };
  }

  /** The time range in ms, from the picker. */
  function span() {
    const seconds = Number(range.value);
    if (seconds) {
      const end = Date.now();
      return { start: end - seconds * 1000, end };
    }
    return { start: Date.parse(from.value), end: Date.parse(to.value) };
  }

  function queryBody() {
    if (!state.metric) return null;
    const { start, end } = span();
    if (!Number.isFinite(start) || !Number.isFinite(end)) {
      fill(status, notice("error", "Pick the custom range's start and end."));
      return null;
    }
    return { ...shape(), start: new Date(start).toISOString(), end: new Date(end).toISOString() };
  }

  function stopLive() {
    state.unsubscribe?.();
    state.unsubscribe = null;
  }

  async function execute() {
    stopLive();
    if (liveBox.checked) return follow();
    const body = queryBody();
    if (!body) return;
    fill(status, notice("loading", "Querying…"));
    try {
      const answer = await api.query(body);
      fill(status);
      show(answer, { start: Date.parse(body.start), end: Date.parse(body.end), bucket: body.bucket_seconds * 1000 });
    } catch (error) {
      fill(status, notice("error", error.message));
    }
  }

  /** Live: a trailing window through the metric topic, updated in place. */
  function follow() {
    const window = Math.min(Number(range.value) || 3600, MAX_WINDOW);
    const query = { ...shape(), window_seconds: window };
    const aggregations = query.aggregations;
    state.buckets = new Map();
    fill(status, notice("loading", "Subscribing…"));
    let pending = false;
    const redraw = () => {
      pending = false;
      const end = Date.now();
      const start = end - window * 1000;
      const series = new Map();
      for (const [key, b] of state.buckets) {
        const t = Date.parse(b.start);
        if (t < start - query.bucket_seconds * 1000) { state.buckets.delete(key); continue; }
        const group = key.slice(0, key.lastIndexOf("|"));
        if (!series.has(group)) series.set(group, []);
        series.get(group).push(b);
      }
      const answer = { aggregations, series: [...series].map(([group, buckets]) => ({ group: query.group_by ? group : null, buckets })) };
      show(answer, { start, end, bucket: query.bucket_seconds * 1000 });
    };
    state.unsubscribe = live.subscribe("metric", (frame) => {
      if (frame.type === "error") return fill(status, notice("error", frame.message));
      if (frame.type === "subscribed") return fill(status, notice("live", "Live"));
      if (frame.type === "snapshot") state.buckets.clear();
      if (frame.type !== "snapshot" && frame.type !== "update") return;
      for (const s of frame.series) for (const b of s.buckets) state.buckets.set(`${s.group ?? ""}|${b.start}`, b);
      if (!pending) { pending = true; requestAnimationFrame(redraw); }
    }, query);
  }

  function show(answer, span) {
    chart.set(toSeries(answer), span);
    const rows = [];
    for (const s of answer.series) for (const b of s.buckets) rows.push([s.group, b]);
    rows.sort((a, b) => (a[1].start < b[1].start ? 1 : a[1].start > b[1].start ? -1 : 0));
    if (!rows.length) return fill(table, notice("empty", "No events in this range."));
    const grouped = answer.series.some((s) => s.group !== null);
    fill(table, h("table", { class: "values" },
      h("thead", {}, h("tr", {}, h("th", {}, "bucket"), grouped ? h("th", {}, "group") : null, h("th", {}, "count"),
        answer.aggregations.map((a) => h("th", {}, a)))),
      h("tbody", {}, rows.slice(0, TABLE_ROWS).map(([group, b]) => h("tr", { dataset: { start: b.start, group: group ?? "" } },
        h("td", {}, b.start), grouped ? h("td", {}, group) : null, h("td", {}, b.count),
        answer.aggregations.map((a) => h("td", { dataset: { agg: a } }, String(b.values[a]))))))));
  }

  loadMetrics();
  return () => { stopLive(); chart.destroy(); clearTimeout(searchTimer); };
}
