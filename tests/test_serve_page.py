"""The web page in a real headless browser (Debian's chromium, driven through chromedriver): it lists the voices,
uploads a clip as a new voice, speaks a sentence with streamed audio into its player, and leaves a screenshot."""

from __future__ import annotations

import shutil
import time

import pytest
from serve_helpers import WAIT_S, running_server

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.serve.app import create_app
from tortoise_clvp.serve.settings import ServeSettings

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1000,900")

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _state(driver, key: str) -> str | None:
    return driver.execute_script(f"return document.body.dataset.{key} || null")


def test_the_page_uploads_a_voice_and_plays_streamed_speech(tiny_model_dir, tmp_path, browser, speech_clip,
                                                            record_property):
    app = create_app(TextToSpeech.from_local(tiny_model_dir), ServeSettings(workers=2, cache_dir=tmp_path / "latents"))
    wait = WebDriverWait(browser, WAIT_S * 2)
    with running_server(app) as base:
        browser.get(f"{base}/")
        wait.until(lambda d: _state(d, "voices"))
        picker = Select(browser.find_element(By.ID, "voice"))
        assert "piper_joe" in [option.get_attribute("value") for option in picker.options]

        browser.find_element(By.ID, "clips").send_keys(str(speech_clip))
        browser.find_element(By.ID, "voice-name").send_keys("my voice")
        browser.find_element(By.ID, "upload").click()
        wait.until(lambda d: "is ready" in d.find_element(By.ID, "status").text
                   or d.find_element(By.ID, "status").get_attribute("class") == "error")
        assert "Voice my voice is ready." == browser.find_element(By.ID, "status").text
        assert picker.first_selected_option.get_attribute("value").startswith("upload-")

        text = browser.find_element(By.ID, "text")
        text.clear()
        text.send_keys("Hello from the browser.")
        browser.find_element(By.ID, "seed").send_keys("4")
        started = time.monotonic()
        browser.find_element(By.ID, "speak").click()
        wait.until(lambda d: _state(d, "state") in ("done", "error"))
        status = browser.find_element(By.ID, "status").text
        assert _state(browser, "state") == "done", status
        received = int(_state(browser, "received"))
        assert received > 0 and "seed 4" in status
        duration = browser.execute_async_script(
            "const done = arguments[0], player = document.getElementById('player');"
            "if (player.readyState >= 1) done(player.duration);"
            "else player.addEventListener('loadedmetadata', () => done(player.duration));"
        )
        assert abs(duration - received / 2 / 24000) < 0.01  # the player holds all the audio that streamed in
        screenshot = tmp_path / "page.png"
        assert browser.save_screenshot(str(screenshot))
    record_property("screenshot", str(screenshot))
    print(f"screenshot: {screenshot} ({time.monotonic() - started:.1f} s from click to done)")
