"""The status page in a real headless Chromium (Debian's ``chromium``), against the exporter on
the simulator: a healthy tag, a failing one whose API message holds a script, a first read in
progress and a tag whose name holds markup. At 1280 and 390 CSS pixels wide: no horizontal
scrolling, the failing tag's reason in view without scrolling (1280), no script run, the markup
shown as text. The 1280 px screenshot is docs/status-page.png: ``SMSP_SCREENSHOTS=1`` writes
it there anew (otherwise the screenshots go to the test's temporary folder)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from smsp_exporter.config import config_from_dict
from smsp_exporter.simulator import TagSpec
from smsp_exporter.status import CONTENT_SECURITY_POLICY

from .browser import Browser, png_size
from .helpers import API_KEY, campaign, require_tool, serve

DOCS = Path(__file__).parent.parent / "docs"
TITLE = "SMS Partner exporter"
MARKUP_TAG = "<script>document.title='pwned'</script><b>gras</b>"
API_MESSAGE = "Cle API invalide <script> window.pwned = true </script>"

# Measured from DevTools (Runtime.evaluate is not subject to the page's policy).
MEASURE = """(() => {
  const doc = document.documentElement;
  const rows = [...document.querySelectorAll('th[scope=row]')].map(th => th.textContent);
  const failing = document.querySelector('tr.failing td.why');
  const box = failing ? failing.getBoundingClientRect() : null;
  return {
    title: document.title,
    pwned: typeof window.pwned,
    scripts: document.scripts.length,
    bold_gras: [...document.querySelectorAll('b')].filter(b => b.textContent === 'gras').length,
    scroll_width: doc.scrollWidth,
    inner_width: window.innerWidth,
    inner_height: window.innerHeight,
    rows: rows,
    facts: document.querySelector('dl.facts').textContent,
    reason: failing ? failing.textContent : null,
    reason_box: box ? [box.left, box.top, box.right, box.bottom] : null,
  };
})()"""


@pytest.mark.needs("chromium")
def test_the_status_page_in_chromium(sim, tmp_path):
    chromium = require_tool("chromium")
    started = time.monotonic()
    sim.add_tag(campaign("promo-noel", 40, report_delay=30))
    sim.add_tag(campaign("casse", 5))
    sim.set_fault("casse", "api_error", code=10, message=API_MESSAGE)
    sim.add_tag(campaign(MARKUP_TAG, 8))
    sim.add_tag(TagSpec("gros-envoi", 6000, send_spread=0.0))  # 600 pages: a first read
    tags = ["promo-noel", "casse", MARKUP_TAG, "gros-envoi"]
    api = {"url": sim.url, "key": API_KEY, "max_requests_per_second": 60, "retries": 0}
    config = config_from_dict(
        {"api": api, "tags": tags, "account": {"enabled": True}}, source="/etc/smsp/config.yaml"
    )
    with serve(config) as url:
        for _ in range(2):  # two rounds of about 2 s at 60 requests/s: 600 pages cannot end
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
            assert requests.get(url + "/metrics", headers=headers, timeout=20).ok
            sim.advance(60)
        shots = DOCS if os.environ.get("SMSP_SCREENSHOTS") == "1" else tmp_path
        with Browser.start(chromium) as browser:
            browser.open(url + "/", width=1280, height=800)
            wide = browser.evaluate(MEASURE)
            wide_png = browser.screenshot()
            (shots / "status-page.png").write_bytes(wide_png)
            browser.open(url + "/", width=390, height=844, mobile=True)
            narrow = browser.evaluate(MEASURE)
            narrow_png = browser.screenshot()
            (tmp_path / "status-page-390.png").write_bytes(narrow_png)
            console = browser.console()
    elapsed = time.monotonic() - started
    print(f"chromium test: {elapsed:.1f} s; screenshots in {shots}, {tmp_path}")
    print(json.dumps({"1280": wide, "390": narrow}, indent=1))

    assert png_size(wide_png) == (1280, 800) and png_size(narrow_png) == (390, 844)
    for seen in (wide, narrow):
        # Trouble first: failing, then the first read, then the healthy ones.
        assert seen["rows"] == ["casse", "gros-envoi", MARKUP_TAG, "promo-noel"], seen["rows"]
        assert seen["scroll_width"] <= seen["inner_width"], seen  # no horizontal scrolling
        # No script ran: neither the tag's nor the API message's; both read as text.
        assert seen["title"] == TITLE and seen["pwned"] == "undefined"
        assert seen["scripts"] == 0 and seen["bold_gras"] == 0
        assert "api_code_10" in seen["reason"] and "<script> window.pwned" in seen["reason"]
    # The round's request budget and what it spent (the scheduler's), the account's credit.
    assert re.search(r"budget \d+ requests in [\d.]+ s; spent \d+ \(", wide["facts"]), wide
    assert "first_read" in wide["facts"] and "balance" in wide["facts"]
    left, top, right, bottom = wide["reason_box"]
    assert left >= 0 and right <= 1280 and top >= 0 and bottom <= wide["inner_height"], wide
    assert not [line for line in console if "Refused" in line], console
    assert elapsed < 30, elapsed


class _InlineScript(BaseHTTPRequestHandler):
    """A page with an inline script and an image, under the status page's policy."""

    def do_GET(self) -> None:
        body = (
            b"<!DOCTYPE html><title>before</title><script>document.title='ran'</script>"
            b"<img src='/pixel' onerror=\"document.title='img'\">"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.needs("chromium")
def test_the_policy_stops_scripts_in_chromium():
    """The status page's Content-Security-Policy, as Chromium reads it, forbids any script:
    a page that had one (were escaping ever to fail) would not run it."""
    chromium = require_tool("chromium")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InlineScript)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Browser.start(chromium) as browser:
            browser.open(f"http://127.0.0.1:{server.server_port}/", width=400, height=300)
            assert browser.evaluate("document.title") == "before"
            assert any("Content Security Policy" in line for line in browser.console())
    finally:
        server.shutdown()
        server.server_close()
