"""The console in a real browser (Debian's chromium, driven by Playwright):
each view's main journey as a person takes it, checked against what the API
answers. Run by tests-e2e/tests/e2e/console.rs against a running system:

    journeys.py BASE_URL TOKEN EXPIRED_TOKEN SHOTS_DIR

Exits non-zero with the failed check's message. Any dialog (an injected
alert) or page error fails the run.
"""

import json
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect, sync_playwright

import browser

BASE, TOKEN, EXPIRED, SHOTS = sys.argv[1:5]
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>javascript:alert(1)'
METRIC = "checkout.latency_ms"
api = browser.Api(BASE, TOKEN)
guard, rfc3339 = browser.guard, browser.rfc3339


def seed():
    """An hour of a metric in two routes, one of them a hostile string."""
    now = datetime.now(timezone.utc)
    events = []
    for i in range(360):
        route = "/pay" if i % 2 else HOSTILE
        events.append({"name": METRIC, "ts": rfc3339(now - timedelta(seconds=10 * i)),
                       "value": float(10 + (i * 7) % 50), "labels": {"route": route}})
    answer = api("POST", "/api/v1/events", {"events": events})
    assert answer["accepted"] == len(events), answer


def unharmed(page, where):
    """Hostile text made no element and ran nothing."""
    made = page.evaluate("""() => document.querySelectorAll(
        'main img, main script, a[href^="javascript:"], [onerror]').length""")
    assert made == 0, f"{where}: {made} elements were made from hostile text"
    assert page.evaluate("window.__pwned") is None, f"{where}: hostile text ran script"


def sign_in(page):
    page.goto(f"{BASE}/console/#token={TOKEN}")
    expect(page.locator("header .user")).to_have_text("alice")
    expect(page.locator("header .tenant")).to_have_text("acme")
    assert "token" not in page.url, f"the token stayed in the address: {page.url}"
    stored = page.evaluate("sessionStorage.getItem('sextant.token')")
    assert stored == TOKEN, "the token is not in sessionStorage"


def explore(page):
    """Pick the metric, group by route; the table shows what the API answers."""
    page.goto(f"{BASE}/console/#/metrics")
    page.locator(f"button[data-metric='{METRIC}']").click()
    expect(page.locator("table.values tbody tr").first).to_be_visible()
    page.select_option("#group-by", "route")
    with page.expect_request("**/api/v1/metrics/query") as sent:
        page.get_by_role("button", name="Run").click()
    body = json.loads(sent.value.post_data)
    expect(page.locator("table.values th", has_text="group")).to_be_visible()
    answer = api("POST", "/api/v1/metrics/query", body)
    expected = {}
    for series in answer["series"]:
        for bucket in series["buckets"]:
            expected[(series["group"], bucket["start"])] = (bucket["count"], bucket["values"]["avg"])
    rows = page.locator("table.values tbody tr")
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        cells = row.locator("td").all_inner_texts()
        key = (row.get_attribute("data-group"), row.get_attribute("data-start"))
        shown[key] = (int(cells[2]), float(cells[3]))
    assert shown == expected, f"the page shows {len(shown)} buckets, the API {len(expected)}; first differences: " \
        f"{[k for k in expected if shown.get(k) != expected[k]][:3]}"
    # The hostile label value is text: in the legend and the table, no element made from it.
    expect(page.locator(".chart-legend li", has_text=HOSTILE + " · avg")).to_have_count(1)
    unharmed(page, "label values")
    page.screenshot(path=f"{SHOTS}/metrics.png")
    # Copy as curl names the same request.
    page.get_by_role("button", name="Copy as curl").click()
    expect(page.locator("pre.curl")).to_contain_text("/api/v1/metrics/query")
    return len(expected)


def live_update(page):
    """Live: an ingested event shows on the page without a reload."""
    page.locator("#live").check()
    page.select_option("#range", "900")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".status .notice-live")).to_be_visible()
    now = datetime.now(timezone.utc)
    minute = now.replace(second=0, microsecond=0)
    api("POST", "/api/v1/events", {"events": [{"name": METRIC, "ts": rfc3339(now), "value": 12345.0,
                                               "labels": {"route": "/live"}}]})
    started = time.monotonic()
    row = page.locator(f"table.values tbody tr[data-group='/live'][data-start='{rfc3339(minute).replace('.000000', '')}']")
    expect(row).to_have_count(1)
    expect(row.locator("td[data-agg='avg']")).to_have_text("12345")
    return time.monotonic() - started


def jobs(page):
    """Submit a job from the form, watch it run, cancel it."""
    page.goto(f"{BASE}/console/#/jobs")
    page.locator("summary", has_text="Submit a job").click()
    page.fill("#submit-kind", "sleep")
    page.fill("#submit-payload", '{"duration_ms": 30000, "steps": 30}')
    page.get_by_role("button", name="Submit").click()
    row = page.locator("tr[data-status='running']").first
    expect(row).to_be_visible()
    expect(row.locator("progress")).to_be_visible()
    job_id = row.get_attribute("data-job")
    page.screenshot(path=f"{SHOTS}/jobs.png")
    row.get_by_role("button", name="Cancel").click()
    expect(page.locator(f"tr[data-job='{job_id}']")).to_have_attribute("data-status", "cancelled")
    assert api("GET", f"/api/v1/jobs/{job_id}")["status"] == "cancelled"
    # A bad submission shows the API's words and adds nothing.
    page.fill("#submit-kind", "launch_rockets")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".submit-job .field-error")).to_contain_text("launch_rockets")


def dashboards(page):
    """Build a dashboard of two panels, save it, reload: it is intact and live."""
    title = f"Checkout {HOSTILE}"
    page.goto(f"{BASE}/console/#/dashboards")
    page.fill("#new-dashboard-title", title)
    page.select_option("#new-dashboard-range", "3600")
    page.get_by_role("button", name="Create dashboard").click()
    expect(page.locator(".board h2")).to_have_text(title)
    # Two panels of the same query share one topic on the socket: both draw.
    for panel_title, kind, aggregation in [("latency", "line", "avg"), ("events", "stat", "count"),
                                           ("events by minute", "bar", "count")]:
        page.locator("summary", has_text="Add a panel").click() if not page.locator("#panel-title").is_visible() else None
        page.fill("#panel-title", panel_title)
        page.select_option("#panel-kind", kind)
        page.fill("#panel-metric", METRIC)
        page.select_option("#panel-aggregation", aggregation)
        page.get_by_role("button", name="Add panel").click()
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".status")).to_contain_text("Saved (version 2)")
    dashboard_id = page.url.rsplit("/", 1)[1]
    stored = api("GET", f"/api/v1/dashboards/{dashboard_id}")
    assert stored["title"] == title, stored
    assert [p["title"] for p in stored["panels"]] == ["latency", "events", "events by minute"], stored
    page.reload()
    expect(page.locator(".board h2")).to_have_text(title)
    expect(page.locator(".panel h3")).to_have_text(["latency", "events", "events by minute"])
    expect(page.locator(".panel canvas[data-points]:not([data-points='0'])")).to_have_count(2)
    # The stat panel shows the newest minute's count, live.
    stat = page.locator(".panel .stat")
    expect(stat).not_to_have_text("–")
    unharmed(page, "dashboard titles")
    page.screenshot(path=f"{SHOTS}/dashboard.png")
    now = datetime.now(timezone.utc)
    before = float(stat.get_attribute("data-value") or 0)
    api("POST", "/api/v1/events", {"events": [{"name": METRIC, "ts": rfc3339(now), "value": 1.0,
                                               "labels": {"route": "/pay"}} for _ in range(5)]})
    expect(stat).not_to_have_attribute("data-value", str(int(before)) if before.is_integer() else str(before))
    return dashboard_id


def alerts(page):
    """A bad rule is refused next to its field; a good one is created and fires, live."""
    page.goto(f"{BASE}/console/#/alerts")
    expect(page.locator("summary", has_text="New rule")).to_be_visible()
    if not page.locator("#rule-name").is_visible():
        page.locator("summary", has_text="New rule").click()
    name = f"slow checkout {HOSTILE}"
    page.fill("#rule-name", name)
    page.fill("#rule-metric", METRIC)
    page.select_option("#rule-aggregation", "max")
    page.fill("#rule-window", "0")
    page.fill("#rule-threshold", "5")
    page.get_by_role("button", name="Create rule").click()
    window_error = page.locator("label.field", has=page.locator("#rule-window")).locator(".field-error")
    expect(window_error).to_contain_text("window")
    assert api("GET", "/api/v1/alerts/rules")["rules"] == [], "a refused rule was saved"
    page.fill("#rule-window", "60")
    page.get_by_role("button", name="Create rule").click()
    row = page.locator("tr[data-rule]", has_text=name)
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-state", "firing", timeout=30_000)
    row.get_by_role("link").click()
    expect(page.locator(".timeline li").first).to_contain_text("firing")
    unharmed(page, "rule names")
    page.screenshot(path=f"{SHOTS}/alerts.png")


def analyses(page):
    """Run an analysis (progress live), read its summary, export a CSV and a ZIP, download them."""
    page.goto(f"{BASE}/console/#/analyses")
    page.fill("#analysis-title", f"Checkout hour {HOSTILE}")
    page.get_by_role("button", name="Run analysis").click()
    expect(page.locator(".report h2")).to_have_text(f"Checkout hour {HOSTILE}", timeout=30_000)
    analysis_id = page.url.rsplit("/", 1)[1]
    report = api("GET", f"/api/v1/analyses/{analysis_id}")
    summary = next(s for s in report["summaries"] if s["metric"] == METRIC)
    row = page.locator(f"table.summary tr[data-metric='{METRIC}']")
    expect(row.locator("td[data-key='count']")).to_have_text(str(summary["count"]))
    expect(row.locator("td[data-key='p95']")).to_have_text(str(summary["p95"]))
    unharmed(page, "analysis titles")
    page.screenshot(path=f"{SHOTS}/analysis.png")
    shown = None
    for formats in (["csv"], ["csv", "json", "html"]):
        for box in page.locator("input[name=format]").all():
            box.set_checked(box.get_attribute("value") in formats)
        page.get_by_role("button", name="Export", exact=True).click()
        button = page.locator("button.download" + (f":not([data-export='{shown}'])" if shown else ""))
        expect(button).to_be_visible(timeout=30_000)
        export_id = shown = button.get_attribute("data-export")
        with page.expect_download() as download:
            button.click()
        with open(download.value.path(), "rb") as f:
            got = f.read()
        request = urllib.request.Request(f"{BASE}/api/v1/exports/{export_id}/download",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            want = response.read()
        assert got == want, f"{formats}: the page's download ({len(got)} bytes) differs from the API's ({len(want)})"
        assert download.value.suggested_filename.endswith(".zip" if len(formats) > 1 else ".csv")


def units(page):
    """The chart's and views' plain functions, in the browser that runs them."""
    checks = page.evaluate("""async () => {
        const chart = await import('/console/js/chart.js');
        const dashboards = await import('/console/js/views/dashboards.js');
        const alerts = await import('/console/js/views/alerts.js');
        return {
            ticks: chart.niceTicks(0, 97, 5),
            flat: chart.niceTicks(5, 5, 4),
            times: chart.timeTicks(0, 3600e3, 6).step,
            numbers: [1234, 0.5, 2.5e6, 0.00012, -42, 0].map(chart.formatNumber),
            nearest: chart.nearest([[0, 1], [10, 2], [20, 3]], 14),
            runs: chart.runs([[0, 1], [60, 2], [180, 3], [240, 4]], 60).map((r) => r.length),
            packed: dashboards.pack([{width: 6, height: 4}, {width: 8, height: 2}, {width: 4, height: 3}]).map((p) => [p.x, p.y]),
            bucket: dashboards.bucketFor(86400),
            field: alerts.fieldOf("spec.window must be between", ["name", "window_seconds", "for_seconds"]),
            state: alerts.ruleState([{state: "pending"}, {state: "firing"}, {state: "inactive"}]),
        };
    }""")
    assert checks["ticks"] == [0, 20, 40, 60, 80], checks
    assert checks["flat"] and checks["flat"][0] <= 5 <= checks["flat"][-1], checks
    assert checks["times"] == 15 * 60 * 1000, checks
    assert checks["numbers"] == ["1.234k", "0.5", "2.5M", "1.20e-4", "-42", "0"], checks
    assert checks["nearest"] == 1 and checks["runs"] == [2, 2], checks
    assert checks["packed"] == [[0, 0], [0, 4], [8, 4]], checks
    assert checks["bucket"] == 300 and checks["field"] == "window_seconds" and checks["state"] == "firing", checks


def expired(browser, problems):
    """An expired token goes back to sign-in, saying why."""
    page = browser.new_page()
    guard(page, problems)
    page.goto(f"{BASE}/console/#token={EXPIRED}")
    expect(page.locator(".signin .notice-error")).to_contain_text("expired")
    page.screenshot(path=f"{SHOTS}/signin.png")
    page.close()


def main():
    seed()
    problems = []
    with sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        guard(page, problems)
        sign_in(page)
        units(page)
        buckets = explore(page)
        seconds = live_update(page)
        jobs(page)
        dashboards(page)
        alerts(page)
        analyses(page)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{BASE}/console/#/metrics")
        expect(page.locator(f"button[data-metric='{METRIC}']")).to_be_visible()
        page.screenshot(path=f"{SHOTS}/metrics-phone.png")
        expired(chromium, problems)
        chromium.close()
    assert not problems, problems
    print(f"ok: {buckets} buckets matched the API; a live update showed in {seconds:.2f} s")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
