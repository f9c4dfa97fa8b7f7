"""The page of `asr serve` in a real headless browser: Debian's chromium driven by Selenium through chromedriver.

`.ci/run` installs chromium and chromium-driver when they are missing; elsewhere the test skips if they are absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from asr.data.manifest import read_manifest  # noqa: E402
from asr.recognizer import load_model  # noqa: E402
from asr.serve import ServeConfig, create_app, running  # noqa: E402


def find(*names: str) -> str | None:
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return None


CHROMIUM = os.environ.get("CHROMIUM") or find("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or find("chromedriver")


def headless_chromium(microphone: Path | None = None):
    """A headless chromium; the binary and driver are given, so Selenium never tries to download one. With
    `microphone`, that wav file is the (fake) microphone and permission is granted without asking."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1100"):
        opts.add_argument(arg)
    if microphone is not None:
        for arg in ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
            opts.add_argument(arg)
        opts.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
    return webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (apt-get install ...)")
def test_page_transcribes_an_uploaded_file_and_shows_errors(tone_model, tone_corpus, tmp_path):
    rec = load_model(tone_model)
    wav = Path(read_manifest(tone_corpus["test"])[0].audio_filepath)
    expected = rec.transcribe([str(wav)])[0]
    assert expected.text
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is text, not audio")
    app = create_app(rec, rec.options(), ServeConfig(model_id="tone"))
    with running(app) as url:
        driver = headless_chromium()
        try:
            wait = WebDriverWait(driver, 60)
            driver.get(url + "/")
            wait.until(EC.text_to_be_present_in_element((By.ID, "model"), "Model tone"))
            driver.find_element(By.ID, "file").send_keys(str(wav))
            wait.until(EC.visibility_of_element_located((By.ID, "result")))
            assert driver.find_element(By.ID, "transcript").text == expected.text
            rows = driver.find_elements(By.CSS_SELECTOR, "#segments tbody tr")
            assert len(rows) == len(expected.segments)
            assert rows[0].find_elements(By.TAG_NAME, "td")[2].text == expected.segments[0].text
            assert not driver.find_element(By.ID, "error").is_displayed()
            # The transcript heading has the focus (keyboard users land on the result), and Tab walks from there
            # through the copy and download buttons.
            assert driver.switch_to.active_element.get_attribute("id") == "result-title"
            from selenium.webdriver.common.keys import Keys

            tabbed = []
            for _ in range(4):
                driver.switch_to.active_element.send_keys(Keys.TAB)
                tabbed.append(driver.switch_to.active_element.get_attribute("id"))
            assert tabbed == ["copy", "dl-txt", "dl-srt", "dl-vtt"]
            copy = driver.find_element(By.ID, "copy")
            driver.execute_script("arguments[0].focus()", copy)
            copy.send_keys(Keys.ENTER)  # Enter on a button works as a click: copied, or selected for Ctrl+C
            wait.until(lambda d: "text" in d.find_element(By.ID, "status").text)
            srt = driver.execute_script("return formats.srt()")
            from asr.transcript import to_srt

            assert srt == to_srt(expected)  # the page's download is what the server's srt gives

            driver.find_element(By.ID, "file").send_keys(str(bad))
            wait.until(EC.visibility_of_element_located((By.ID, "error")))
            message = driver.find_element(By.ID, "error").text
            assert "not_audio.wav" in message and "cannot" in message, message
            assert driver.find_element(By.ID, "error").get_attribute("role") == "alert"
        finally:
            driver.quit()
    assert app.state.server.queue.stats.requests == 1  # the bad file never reached the decoder


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (apt-get install ...)")
def test_page_records_from_the_microphone_and_transcribes(tone_model, tone_corpus):
    """MediaRecorder on chromium's fake microphone (a test wav played in a loop) -> WAV made in the page -> the
    server -> a transcript of about the recorded length."""
    rec = load_model(tone_model)
    wav = Path(read_manifest(tone_corpus["test"])[0].audio_filepath)
    app = create_app(rec, rec.options(), ServeConfig(model_id="tone"))
    with running(app) as url:
        driver = headless_chromium(microphone=wav)
        try:
            wait = WebDriverWait(driver, 60)
            driver.get(url + "/")
            wait.until(EC.text_to_be_present_in_element((By.ID, "model"), "Model tone"))
            button = driver.find_element(By.ID, "record")
            assert button.is_enabled()
            button.click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "record"), "Stop"))
            import time

            time.sleep(2.0)
            button.click()
            wait.until(EC.visibility_of_element_located((By.ID, "result")))
            assert not driver.find_element(By.ID, "error").is_displayed()
            meta = driver.find_element(By.ID, "result-meta").text  # "(2.01 s of audio)"
            seconds = float(meta.strip("()").split()[0])
            assert 1.0 < seconds < 4.0, meta
            # The fake microphone loops the file, so the recording holds its words over and over (cut anywhere).
            heard = driver.find_element(By.ID, "transcript").text.split()
            spoken = set(rec.transcribe([str(wav)])[0].text.split())
            assert len(heard) >= 2 and sum(w in spoken for w in heard) >= 0.75 * len(heard), (heard, spoken)
        finally:
            driver.quit()
    assert app.state.server.queue.stats.requests <= 1
