// Jobs: the tenant's jobs, live through the `jobs` topic (the 100 newest,
// then every change), with status, progress (percent, step, time left),
// filters, cancel and retry, and a job's detail with its attempts and
// errors, live through `job:<id>`. A small form submits a job.

import { h, fill, field, notice } from "../dom.js";

const STATUSES = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
/** Jobs the list holds at most (the newest). */
const KEEP = 500;

/** "1 min 5 s" for a duration in ms. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function progressCell(job) {
  const p = job.progress;
  if (!p) return h("td", { class: "progress-cell" });
  const label = `${p.percent.toFixed(0)} %` + (p.total_steps ? ` · ${p.step}/${p.total_steps}` : "") +
    (p.remaining_ms !== null && p.remaining_ms !== undefined && job.status === "running" ? ` · ${duration(p.remaining_ms)} left` : "");
  return h("td", { class: "progress-cell" },
    h("progress", { max: 100, value: p.percent, "aria-label": `progress of ${job.id}` }),
    h("span", { class: "progress-label" }, label));
}

export function mount(root, { api, live }) {
  const jobs = new Map();
  const status = h("select", { id: "job-status", "aria-label": "status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const kind = h("input", { type: "search", id: "job-kind", placeholder: "kind", "aria-label": "kind" });
  const note = h("div", { class: "status", "aria-live": "polite" });
  const body = h("tbody", {});
  const detail = h("section", { class: "job-detail", hidden: true, "aria-label": "job detail" });
  const submitKind = h("input", { type: "text", id: "submit-kind", value: "sleep", required: true });
  const submitPayload = h("textarea", { id: "submit-payload", rows: 2 }, '{"duration_ms": 5000, "steps": 5}');
  const submitError = h("div", { class: "field-error", role: "alert" });
  const submit = h("form", { class: "submit-job", onsubmit: async (e) => {
    e.preventDefault();
    fill(submitError);
    let payload;
    try { payload = JSON.parse(submitPayload.value || "{}"); } catch { return fill(submitError, "The payload is not JSON."); }
    try {
      const job = await api.submitJob({ kind: submitKind.value.trim(), payload });
      upsert(job);
    } catch (error) {
      fill(submitError, error.message);
    }
  } }, field("Kind", submitKind), field("Payload (JSON)", submitPayload), h("button", { type: "submit" }, "Submit"), submitError);

  fill(root, h("div", { class: "jobs" },
    h("h2", {}, "Jobs"),
    h("div", { class: "toolbar" }, status, kind),
    note,
    h("table", { class: "job-list" },
      h("thead", {}, h("tr", {}, ["job", "kind", "status", "progress", "created", ""].map((c) => h("th", {}, c)))), body),
    detail,
    h("details", {}, h("summary", {}, "Submit a job"), submit)));
  status.addEventListener("change", render);
  kind.addEventListener("input", render);

  /** Keeps the newer of two versions of a job. */
  function upsert(job) {
    const held = jobs.get(job.id);
    if (held && held.version >= job.version) return;
    jobs.set(job.id, { ...held, ...job, payload: job.payload ?? held?.payload });
    if (jobs.size > KEEP) {
      const oldest = [...jobs.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : 1))[0];
      jobs.delete(oldest.id);
    }
    schedule();
  }

  let pending = false;
  function schedule() {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); }
  }

  async function act(verb, job) {
    try {
      upsert(await (verb === "cancel" ? api.cancelJob(job.id) : api.retryJob(job.id)));
    } catch (error) {
      fill(note, notice("error", `${verb} ${job.id}: ${error.message}`));
    }
  }

  function render() {
    const rows = [...jobs.values()]
      .filter((j) => !status.value || j.status === status.value)
      .filter((j) => !kind.value || j.kind.includes(kind.value.trim()))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    if (!rows.length) {
      fill(body, h("tr", {}, h("td", { colspan: 6 }, jobs.size ? "No job matches." : "No jobs yet.")));
      return;
    }
    fill(body, rows.map((job) => h("tr", { dataset: { job: job.id, status: job.status } },
      h("td", {}, h("a", { href: "#/jobs", onclick: (e) => { e.preventDefault(); open(job.id); } }, job.id.slice(-12))),
      h("td", {}, job.kind),
      h("td", {}, h("span", { class: `badge badge-${job.status}` }, job.cancel_requested && job.status === "running" ? "cancelling" : job.status)),
      progressCell(job),
      h("td", {}, job.created_at),
      h("td", { class: "row-actions" },
        ["queued", "scheduled", "running"].includes(job.status) && !job.cancel_requested
          ? h("button", { type: "button", class: "secondary", onclick: () => act("cancel", job) }, "Cancel") : null,
        ["failed", "cancelled"].includes(job.status)
          ? h("button", { type: "button", class: "secondary", onclick: () => act("retry", job) }, "Retry") : null))));
  }

  let closeDetail = null;
  async function open(id) {
    closeDetail?.();
    detail.hidden = false;
    fill(detail, notice("loading", "Loading…"));
    const show = (job) => fill(detail,
      h("h3", {}, `${job.kind} ${job.id}`),
      h("dl", {}, [["status", job.status], ["attempt", `${job.attempt} of ${job.max_attempts}`], ["created", job.created_at],
        ["started", job.started_at], ["finished", job.finished_at], ["payload", JSON.stringify(job.payload)],
        ["result", job.result === null ? "" : JSON.stringify(job.result)]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "")])),
      h("h4", {}, "Attempts that failed"),
      job.errors.length
        ? h("ol", {}, job.errors.map((e) => h("li", {}, `attempt ${e.attempt}: ${e.code}: ${e.message}`)))
        : h("p", {}, "None."),
      h("button", { type: "button", class: "link", onclick: () => { closeDetail?.(); detail.hidden = true; } }, "Close"));
    let held;
    try { held = await api.job(id); show(held); } catch (error) { return fill(detail, notice("error", error.message)); }
    closeDetail = live.subscribe(`job:${id}`, (frame) => {
      const job = frame.type === "snapshot" ? frame.jobs[0] : frame.job;
      if (!job || job.version <= held.version) return;
      held = { ...held, ...job, payload: held.payload };
      show(held);
    });
  }

  fill(note, notice("loading", "Connecting…"));
  const unsubscribe = live.subscribe("jobs", (frame) => {
    if (frame.type === "error") return fill(note, notice("error", frame.message));
    if (frame.type === "subscribed") return fill(note);
    if (frame.type === "snapshot") for (const job of frame.jobs) upsert(job);
    if (frame.type === "event" && frame.job) upsert({ ...frame.job, version: frame.job_version });
    schedule();
  });
  render();
  return () => { unsubscribe(); closeDetail?.(); };
}
