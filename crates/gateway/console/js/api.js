// The HTTP API (openapi.json), typed by use: one function per route the
// console calls. A refusal throws an ApiError carrying the problem+json
// fields (status, code, detail) and Retry-After, so views can show the
// service's own words next to the field or the button.

/** A refusal as a person reads it; a server's failure says which. */
function describe(status, problem) {
  const detail = problem.detail || problem.title || `HTTP ${status}`;
  if (status < 500) return detail;
  const what = problem.backend ? `The ${problem.backend} service is unavailable` : problem.title || "Server error";
  return `${what} (${status}): ${detail}`;
}

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(describe(status, problem));
    this.status = status;
    this.code = problem.code || "unknown";
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

export class Api {
  /** `token`: the bearer token; `onUnauthorized(error)`: a 401 anywhere. */
  constructor(token, onUnauthorized = () => {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { body, query, headers = {} } = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const init = { method, headers: { ...headers, Authorization: `Bearer ${this.token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, { code: "network", detail: "the gateway cannot be reached" });
    }
    if (response.ok) {
      if (response.status === 204) return { body: null, response };
      const type = response.headers.get("content-type") || "";
      const parsed = type.includes("json") ? await response.json() : await response.blob();
      return { body: parsed, response };
    }
    let problem = {};
    try { problem = await response.json(); } catch { /* not JSON */ }
    const retry = Number(response.headers.get("retry-after")) || undefined;
    const error = new ApiError(response.status, problem, retry);
    if (response.status === 401) this.onUnauthorized(error);
    throw error;
  }

  async get(path, query) { return (await this.request("GET", path, { query })).body; }

  /** The curl command that makes the same request (the token elided). */
  curl(method, path, body) {
    const url = new URL(path, location.origin).href;
    let cmd = `curl -X ${method} '${url}' -H 'Authorization: Bearer $TOKEN'`;
    if (body !== undefined) {
      cmd += ` -H 'Content-Type: application/json' -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
    }
    return cmd;
  }

  me() { return this.get("/api/v1/me"); }

  // Metrics
  metrics(prefix, cursor) { return this.get("/api/v1/metrics", { prefix, cursor, page_size: 1000 }); }
  labelValues(metric, label, prefix) {
    return this.get(`/api/v1/metrics/${encodeURIComponent(metric)}/labels/${encodeURIComponent(label)}/values`,
      { prefix, page_size: 1000 });
  }
  async query(body) { return (await this.request("POST", "/api/v1/metrics/query", { body })).body; }

  // Jobs
  jobs(filter) { return this.get("/api/v1/jobs", filter); }
  job(id) { return this.get(`/api/v1/jobs/${encodeURIComponent(id)}`); }
  async submitJob(body) { return (await this.request("POST", "/api/v1/jobs", { body })).body; }
  async cancelJob(id) { return (await this.request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`)).body; }
  async retryJob(id) { return (await this.request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/retry`)).body; }

  // Dashboards
  dashboards() { return this.get("/api/v1/dashboards", { page_size: 1000 }); }
  dashboard(id) { return this.get(`/api/v1/dashboards/${encodeURIComponent(id)}`); }
  async createDashboard(body) { return (await this.request("POST", "/api/v1/dashboards", { body })).body; }
  async replaceDashboard(id, version, body) {
    const headers = { "If-Match": `"${version}"` };
    return (await this.request("PUT", `/api/v1/dashboards/${encodeURIComponent(id)}`, { body, headers })).body;
  }
  async deleteDashboard(id, version) {
    const headers = { "If-Match": `"${version}"` };
    await this.request("DELETE", `/api/v1/dashboards/${encodeURIComponent(id)}`, { headers });
  }

  // Alerts
  rules() { return this.get("/api/v1/alerts/rules", { page_size: 1000 }); }
  async createRule(body) { return (await this.request("POST", "/api/v1/alerts/rules", { body })).body; }
  async replaceRule(id, version, body) {
    const headers = { "If-Match": `"${version}"` };
    return (await this.request("PUT", `/api/v1/alerts/rules/${encodeURIComponent(id)}`, { body, headers })).body;
  }
  async deleteRule(id) { await this.request("DELETE", `/api/v1/alerts/rules/${encodeURIComponent(id)}`); }
  instances(query) { return this.get("/api/v1/alerts/instances", query); }
  history(query) { return this.get("/api/v1/alerts/history", query); }

  // Analyses and exports
  analyses() { return this.get("/api/v1/analyses", { page_size: 100 }); }
  analysis(id) { return this.get(`/api/v1/analyses/${encodeURIComponent(id)}`); }
  async createAnalysis(body) { return (await this.request("POST", "/api/v1/analyses", { body })).body; }
  async createExport(analysisId, body) {
    return (await this.request("POST", `/api/v1/analyses/${encodeURIComponent(analysisId)}/exports`, { body })).body;
  }
  async createBatchExport(analysisId, body) {
    return (await this.request("POST", `/api/v1/analyses/${encodeURIComponent(analysisId)}/exports/batch`, { body })).body;
  }
  exportOf(id) { return this.get(`/api/v1/exports/${encodeURIComponent(id)}`); }
  async download(id) { return (await this.request("GET", `/api/v1/exports/${encodeURIComponent(id)}/download`)).body; }
}
