"""The console through faults, in a real browser: a dropped WebSocket shows
"Reconnecting…" and the page resumes by itself; a stopped jobs service is
named plainly (the gateway's 503) and the page works again once it is back.
Run by tests-e2e/tests/e2e/console.rs, which stops and starts the jobs
service when this script asks on stdout ("STOP jobs", "START jobs") and
answers on stdin once done:

    faults.py BASE_URL TOKEN SHOTS_DIR
"""

import sys

from playwright.sync_api import expect, sync_playwright

import browser

BASE, TOKEN, SHOTS = sys.argv[1:4]
api = browser.Api(BASE, TOKEN)


def ask(what):
    print(what, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer == "done", f"{what}: the test answered {answer!r}"


def dropped_socket(page, sockets):
    """The socket drops: the banner says so, the page reconnects and a job
    submitted meanwhile still shows, live."""
    page.goto(f"{BASE}/console/#/jobs")
    expect(page.locator("text=No jobs yet.")).to_be_visible()
    page_side, server_side = sockets[-1]
    server_side.close()
    page_side.close(code=4001, reason="dropped by the test")
    expect(page.locator(".banner")).to_contain_text("Reconnecting")
    job = api("POST", "/api/v1/jobs", {"kind": "noop", "payload": {}})
    expect(page.locator(".banner")).to_be_hidden(timeout=20_000)
    expect(page.locator(f"tr[data-job='{job['id']}']")).to_have_attribute("data-status", "succeeded")
    assert len(sockets) >= 2, "the page did not reconnect"


def stopped_backend(page):
    """The jobs service stops: a submit shows the 503 naming it; once it is
    back, a submit works and shows live."""
    ask("STOP jobs")
    page.locator("summary", has_text="Submit a job").click()
    page.fill("#submit-kind", "noop")
    page.fill("#submit-payload", "{}")
    page.get_by_role("button", name="Submit").click()
    error = page.locator(".submit-job .field-error")
    expect(error).to_contain_text("the jobs service is unavailable")
    page.screenshot(path=f"{SHOTS}/jobs-backend-down.png")
    ask("START jobs")
    for _ in range(60):
        page.get_by_role("button", name="Submit").click()
        page.wait_for_timeout(500)
        if page.locator("tr[data-status='succeeded']").count() >= 2:
            break
    expect(page.locator("tr[data-status='succeeded']")).to_have_count(2)
    expect(error).to_be_empty()


def main():
    problems = []
    with sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        browser.guard(page, problems)
        sockets = []

        def route(ws):
            server = ws.connect_to_server()
            sockets.append((ws, server))

        page.route_web_socket("**/api/v1/ws", route)
        page.goto(f"{BASE}/console/#token={TOKEN}")
        expect(page.locator("header .user")).to_have_text("alice")
        dropped_socket(page, sockets)
        stopped_backend(page)
        chromium.close()
    assert not problems, problems
    print("ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
