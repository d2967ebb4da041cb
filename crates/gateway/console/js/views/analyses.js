// Analyses and exports: run an analysis over a range (it runs as an
// `analyze` job whose progress shows live on its `job:<id>` topic), read
// its summaries, findings and charts, export it in any format or several as
// a ZIP (a large export shows its job's progress), and download the file.
// A 429 says when the next export is allowed.

import { h, fill, field, notice } from "../dom.js";
import { TimeChart } from "../chart.js";

const FORMATS = ["sarif", "html", "csv", "xlsx", "json"];
const SUMMARY = ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];

function localInput(ms) {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

export function mount(root, ctx) {
  const id = (location.hash.match(/^#\/analyses\/([0-9a-f-]+)/) || [])[1];
  return id ? report(root, ctx, id) : index(root, ctx);
}

function index(root, { api, live }) {
  const list = h("ul", { class: "analysis-list" });
  const title = h("input", { type: "text", id: "analysis-title", maxlength: 200 });
  const start = h("input", { type: "datetime-local", id: "analysis-start", step: 1, value: localInput(Date.now() - 3600e3) });
  const end = h("input", { type: "datetime-local", id: "analysis-end", step: 1, value: localInput(Date.now()) });
  const bucket = h("input", { type: "number", id: "analysis-bucket", min: 1, value: 60 });
  const progress = h("div", { class: "status", "aria-live": "polite" });
  let stop = () => {};
  const form = h("form", { class: "new-analysis", onsubmit: async (e) => {
    e.preventDefault();
    stop();
    fill(progress);
    let job;
    try {
      job = await api.createAnalysis({ title: title.value, start: new Date(start.value).toISOString(),
        end: new Date(end.value).toISOString(), bucket_seconds: Number(bucket.value) });
    } catch (err) {
      return fill(progress, notice("error", err.message));
    }
    const bar = h("progress", { max: 100, value: 0, "aria-label": "analysis progress" });
    const label = h("span", { class: "progress-label" }, "queued");
    fill(progress, bar, " ", label);
    stop = live.subscribe(`job:${job.id}`, (frame) => {
      const j = frame.type === "snapshot" ? frame.jobs[0] : frame.job;
      if (!j) return;
      if (j.progress) { bar.value = j.progress.percent; fill(label, j.progress.message || `${j.progress.percent.toFixed(0)} %`); }
      if (j.status === "succeeded" && j.result) location.hash = `#/analyses/${j.result.analysis_id}`;
      if (j.status === "failed") fill(progress, notice("error", j.errors.map((x) => x.message).join("; ") || "the analysis failed"));
    });
  } }, field("Title", title), field("From", start), field("To", end), field("Bucket (s)", bucket),
  h("button", { type: "submit" }, "Run analysis"));
  fill(root, h("div", { class: "analyses" }, h("h2", {}, "Analyses"), form, progress, h("h3", {}, "Reports"), list));
  (async () => {
    fill(list, notice("loading", "Loading…"));
    try {
      const page = await api.analyses();
      if (!page.analyses.length) return fill(list, notice("empty", "No analyses yet."));
      fill(list, page.analyses.map((a) => h("li", {}, h("a", { href: `#/analyses/${a.id}` }, a.title), " ",
        h("span", { class: "muted" }, `${a.metrics.length} metrics · ${a.created_at}`))));
    } catch (err) { fill(list, notice("error", err.message)); }
  })();
  return () => stop();
}

function report(root, { api, live }, id) {
  const body = h("div", {});
  fill(root, h("div", { class: "report" }, h("a", { href: "#/analyses" }, "← Analyses"), body));
  const charts = [];
  const stops = [];
  let gone = false;
  (async () => {
    fill(body, notice("loading", "Loading…"));
    let a;
    try { a = await api.analysis(id); } catch (err) { return fill(body, notice("error", err.message)); }
    if (gone) return;
    const exportsBox = h("div", { class: "exports" });
    fill(body, h("h2", {}, a.title), h("p", { class: "muted" }, `${a.start} – ${a.end}, ${a.bucket_seconds} s buckets`),
      h("h3", {}, "Summary"),
      h("table", { class: "summary" }, h("thead", {}, h("tr", {}, h("th", {}, "metric"), SUMMARY.map((k) => h("th", {}, k)))),
        h("tbody", {}, a.summaries.map((s) => h("tr", { dataset: { metric: s.metric } }, h("td", {}, s.metric),
          SUMMARY.map((k) => h("td", { dataset: { key: k } }, String(s[k] ?? "–"))))))),
      h("h3", {}, "Findings"),
      a.findings.length ? h("ul", { class: "findings" }, a.findings.map((f) => h("li", {},
        h("span", { class: `badge badge-${f.severity}` }, f.severity), ` ${f.at} ${f.metric}: ${f.message}`))) : h("p", {}, "None."),
      h("h3", {}, "Charts"), ...a.metrics.map((m) => {
        const box = h("div", { class: "report-chart" }, h("h4", {}, m));
        const chart = new TimeChart(box);
        charts.push(chart);
        const start = Date.parse(a.start), end = Date.parse(a.end);
        chart.set(a.series.filter((s) => s.metric === m).map((s) => ({ name: s.aggregation,
          points: s.buckets.map((b) => [Date.parse(b.start), b.value]) })), { start, end, bucket: a.bucket_seconds * 1000 });
        return box;
      }),
      h("h3", {}, "Export"), exportsBox);
    exporter(exportsBox, api, live, id, stops);
  })();
  return () => { gone = true; charts.forEach((c) => c.destroy()); stops.forEach((s) => s()); };
}

function exporter(box, api, live, analysisId, stops) {
  const boxes = FORMATS.map((f) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "format", value: f, checked: f === "csv" }), f));
  const result = h("div", { class: "status", "aria-live": "polite" });
  const form = h("form", { class: "export-form", onsubmit: async (e) => {
    e.preventDefault();
    const formats = [...form.querySelectorAll("input[name=format]:checked")].map((i) => ({ format: i.value }));
    if (!formats.length) return fill(result, notice("error", "Pick at least one format."));
    fill(result, notice("loading", "Exporting…"));
    try {
      const created = formats.length === 1
        ? await api.createExport(analysisId, formats[0])
        : await api.createBatchExport(analysisId, { formats });
      follow(created);
    } catch (err) {
      const when = err.status === 429 && err.retryAfter ? ` The next export is allowed in ${err.retryAfter} s.` : "";
      fill(result, notice("error", `${err.message}.${when}`));
    }
  } }, h("fieldset", { class: "aggs" }, h("legend", {}, "Formats (several: one ZIP)"), boxes), h("button", { type: "submit" }, "Export"));
  fill(box, form, result);

  function follow(exp) {
    if (exp.status === "ready") return offer(exp);
    if (exp.status === "failed") return fill(result, notice("error", exp.error || "the export failed"));
    const bar = h("progress", { max: 100, value: 0, "aria-label": "export progress" });
    fill(result, bar, " ", h("span", { class: "progress-label" }, exp.status));
    const poll = async () => follow(await api.exportOf(exp.id));
    if (!exp.job_id) return setTimeout(poll, 500);
    const stop = live.subscribe(`job:${exp.job_id}`, (frame) => {
      const j = frame.type === "snapshot" ? frame.jobs[0] : frame.job;
      if (j?.progress) bar.value = j.progress.percent;
      if (j && ["succeeded", "failed", "cancelled"].includes(j.status)) { stop(); poll(); }
    });
    stops.push(stop);
  }

  function offer(exp) {
    const link = h("button", { type: "button", class: "download", dataset: { export: exp.id }, onclick: async () => {
      try {
        const blob = await api.download(exp.id);
        const url = URL.createObjectURL(blob);
        const a = h("a", { href: url, download: exp.filename });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) { fill(result, notice("error", err.message)); }
    } }, `Download ${exp.filename}`);
    fill(result, link, " ", h("span", { class: "muted" }, `${exp.size_bytes} bytes · sha256 ${exp.sha256}`));
  }
}
