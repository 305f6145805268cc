"""`make demo` in a real browser: headless Chromium from the distribution (apt-get install chromium
chromium-driver), driven by Selenium.  Starts the page on a small checkpoint trained here (or $TALKINGHEAD_DEMO_CKPT), makes an FT avatar from
an uploaded synthetic-head video, drives it with another, checks that the result video plays, that a photo with
no face shows the error, and saves the screenshot README shows (to docs/demo.png when
TALKINGHEAD_UPDATE_SCREENSHOT=1).  Then it records a driver with the webcam (Chromium's fake camera playing a
synthetic-head video) and drives the avatar with that recording."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

import demo_helpers  # noqa: E402
from finetune_helpers import tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    # TALKINGHEAD_DEMO_CKPT: another model, e.g. a trained one for the screenshot (TALKINGHEAD_UPDATE_SCREENSHOT=1)
    ckpt = os.environ.get("TALKINGHEAD_DEMO_CKPT") or tiny_checkpoint(root / "runs" / "tiny", iterations=8)
    with demo_helpers.demo_server(root, ckpt, "--steps 4") as port:
        browser = demo_helpers.chromium(demo_helpers.write_y4m("driver", root / "camera.y4m"), CHROMIUM, DRIVER)
        browser.get(f"http://127.0.0.1:{port}/")
        yield browser, root
        browser.quit()


def wait_text(browser, css: str, *needles: str, timeout: float = 120, before: str | None = None) -> str:
    """The text of ``css`` once it holds one of ``needles`` (and differs from ``before``, the previous text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(b):
        text = b.find_element(By.CSS_SELECTOR, css).text
        if before is not None and text == before:
            return False
        return text if any(n in text for n in needles) else False

    return WebDriverWait(browser, timeout, poll_frequency=0.5).until(found)


def upload(browser, css: str, path: Path, timeout: float = 60) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    sel = (By.CSS_SELECTOR, f"{css} input[type=file]")
    WebDriverWait(browser, timeout, poll_frequency=0.5).until(ec.presence_of_element_located(sel)).send_keys(str(path))


def click(browser, css: str) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_script("arguments[0].click()", browser.find_element(By.CSS_SELECTOR, css))


def tab(browser, name: str) -> None:
    from selenium.webdriver.common.by import By

    el = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name)
    browser.execute_script("arguments[0].click()", el)


def playing(browser) -> dict:
    """Wait until the result video can play, play it, and report what the browser decoded."""
    return browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const v = document.querySelector('#result-video video');
          if (v && v.readyState >= 2 && v.duration > 0) {
            v.muted = true; v.play().catch(() => {});
            setTimeout(() => done({duration: v.duration, decoded: v.webkitDecodedFrameCount ||
                (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0),
                time: v.currentTime, w: v.videoWidth, h: v.videoHeight, err: v.error && v.error.code,
                src: v.currentSrc}), 1500);
          } else if (Date.now() - t0 > 30000) {
            done({missing: !v, ready: v && v.readyState, err: v && v.error && v.error.code});
          } else { setTimeout(poll, 250); }
        })();
        """
    )


def driver_button(browser, match) -> None:
    """Click the driver video's button for which ``match(aria_label, text)`` holds (Gradio's webcam controls)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(b):
        for el in b.find_elements(By.CSS_SELECTOR, "#driver-video button"):
            if match(el.get_attribute("aria-label") or "", el.text.strip()):
                return el
        return False

    browser.execute_script("arguments[0].click()", WebDriverWait(browser, 30, poll_frequency=0.25).until(find))


def test_make_an_avatar_drive_it_and_see_the_video_play(page, tmp_path) -> None:
    browser, root = page
    wait_text(browser, "#banner", "Model:", timeout=60)

    # a photo with no face: one clear message on the page
    upload(browser, "#avatar-photos", demo_helpers.no_face_photo(tmp_path / "wall.png"))
    time.sleep(2)
    click(browser, "#make-avatar")
    msg = wait_text(browser, "#avatar-status", "Error")
    assert "no usable face" in msg and "Traceback" not in msg and "/tmp" not in msg, msg

    # a video (used before the photos): an FT avatar
    upload(browser, "#avatar-video", demo_helpers.write_video("person", tmp_path / "person.mp4"))
    time.sleep(2)
    click(browser, "#make-avatar")
    try:
        msg = wait_text(browser, "#avatar-status", "saved (", timeout=150)
    except Exception as exc:  # noqa: BLE001 - say what the page showed instead
        raise AssertionError(f"no avatar made; the page says: {browser.find_element('css selector', '#avatar-status').text}") from exc
    assert "saved (FT, T=8" in msg, msg

    tab(browser, "Drive")
    upload(browser, "#driver-video", demo_helpers.write_video("driver", tmp_path / "driver.mp4"))
    time.sleep(2)
    click(browser, "#drive")
    msg = wait_text(browser, "#drive-status", "frames/s", "Error:")
    assert "10 frames" in msg, msg
    state = playing(browser)
    assert state.get("duration", 0) > 0 and state.get("decoded", 0) > 0, state
    size = int(re.search(r"\((\d+)² px\)", browser.find_element("css selector", "#banner").text).group(1))
    assert (state["w"], state["h"]) == (3 * size, size), state  # driver | landmarks | avatar
    shot = tmp_path / "demo.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("TALKINGHEAD_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "demo.png")

    # the webcam: Chromium's fake camera plays the driver video; record three seconds of it and drive with that
    before = browser.find_element("css selector", "#drive-status").text
    driver_button(browser, lambda label, text: label == "Capture from camera")
    driver_button(browser, lambda label, text: "Access Webcam" in text)
    driver_button(browser, lambda label, text: label == "start recording" and text == "Record")
    time.sleep(3)
    driver_button(browser, lambda label, text: text == "Stop")
    time.sleep(4)  # the recording uploads
    click(browser, "#drive")
    from selenium.webdriver.support.ui import WebDriverWait

    def finished(b):  # a new message, without the progress timer that prefixes it while the job runs
        text = b.find_element("css selector", "#drive-status").text
        return text if text != before and re.match(r"(\d+ frames \(driver|Error)", text) else False

    msg = WebDriverWait(browser, 120, poll_frequency=0.5).until(finished)
    assert re.match(r"\d+ frames \(driver", msg) and int(msg.split()[0]) >= 10, msg
    state = playing(browser)
    assert state.get("duration", 0) > 0 and state.get("decoded", 0) > 0 and (state["w"], state["h"]) == (3 * size, size), state
