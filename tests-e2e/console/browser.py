"""What the console's browser scripts share: the API as the test calls it
(to check the page against), the browser, and the guard that fails a run
on any dialog or page error."""

import json
import urllib.request

from playwright.sync_api import expect

expect.set_options(timeout=15_000)


class Api:
    def __init__(self, base, token):
        self.base, self.token = base, token

    def __call__(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return json.loads(text) if text and response.headers.get_content_type().endswith("json") else text


def rfc3339(t):
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def launch(playwright):
    return playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])


def guard(page, problems):
    page.on("dialog", lambda d: (problems.append(f"a dialog opened: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
