"""The page in a real browser: Debian's headless chromium, its fake microphone fed from a recording, driven by
selenium with Debian's chromium-driver, opens `/`, presses the microphone button, and shows the final text
`transcribe_file` gives for that recording. Select with `pytest -m browser`."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import soundfile as sf
from test_serve import TOKEN, served  # noqa: F401  (the fixture: a server on one shared recognizer)

from stream.transcribe import transcribe_file

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.serve,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (tools/setup.sh --test)"),
]


def test_page_captions_the_fake_microphone(served, recognizer, digits_audio, tmp_path):  # noqa: F811 (the imported fixture)
    audio, _ = digits_audio
    # 1 s of silence, the digits, 3 s of silence (the endpoint needs 1.2 s); chromium loops the file.
    mic = np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(48000, np.float32)])
    wav = tmp_path / "mic.wav"
    sf.write(wav, mic, 16000, subtype="PCM_16")
    want = transcribe_file(recognizer, wav).text
    assert want

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.get(f"http://127.0.0.1:{served.port}/?token={TOKEN}")
        driver.find_element(By.ID, "mic").click()
        deadline, texts = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#finals li .text")]
            if texts:
                break
            time.sleep(0.25)
        state = driver.find_element(By.ID, "status").text
        assert texts, f"no final on the page (status: {state}; partial: {driver.find_element(By.ID, 'partial').text!r})"
        assert texts[0] == want
        assert "listening" in state
        times = driver.find_element(By.CSS_SELECTOR, "#finals li .t").text
        assert "–" in times  # kept with its times
        driver.find_element(By.ID, "mic").click()  # stop: eof, the last result, a normal close
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and driver.find_element(By.ID, "status").text != "idle":
            time.sleep(0.25)
        assert driver.find_element(By.ID, "status").text == "idle"
    finally:
        driver.quit()
