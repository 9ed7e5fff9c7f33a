"""End to end: a sweep run by Snakemake, its report opened in headless Chromium, and `snakemake --report`.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no port,
no network, no extra Python package. The page must load with every image decoded, without a
console error, an exception or a request for anything outside the page; a full-page screenshot
is kept under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake, write_spec
from report_page import parse

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe")
# A 2-D sweep in which the iteration cap stops some points at high β: the report has failures.
SPEC = {"name": "browser", "model": "mccall", "params": {"n_wages": 21, "max_iter": 60},
        "sweep": {"c": {"linspace": [15, 30, 6]}, "beta": [0.95, 0.99, 0.995]}, "shards": 2}


def find_browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


class DevTools:
    """A headless Chromium and its DevTools protocol over a pipe (messages end with a NUL byte).

    Chromium reads commands on fd 3 and writes on fd 4; a constant shell line maps them from the
    child's stdin and stdout, so no preexec hook runs in a process that may hold threads.
    """

    def __init__(self, binary: str, profile: Path, log: Path):
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', binary, *FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _message(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc.poll()}); see {self._log.name}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        body = {"id": self.next_id, "method": method, "params": params}
        if session:
            body["sessionId"] = session
        self.proc.stdin.write(json.dumps(body).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            message = self._message(timeout)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._message(max(0.1, deadline - time.time())))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


CHECK_PAGE = """(() => {
  const images = Array.from(document.images);
  return {title: document.title, images: images.length,
          decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
          sections: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
          height: document.documentElement.scrollHeight};
})()"""


def render(binary: str, page: Path, workdir: Path, width: int = 1280) -> tuple[dict, list[dict], bytes]:
    """Open ``page``; return what the page reports about itself, the error events and a
    full-page screenshot (PNG)."""
    browser = DevTools(binary, workdir / "chromium-profile", workdir / "chromium.log")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1,
                     mobile=False)
        browser.send("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        facts = browser.send("Runtime.evaluate", session, expression=CHECK_PAGE, returnByValue=True)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": width, "height": min(facts["height"], 20000), "scale": 1})
        errors = [e for e in browser.events if e.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        outside = [e["params"]["request"]["url"] for e in browser.events
                   if e.get("method") == "Network.requestWillBeSent"
                   and not e["params"]["request"]["url"].startswith(("data:", page.resolve().as_uri()))]
        errors += [{"method": "request outside the page", "url": url} for url in outside]
        return facts, errors, base64.b64decode(shot["data"])
    finally:
        browser.close()


def test_sweep_report_renders_in_chromium_and_snakemake_report_works(tmp_path):
    binary = find_browser()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium (see .ci/run)")
        pytest.skip("no Chromium (apt-get install chromium)")
    spec = write_spec(tmp_path, SPEC)
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    html = tmp_path / "results" / SPEC["name"] / "report.html"

    # Snakemake's own report, with ours flagged in it.
    run_snakemake(tmp_path, "--config", f"sweep={spec}", "--report", "report.zip")
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        names = archive.namelist()
        assert "report/report.html" in names
        (embedded,) = [n for n in names if n.startswith("report/data/") and n.endswith("/report.html")]
        assert archive.read(embedded) == html.read_bytes()
        assert b"The sweep&#x27;s own report" in archive.read("report/report.html") or \
            b"own report" in archive.read("report/report.html")  # the caption

    facts, errors, png = render(binary, html, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-browser.png"
    shot.write_bytes(png)
    assert errors == []
    page = parse(html.read_text())
    assert facts["title"] == page.title == f"Sweep {SPEC['name']}"
    assert facts["images"] == page.img_count >= 6
    assert facts["decoded"] == facts["images"]
    assert facts["sections"] == page.heading_texts("h2") == ["Summary", "Results", "Failures", "Execution"]
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "results" / SPEC["name"] / "sweep.zarr", chunks=None)
    assert 0 < len(page.table("failed-points").rows) == int((~ds["converged"].values).sum())  # the page has failures
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.size[0] == 1280 and image.size[1] == min(facts["height"], 20000) > 2000
    # Not a blank page: the screenshot has many distinct colours (plots, text, tables).
    assert len(image.convert("RGB").resize((320, 320)).getcolors(1 << 16) or []) > 200
