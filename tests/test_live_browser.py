"""The demo page's Live tab in headless Chromium, whose fake camera plays a synthetic-head video at 30 frames/s:
frames stream to the server and avatar frames come back; the page's frames/s and latency are plausible; a second
client is told to wait; closing the first client's tab ends its session on the server (the second then drives).

The frames/s and latency it prints are the figures docs/demo.md quotes (with the command that measured them)."""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

import demo_helpers
from finetune_helpers import tiny_checkpoint
from talkinghead.demo import LIVE_FRAMES_KEPT
from test_demo_browser import (
    CHROMIUM,
    DRIVER,
    click,
    tab,
    upload,
    wait_text,
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)",
)

#: JS: note when each webcam frame is captured (the canvas it is encoded from) and when the output image changes
HOOKS = """
window.__caps = []; window.__outs = [];
const encode = HTMLCanvasElement.prototype.toDataURL;
HTMLCanvasElement.prototype.toDataURL = function (...a) { window.__caps.push(performance.now()); return encode.apply(this, a); };
let last = null;
new MutationObserver(() => {
  const im = document.querySelector('#live-output img');
  if (im && im.src && im.src !== last) { last = im.src; window.__outs.push(performance.now()); }
}).observe(document.querySelector('#live-output'), {subtree: true, childList: true, attributes: true});
"""


@pytest.fixture(scope="module")
def live_page(tmp_path_factory):
    """``make demo`` on a tiny checkpoint, or on ``$TALKINGHEAD_LIVE_CKPT`` (a live session frees only when it
    ends, not by idling, within the test) and one Chromium whose windows are the clients."""
    root = tmp_path_factory.mktemp("live_browser")
    given = os.environ.get("TALKINGHEAD_LIVE_CKPT")  # measure another model (docs/demo.md: the embedded one)
    ckpt = given or tiny_checkpoint(root / "runs" / "tiny", iterations=8)
    with demo_helpers.demo_server(root, ckpt, "--live-idle-s 300") as port:
        browser = demo_helpers.chromium(demo_helpers.write_y4m("driver", root / "camera.y4m", fps=30), CHROMIUM, DRIVER)
        yield browser, f"http://127.0.0.1:{port}/", root / "server.log"
        browser.quit()


def make_ff_avatar(browser, folder) -> None:
    wait_text(browser, "#banner", "Model:", timeout=60)
    upload(browser, "#avatar-video", demo_helpers.write_video("person", folder / "person.mp4"))
    time.sleep(2)
    browser.execute_script("[...document.querySelectorAll('label')].find(l => l.textContent.trim() == 'FF').click()")
    click(browser, "#make-avatar")
    wait_text(browser, "#avatar-status", "saved (FF", timeout=120)


def start_camera(browser) -> None:
    """The Live tab's webcam: access it, then start streaming (Gradio's Record button)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def press(text):
        def find(b):
            return b.execute_script(
                "const e = [...document.querySelectorAll('#live-camera button')].find(e => e.innerText.trim()"
                ".includes(arguments[0])); if (e) { e.click(); return true; } return false;", text)
        WebDriverWait(browser, 30, poll_frequency=0.25).until(find)

    press("Access Webcam")
    press("Record")


def status(browser) -> str:
    return browser.find_element("css selector", "#live-status").text


def figures(text: str) -> tuple[float, float]:
    m = re.search(r"([\d.]+) frames/s, latency ([\d.]+) ms", text)
    assert m, text
    return float(m.group(1)), float(m.group(2))


def test_live_frames_come_back_and_one_session_runs_at_a_time(live_page, tmp_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url, log = live_page
    browser.get(url)
    first = browser.current_window_handle
    make_ff_avatar(browser, tmp_path)
    tab(browser, "Live")
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
        "return document.querySelector('#live-avatar input').value") == "person_T8_FF")
    browser.execute_script(HOOKS)
    start_camera(browser)
    WebDriverWait(browser, 60, poll_frequency=0.25).until(lambda b: len(b.execute_script("return window.__outs")) >= 5)
    time.sleep(6)  # steady state
    t_end = browser.execute_script("return performance.now()")
    caps, outs = browser.execute_script("return [window.__caps, window.__outs]")
    text = status(browser)
    fps, latency = figures(text)
    assert fps > 0 and math.isfinite(fps) and latency > 0 and math.isfinite(latency), text
    assert re.search(r"camera 96×96 · [1-9]\d* rendered", text), text

    # the browser's own figures over the last 5 s: output images shown per second, and the time from a frame's
    # capture to the next avatar frame shown (lower bound: the last frame captured before it; upper bound: the
    # last captured before the previous output, which the server may have taken while busy)
    window = [u for u in outs if u > t_end - 5000]
    shown_fps = (len(window) - 1) / ((window[-1] - window[0]) / 1000)
    lower, upper = [], []
    for prev, u in itertools.pairwise(outs):
        if u in window:
            lower.append(u - max(c for c in caps if c < u))
            upper.append(u - max((c for c in caps if c < prev), default=prev))
    lat_lo, lat_hi = sum(lower) / len(lower), sum(upper) / len(upper)
    print(f"\nlive, in the browser: {shown_fps:.1f} avatar frames/s shown, {len(caps)} camera frames sent; "
          f"camera frame -> avatar frame shown {lat_lo:.0f}-{lat_hi:.0f} ms; the page says: {text}")
    assert shown_fps > 0 and 0 < lat_lo <= lat_hi and math.isfinite(lat_hi)
    # one JPEG a shown frame in the server's Gradio cache, but only the newest stay: disk stays bounded
    server_dir = Path(re.search(r"files of this server's sessions: (\S+)", log.read_text()).group(1))
    # the stream still runs, so the server prunes folders while we look: a walk that skips vanished folders
    shown_files = [f for _, _, files in os.walk(server_dir) for f in files if f.endswith(".jpeg")]
    assert len(outs) > LIVE_FRAMES_KEPT and 0 < len(shown_files) <= LIVE_FRAMES_KEPT, (len(outs), len(shown_files))

    # a second client is told to wait
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    browser.get(url)
    make_ff_avatar(browser, tmp_path)
    tab(browser, "Live")
    start_camera(browser)
    waiting = wait_text(browser, "#live-status", "Another live session is running", timeout=60)
    assert "wait" in waiting, waiting

    # closing the first tab ends its session on the server: the second client drives
    browser.switch_to.window(first)
    browser.close()
    browser.switch_to.window(second)
    driving = wait_text(browser, "#live-status", "frames/s", timeout=90)
    assert "rendered" in driving, driving
    assert "live session of" in log.read_text() and "ended" in log.read_text()

    # stopping the camera ends the stream, and with it the live session
    browser.execute_script("[...document.querySelectorAll('#live-camera button')].find(e => e.innerText.trim() == 'Stop')"
                           ".click()")
    ended = wait_text(browser, "#live-status", "Live session ended", timeout=60)
    assert "Live session ended." in ended, ended
