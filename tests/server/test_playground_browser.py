"""The playground page in a real headless Chromium (Debian's `chromium`, driven over the DevTools protocol with
aiohttp's websocket client) against a live `gptzoo serve` with two tiny variants: a side-by-side run from the URL
streams each variant's greedy text exactly as /v1/completions returns it, shows who served and its loss, every
control is labelled and reachable by Tab, and no request leaves the server. The screenshot is saved under
$GPTZOO_ARTIFACTS (else the test's tmp dir) and its path printed. Skips when Chromium is not installed."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest

from tests.server.conftest import server_process

pytestmark = pytest.mark.slow
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
STARTUP_S = 120  # generous deadlines, never asserted as speed: only so that a hung browser fails instead of hanging
RUN_S = 300
CONTROLS = ["models", "prompt", "max_tokens", "temperature", "seed", "max_tpot_ms", "run"]


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids, self.events = ws, itertools.count(1), []

    async def send(self, method: str, **params):
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == msg_id:
                assert "error" not in msg, (method, msg["error"])
                return msg["result"]
            self.events.append(msg)

    async def eval(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, deadline_s: float):
        """Polls until the page says so; the deadline only turns a hang into a failure."""
        async with asyncio.timeout(deadline_s):
            while not await self.eval(expression):
                await asyncio.sleep(0.2)


def _page_ws(profile: Path, proc: subprocess.Popen) -> str:
    """The page target's websocket URL, once Chromium has written its DevTools port."""
    port_file = profile / "DevToolsActivePort"
    for _ in range(STARTUP_S * 10):
        assert proc.poll() is None, f"chromium exited with {proc.returncode}"
        if port_file.exists() and port_file.read_text().count("\n") >= 1:
            port = port_file.read_text().split()[0]
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port")


async def _drive(ws_url: str, url: str, shot: Path) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        cdp = DevTools(ws)
        await cdp.send("Network.enable")
        await cdp.send("Page.enable")
        await cdp.send("Emulation.setDeviceMetricsOverride", width=1000, height=720, deviceScaleFactor=1, mobile=False)
        await cdp.send("Page.navigate", url=url)
        await cdp.wait_for("['done', 'idle'].includes(document.body && document.body.dataset.state)", RUN_S)
        answers = await cdp.eval("""[...document.querySelectorAll('.answer')].map(a => ({
            model: a.dataset.model, text: a.querySelector('.text').textContent,
            served: a.querySelector('.served-by').textContent, route: a.querySelector('.route').textContent,
            loss: a.querySelector('.loss').textContent, tps: a.querySelector('.tps').textContent,
            points: a.querySelector('polyline').getAttribute('points').split(' ').length,
            error: a.querySelector('.error').hidden ? null : a.querySelector('.error').textContent}))""")
        unlabelled = await cdp.eval("""[...document.querySelectorAll('input, textarea, select')]
            .filter(e => e.type !== 'hidden' && e.labels.length === 0).map(e => e.id || e.name)""")
        png = await cdp.send("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(png["data"]))
        await cdp.eval("document.activeElement.blur(), document.body.focus(), true")
        focused = []
        for _ in range(len(CONTROLS) + 4):  # the key row is hidden without --api-key; Stop is disabled when idle
            for kind in ("rawKeyDown", "keyUp"):
                await cdp.send("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)
            focused.append(await cdp.eval("document.activeElement.id"))
        requested = [e["params"]["request"]["url"] for e in cdp.events
                     if e.get("method") == "Network.requestWillBeSent"]
        return {"answers": answers, "unlabelled": unlabelled, "focused": focused, "requested": requested}


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_side_by_side_in_a_real_browser(drafted_store, tmp_path):
    prompt, n = "ROMEO:", 40
    with server_process(tmp_path, drafted_store) as (_, base, log):
        expected, losses = {}, {}
        for card in httpx.get(f"{base}/v1/models").json()["data"]:
            losses[card["id"]] = card["val_loss"]
        for model in ("2l", "1l"):
            r = httpx.post(f"{base}/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": n,
                                                           "temperature": 0}, timeout=120)
            assert r.status_code == 200, r.text
            expected[model] = (r.json()["choices"][0]["text"], r.headers["x-gptzoo-model"])
        assert expected["2l"][0] != expected["1l"][0]  # two depths: the comparison can tell them apart
        assert "default-src 'self'" in httpx.get(f"{base}/").headers["content-security-policy"]

        url = f"{base}/?" + urlencode({"models": "2l,1l", "prompt": prompt, "max_tokens": n, "temperature": 0,
                                       "run": 1})
        profile = tmp_path / "chromium-profile"
        proc = subprocess.Popen([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-extensions", "--disable-background-networking", "--disable-sync",
                                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        artifacts = Path(os.environ.get("GPTZOO_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "playground.png"
        try:
            seen = asyncio.run(_drive(_page_ws(profile, proc), url, shot))
        finally:
            proc.kill()
            proc.wait(timeout=30)
        print(f"playground screenshot: {shot}")

    assert shot.stat().st_size > 1000
    by_model = {a["model"]: a for a in seen["answers"]}
    assert sorted(by_model) == ["1l", "2l"], json.dumps(seen["answers"])
    for model, (text, served) in expected.items():
        a = by_model[model]
        assert a["error"] is None, a
        assert a["text"] == text, (model, a["text"], text)
        assert a["served"] == served and a["route"] == "named", a
        assert a["loss"] == f"{losses[served]:.4f}", a
        assert a["points"] >= 2 and a["tps"] != "…", a  # the chart and the speed were drawn
    assert seen["unlabelled"] == []
    assert set(CONTROLS) <= set(seen["focused"]), seen["focused"]
    assert seen["requested"] and all(u.startswith(base + "/") for u in seen["requested"]), seen["requested"]
