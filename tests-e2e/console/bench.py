"""`make bench-console`'s browser half: a saved dashboard of six panels over
24 h of the benchmark data set, in headless chromium.

    bench.py BASE_URL TOKEN DASHBOARD_ID NAVIGATIONS INGESTS SOAK_SECONDS

1. Navigation → every panel drawn: from the start of a full page load of
   the dashboard to the moment all six panels hold data (performance.now(),
   whose origin is the navigation's start), NAVIGATIONS times.
2. Ingest → the live panel changed: the page ingests one event of the
   dashboard's metric (fetch, as a client would) and times until the stat
   panel's value (a count of the newest minute) changes in the DOM,
   INGESTS times, 100 ms apart.
3. The assets the page loaded, and their gzip size.
4. The page left live SOAK_SECONDS at 20 updates/s: JS heap (after a
   forced GC) at the start and the end.
"""

import gzip
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

import browser

BASE, TOKEN, DASHBOARD = sys.argv[1:4]
NAVIGATIONS, INGESTS, SOAK = (int(v) for v in sys.argv[4:7])
METRIC = "bench.dashboard"
PANELS = 6

# Waited for in the page (a string predicate would need `eval`, which the
# console's Content-Security-Policy forbids): the time every panel holds data.
DRAWN = """async (panels) => {
    const drawn = () => document.querySelectorAll(
        '.panel canvas[data-points]:not([data-points="0"]), .panel .stat[data-value]:not([data-value=""])').length;
    const deadline = performance.now() + 60000;
    while (drawn() < panels) {
        if (performance.now() > deadline) {
            const missing = [...document.querySelectorAll('.panel')].filter((p) =>
                !p.querySelector('canvas[data-points]:not([data-points="0"]), .stat[data-value]:not([data-value=""])'));
            throw new Error(`only ${drawn()} of ${panels} panels drawn in 60 s; not: ` +
                missing.map((p) => `${p.getAttribute('aria-label')}: ${p.textContent.slice(0, 200)}`).join(' | '));
        }
        await new Promise((resolve) => requestAnimationFrame(resolve));
    }
    return performance.now();
}"""

INGEST_ONE = """async ([metric, token]) => {
    const stat = document.querySelector('.panel .stat');
    const before = stat.dataset.value;
    const changed = new Promise((resolve) => {
        const seen = new MutationObserver(() => {
            if (stat.dataset.value !== before) { seen.disconnect(); resolve(performance.now()); }
        });
        seen.observe(stat, { attributes: true });
    });
    const started = performance.now();
    const answer = await fetch('/api/v1/events', { method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ events: [{ name: metric, ts: new Date().toISOString(), value: 50,
                                          labels: { host: 'h00', region: 'r0' } }] }) });
    if (!answer.ok) throw new Error(`ingest answered ${answer.status}`);
    // A lost update fails the run with what the panel showed, not a hang.
    const late = new Promise((_, reject) => setTimeout(() => reject(new Error(
        `the stat panel still shows ${stat.dataset.value} (before the ingest: ${before}) 10 s after it`)), 10000));
    return (await Promise.race([changed, late])) - started;
}"""


def pct(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(name, samples):
    print(f"  {name}: p50 {pct(samples, 0.5):.1f} ms, p95 {pct(samples, 0.95):.1f} ms, "
          f"max {max(samples):.1f} ms ({len(samples)} samples)", flush=True)


def heap(cdp):
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics["JSHeapUsedSize"] / 1024 / 1024


def main():
    with sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{BASE}/console/#token={TOKEN}")
        page.wait_for_selector("header .user")
        url = f"{BASE}/console/#/dashboards/{DASHBOARD}"

        print("navigation → every panel drawn (6 panels, 24 h, full page load)", flush=True)
        samples = []
        for _ in range(NAVIGATIONS):
            page.goto("about:blank")
            page.goto(url)
            samples.append(page.evaluate(DRAWN, PANELS))
        figures("drawn after", samples)
        assets = page.evaluate("""performance.getEntriesByType('resource')
            .filter((r) => r.name.includes('/console/')).map((r) => r.name)""")
        raw = zipped = 0
        for name in set(assets) | {f"{BASE}/console/"}:
            with urllib.request.urlopen(name, timeout=10) as response:
                body = response.read()
            raw += len(body)
            zipped += len(gzip.compress(body, 9))
        print(f"console assets: {len(set(assets)) + 1} files, {raw / 1024:.1f} KiB, {zipped / 1024:.1f} KiB gzipped",
              flush=True)

        print("ingest → the live panel changed (fetch from the page, MutationObserver)", flush=True)
        samples = []
        for _ in range(INGESTS):
            samples.append(page.evaluate(INGEST_ONE, [METRIC, TOKEN]))
            time.sleep(0.1)
        figures("changed after", samples)

        print(f"left live {SOAK} s at 20 updates/s", flush=True)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        start = heap(cdp)
        page.evaluate("""([metric, token]) => {
            window.__soak = setInterval(() => fetch('/api/v1/events', { method: 'POST',
                headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
                body: JSON.stringify({ events: [{ name: metric, ts: new Date().toISOString(), value: 42,
                                                  labels: { host: 'h01', region: 'r1' } }] }) }), 50);
        }""", [METRIC, TOKEN])
        marks = []
        deadline = time.monotonic() + SOAK
        while time.monotonic() < deadline:
            time.sleep(min(60, max(0, deadline - time.monotonic())))
            marks.append(heap(cdp))
        page.evaluate("clearInterval(window.__soak)")
        end = heap(cdp)
        print(f"  JS heap after GC: {start:.1f} MiB at the start, {end:.1f} MiB at the end "
              f"(each minute: {', '.join(f'{m:.1f}' for m in marks)})", flush=True)
        chromium.close()


if __name__ == "__main__":
    main()
