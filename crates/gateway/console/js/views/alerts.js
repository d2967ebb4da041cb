// Alerts: the tenant's rules with their live state (the `alerts` topic: a
// snapshot of every instance, then each transition), a form that creates
// and edits a rule and shows the API's refusal next to the field it names,
// a rule's instances and history timeline, and its metric charted over the
// last hour with the threshold drawn across.

import { h, fill, field, notice } from "../dom.js";
import { TimeChart } from "../chart.js";

const AGGREGATIONS = ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];
const COMPARATORS = [["gt", ">"], ["gte", "≥"], ["lt", "<"], ["lte", "≤"], ["eq", "="], ["neq", "≠"]];
/** Worst first: the state a rule shows is its worst instance's. */
const SEVERITY = ["firing", "pending", "no_data", "resolved", "inactive"];

/** The state a rule shows: its worst instance's, or inactive without any. */
export function ruleState(instances) {
  const states = instances.map((i) => i.state);
  return SEVERITY.find((s) => states.includes(s)) || "inactive";
}

/**
 * The form field a refusal's detail names: its first word that is a field,
 * or the start of one (the service says `spec.window` for `window_seconds`).
 */
export function fieldOf(detail, fields) {
  for (const word of (detail || "").split(/[^a-z_]+/)) {
    const found = fields.find((f) => f === word || f.startsWith(`${word}_`));
    if (word && found) return found;
  }
  return null;
}

export function mount(root, { api, live }) {
  const rules = new Map();
  const instances = new Map(); // `${rule_id}|${group}` → instance
  const note = h("div", { class: "status", "aria-live": "polite" });
  const list = h("tbody", {});
  const detail = h("section", { class: "rule-detail", hidden: true, "aria-label": "rule" });
  const formBox = h("details", { class: "rule-editor" });
  fill(root, h("div", { class: "alerts" }, h("h2", {}, "Alerts"), note,
    h("table", { class: "rule-list" }, h("thead", {}, h("tr", {}, ["rule", "state", "condition", ""].map((c) => h("th", {}, c)))), list),
    detail, formBox));

  function render() {
    const sorted = [...rules.values()].sort((a, b) => a.name.localeCompare(b.name));
    if (!sorted.length) return fill(list, h("tr", {}, h("td", { colspan: 4 }, "No rules yet.")));
    fill(list, sorted.map((rule) => {
      const mine = [...instances.values()].filter((i) => i.rule_id === rule.id);
      const state = ruleState(mine);
      const symbol = COMPARATORS.find(([c]) => c === rule.comparator)?.[1] ?? rule.comparator;
      return h("tr", { dataset: { rule: rule.id, state } },
        h("td", {}, h("a", { href: "#/alerts", onclick: (e) => { e.preventDefault(); open(rule.id); } }, rule.name)),
        h("td", {}, h("span", { class: `badge badge-${state}` }, state.replace("_", " "))),
        h("td", {}, `${rule.aggregation}(${rule.metric}) over ${rule.window_seconds} s ${symbol} ${rule.threshold}`),
        h("td", { class: "row-actions" },
          h("button", { type: "button", class: "secondary", onclick: () => edit(rule) }, "Edit"),
          h("button", { type: "button", class: "secondary", onclick: () => drop(rule) }, "Delete")));
    }));
  }

  async function drop(rule) {
    try {
      await api.deleteRule(rule.id);
      rules.delete(rule.id);
      render();
    } catch (err) { fill(note, notice("error", err.message)); }
  }

  let chart = null;
  async function open(id) {
    const rule = rules.get(id);
    detail.hidden = false;
    chart?.destroy();
    const chartBox = h("div", {});
    const instanceList = h("tbody", {});
    const timeline = h("ol", { class: "timeline" });
    fill(detail, h("h3", {}, rule.name), chartBox,
      h("h4", {}, "Instances"),
      h("table", {}, h("thead", {}, h("tr", {}, ["group", "state", "value", "since"].map((c) => h("th", {}, c)))), instanceList),
      h("h4", {}, "History"), timeline);
    const mine = [...instances.values()].filter((i) => i.rule_id === id);
    fill(instanceList, mine.length ? mine.map((i) => h("tr", {}, h("td", {}, i.group || "(all)"),
      h("td", {}, h("span", { class: `badge badge-${i.state}` }, i.state)), h("td", {}, String(i.value ?? "–")), h("td", {}, i.active_since ?? "")))
      : h("tr", {}, h("td", { colspan: 4 }, "Not evaluated yet.")));
    chart = new TimeChart(chartBox, { threshold: rule.threshold });
    const end = new Date(), start = new Date(end - 3600 * 1000);
    const bucket = Math.max(60, Math.ceil(rule.window_seconds / 60) * 60);
    try {
      const [answer, history] = await Promise.all([
        api.query({ metric: rule.metric, aggregations: [rule.aggregation], bucket_seconds: bucket,
          start: start.toISOString(), end: end.toISOString(), filters: rule.filters, group_by: rule.group_by }),
        api.history({ rule_id: id, page_size: 100 }),
      ]);
      const series = answer.series.map((s) => ({ name: s.group === null ? rule.aggregation : s.group || "(none)",
        points: s.buckets.map((b) => [Date.parse(b.start), b.values[rule.aggregation]]) }));
      chart.set(series, { start: +start, end: +end, bucket: bucket * 1000 });
      fill(timeline, history.transitions.length ? history.transitions.map((t) => h("li", {},
        h("time", {}, t.at), ` ${t.group || "(all)"}: ${t.from} → ${t.to}`, t.value === null ? "" : ` (${t.value})`))
        : h("li", {}, "No transitions yet."));
    } catch (err) { fill(timeline, notice("error", err.message)); }
  }

  function edit(rule) {
    const fields = {};
    const input = (name, el) => { fields[name] = { el, error: h("span", { class: "field-error", role: "alert" }) }; return el; };
    const row = (label, name, el) => h("label", { class: "field" }, h("span", {}, label), input(name, el), fields[name].error);
    const v = rule || { name: "", metric: "", aggregation: "avg", window_seconds: 60, comparator: "gt", threshold: 0,
      for_seconds: 0, keep_firing_for_seconds: 0, group_by: null, enabled: true };
    const general = h("div", { class: "field-error", role: "alert" });
    const form = h("form", { class: "rule-form", onsubmit: async (e) => {
      e.preventDefault();
      for (const f of Object.values(fields)) fill(f.error);
      fill(general);
      const body = {
        name: fields.name.el.value, metric: fields.metric.el.value.trim(), aggregation: fields.aggregation.el.value,
        window_seconds: Number(fields.window_seconds.el.value), comparator: fields.comparator.el.value,
        threshold: Number(fields.threshold.el.value), for_seconds: Number(fields.for_seconds.el.value),
        keep_firing_for_seconds: Number(fields.keep_firing_for_seconds.el.value),
        group_by: fields.group_by.el.value.trim() || null, enabled: fields.enabled.el.checked,
        filters: rule?.filters ?? [], annotations: rule?.annotations ?? {},
      };
      try {
        const saved = rule ? await api.replaceRule(rule.id, rule.version, body) : await api.createRule(body);
        rules.set(saved.id, saved);
        render();
        formBox.open = false;
        fill(note, notice("live", `Saved ${saved.name}.`));
      } catch (err) {
        const name = fieldOf(err.message, Object.keys(fields));
        fill(name ? fields[name].error : general, err.message);
      }
    } },
    row("Name", "name", h("input", { type: "text", id: "rule-name", value: v.name })),
    row("Metric", "metric", h("input", { type: "text", id: "rule-metric", value: v.metric })),
    row("Aggregation", "aggregation", h("select", { id: "rule-aggregation" }, AGGREGATIONS.map((a) => h("option", { value: a, selected: a === v.aggregation }, a)))),
    row("Window (s)", "window_seconds", h("input", { type: "number", id: "rule-window", value: v.window_seconds })),
    row("Comparator", "comparator", h("select", { id: "rule-comparator" }, COMPARATORS.map(([c, s]) => h("option", { value: c, selected: c === v.comparator }, s)))),
    row("Threshold", "threshold", h("input", { type: "number", id: "rule-threshold", step: "any", value: v.threshold })),
    row("For (s)", "for_seconds", h("input", { type: "number", id: "rule-for", value: v.for_seconds })),
    row("Keep firing for (s)", "keep_firing_for_seconds", h("input", { type: "number", id: "rule-keep", value: v.keep_firing_for_seconds })),
    row("Group by", "group_by", h("input", { type: "text", id: "rule-group-by", value: v.group_by ?? "" })),
    h("label", { class: "inline" }, input("enabled", h("input", { type: "checkbox", id: "rule-enabled", checked: v.enabled })), "Enabled", fields.enabled.error),
    h("button", { type: "submit" }, rule ? "Save rule" : "Create rule"), general);
    fill(formBox, h("summary", {}, rule ? `Edit ${rule.name}` : "New rule"), form);
    formBox.open = Boolean(rule) || formBox.open;
  }

  async function load() {
    fill(note, notice("loading", "Loading…"));
    try {
      const page = await api.rules();
      for (const r of page.rules) rules.set(r.id, r);
      fill(note);
      render();
    } catch (err) { fill(note, notice("error", err.message)); }
  }

  const unsubscribe = live.subscribe("alerts", (frame) => {
    if (frame.type === "error") return fill(note, notice("error", frame.message));
    if (frame.type === "snapshot") {
      instances.clear();
      for (const i of frame.instances) instances.set(`${i.rule_id}|${i.group}`, i);
    }
    if (frame.type === "transition") {
      const key = `${frame.rule_id}|${frame.group}`;
      instances.set(key, { ...instances.get(key), rule_id: frame.rule_id, group: frame.group, state: frame.to, value: frame.value, active_since: frame.at });
      if (!rules.has(frame.rule_id)) load();
    }
    render();
  });
  edit(null);
  load();
  return () => { unsubscribe(); chart?.destroy(); };
}
