"""The page in a real browser: Debian's headless chromium, its fake microphone fed from a recording, driven by
selenium with Debian's chromium-driver, opens `/`, presses the microphone button, and shows the final text
`transcribe_file` gives for that recording; strokes of a held-out writer's word drawn on the page's pad by the
driver are read by the handwriting model, and the page shows what the model reads in the points it sent.
Select with `pytest -m browser`."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import soundfile as sf
from test_serve import TOKEN, handwriting, served  # noqa: F401  (the fixtures: digits on /, handwriting on /pen)

from stream.transcribe import transcribe_array, transcribe_file

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.serve,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (tools/setup.sh --test)"),
]


def _chromium(tmp_path, *extra: str):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required", *extra,
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def test_page_captions_the_fake_microphone(served, recognizer, digits_audio, tmp_path):  # noqa: F811 (the imported fixture)
    audio, _ = digits_audio
    # 1 s of silence, the digits, 3 s of silence (the endpoint needs 1.2 s); chromium loops the file.
    mic = np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(48000, np.float32)])
    wav = tmp_path / "mic.wav"
    sf.write(wav, mic, 16000, subtype="PCM_16")
    want = transcribe_file(recognizer, wav).text
    assert want

    driver = _chromium(tmp_path, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-audio-capture={wav}")
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
        state = driver.find_element(By.ID, "status").text
        assert state == "idle", (state, [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#finals li .text")])
    finally:
        driver.quit()


def _strokes(points: np.ndarray, width: float, height: float) -> list[tuple[list[tuple[int, int]], list[float]]]:
    """A word's pen-down points scaled into the middle of a pad of `width` x `height` CSS pixels, as offsets from
    its centre (WebDriver's element origin), per stroke: (points, seconds since the previous point)."""
    down = points[:, 3] > 0.5
    lo, hi = points[down, :2].min(0), points[down, :2].max(0)
    scale = min(0.8 * width / max(hi[0] - lo[0], 1e-9), 0.6 * height / max(hi[1] - lo[1], 1e-9))
    mid = (lo + hi) / 2
    out, stroke, times, t_prev = [], [], [], points[0, 2]
    for x, y, t, pen in points.tolist():
        if pen > 0.5:
            stroke.append((round((x - mid[0]) * scale), round((y - mid[1]) * scale)))
            times.append(max(t - t_prev, 0.0))
        elif stroke:
            out.append((stroke, times))
            stroke, times = [], []
        t_prev = t
    if stroke:
        out.append((stroke, times))
    return out


def test_page_reads_strokes_drawn_on_the_pad(served, handwriting, tmp_path):  # noqa: F811 (the imported fixtures)
    """The driver writes a held-out UNIPEN writer's word on the pad at the ink's own pace (pointer events, as a
    mouse); the page sends the points to /pen as it writes, and the line the pen-up endpoint closes is what the
    handwriting model reads in exactly the points the page sent."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    from tools import unipen

    held = unipen.split_writers(0)
    points, label, _ = unipen.sample("7", int(unipen.indices("7", held, train=False)[7]))  # "34"
    driver = _chromium(tmp_path)
    try:
        driver.get(f"http://127.0.0.1:{served.port}/?token={TOKEN}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not driver.find_element(By.ID, "pen-status").text.startswith("idle"):
            time.sleep(0.1)
        pad = driver.find_element(By.ID, "pad")
        mouse = PointerInput("mouse", "pen")
        actions = ActionBuilder(driver, mouse=mouse)
        for stroke, gaps in _strokes(points, pad.size["width"], pad.size["height"]):
            (x, y), rest = stroke[0], stroke[1:]
            mouse.create_pointer_move(duration=round(1000 * gaps[0]), x=x, y=y, origin=pad)
            mouse.create_pointer_down(button=0)
            for (x, y), dt in zip(rest, gaps[1:]):
                mouse.create_pointer_move(duration=max(1, round(1000 * dt)), x=x, y=y, origin=pad)
            mouse.create_pointer_up(button=0)
        actions.perform()
        deadline, texts = time.monotonic() + 20, []
        while time.monotonic() < deadline and not texts:  # the pen is up: the page lets ink time pass
            texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#pen-finals li")]
            time.sleep(0.2)
        state = driver.find_element(By.ID, "pen-status").text
        sent = driver.execute_script("return window.penSent")
        downs = [p["t"] for p in sent if p["pen"] == "down"]
        ups = [round(p["t"] - downs[-1], 2) for p in sent if p["pen"] == "up" and downs and p["t"] >= downs[-1]]
        assert texts, (f"nothing read on the page (status: {state}; partial: {driver.find_element(By.ID, 'pen-partial').text!r}; "
                       f"{len(sent)} points sent, pen-up points after the last down at +{ups} s)")
        time.sleep(3.5)  # the page's pen-up points stop 3 s after the lift: everything it sent is answered
        texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#pen-finals li")]
        sent = driver.execute_script("return window.penSent")
        assert len(sent) > 20 and sent[0]["pen"] == "down" and {p["pen"] for p in sent} == {"down", "up"}
        ink = np.array([[p["x"], p["y"], p["t"], p["pen"] == "down"] for p in sent], dtype=np.float64)
        read = [e.text for e in transcribe_array(handwriting, ink) if e.type == "final" and e.text]
        assert texts == read, (texts, read, label)
        print(f"the page read {texts!r} in {sent[-1]['t']:.2f} s of the driver's {label!r}")
        driver.find_element(By.ID, "pen-done").click()  # eof: the last result, a normal close
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and driver.find_element(By.ID, "pen-status").text != "idle":
            time.sleep(0.25)
        assert driver.find_element(By.ID, "pen-status").text == "idle"
    finally:
        driver.quit()
