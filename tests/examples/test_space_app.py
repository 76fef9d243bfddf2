"""The Gradio demo of examples/space: its inference function called directly, and the served app in a real browser.

The model is a tiny random MGA-CLAP written by `save_for_hub` to a temporary folder (remote code and the
`zero-shot-audio-event-detection` pipeline included), so nothing touches the network. The browser test starts
`app.py` in a subprocess on 127.0.0.1 and drives Debian's `chromium` through `chromedriver` (Selenium, headless); it
skips, saying why, only when those are not installed.
"""

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from transformers import AutoTokenizer, pipeline

from transformers_mgaclap import (
    MGAClapFeatureExtractor,
    MGAClapModel,
    MGAClapProcessor,
    detect_sound_events,
    embed_text,
)
from transformers_mgaclap.endpoint_handler import MGAClapEndpointHandler
from transformers_mgaclap.hub import save_for_hub
from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity

from conftest import EXAMPLES, tiny_model

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install gradio)")

APP_PATH = EXAMPLES / "space" / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SERVER_START_TIMEOUT_S = 90.0  # gradio + torch imports on a busy 2-core machine
BROWSER_TIMEOUT_S = 45.0


def load_app():
    """examples/space/app.py as a module: the Space is a deployable app, not package code, and this is its test."""
    spec = importlib.util.spec_from_file_location("mgaclap_space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_text_model_dir):
    """A tiny model saved as a Hub repository would hold it (config with custom_pipelines, remote code)."""
    folder = tmp_path_factory.mktemp("space") / "mgaclap_tiny"
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    save_for_hub(tiny_model(), processor, folder, repo_id="tester/mgaclap-tiny")
    return folder


@pytest.fixture(scope="module")
def demo_model(app, model_folder):
    return app.MGAClapDemo(str(model_folder))


def example_audio(app) -> tuple[int, np.ndarray]:
    """The committed example as Gradio hands it to the function: (rate, int16 samples)."""
    soundfile = pytest.importorskip("soundfile")
    samples, rate = soundfile.read(str(app.EXAMPLE_AUDIO), dtype="int16")
    return rate, samples


# -- the inference function ----------------------------------------------------------------------------------------


def test_analyze_outputs(app, demo_model):
    rate, samples = example_audio(app)
    queries = ["rumble", "beep", "wind", "dog barking"]
    # The median frame score as threshold: some frames are active and some are not, whatever the random weights.
    outputs = demo_model.detector.forward(
        demo_model.detector.preprocess(
            {"array": samples / 32768.0, "sampling_rate": rate}, candidate_labels=queries
        ),
        progress=False,
    )
    threshold = float(outputs["frame_similarity"].median())
    scores, figure, rows = demo_model.analyze(
        (rate, samples), " rumble, beep,, wind , dog barking, beep ", threshold
    )

    assert list(scores) == queries  # stripped, empty items and the repeated "beep" dropped, order kept
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)

    duration = len(samples) / rate
    assert rows, "the median threshold must leave some events"
    for label, onset, offset, score in rows:
        assert label in queries
        assert 0.0 <= onset < offset <= duration + 1e-6
        assert score >= threshold - 1e-6
    assert [row[1] for row in rows] == sorted(row[1] for row in rows)

    (axes,) = figure.axes
    curves = [line for line in axes.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in curves] == queries  # one curve per query
    for line in curves:
        xs = line.get_xdata()
        assert xs[0] == 0.0 and xs[-1] == pytest.approx(duration)  # the curve spans the recording
    assert len(axes.patches) == len(rows)  # one shaded span per event
    assert axes.get_xlim() == pytest.approx((0.0, duration))


def test_analyze_a_phrase_stereo_float_audio_at_another_rate(app, demo_model):
    rate = 22050
    t = np.arange(int(3.5 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 880 * t)], axis=1)
    phrase = "a high beep sounds while the wind whooshes"
    scores, figure, rows = demo_model.analyze((rate, stereo.astype(np.float32)), phrase, -1.0)
    assert scores == {phrase: pytest.approx(1.0)}
    # Every valid frame is above -1: one event over the whole 3.5 s, clipped to the end of the clip.
    assert [(row[0], row[1]) for row in rows] == [(phrase, 0.0)]
    assert rows[0][2] == pytest.approx(3.5, abs=1e-6)
    assert [line.get_label() for line in figure.axes[0].get_lines()] == [phrase, "_threshold"]


@pytest.mark.parametrize(
    "audio, text, message",
    [
        (None, "dog", "Upload or record"),
        ((32000, np.zeros(0, np.float32)), "dog", "empty"),
        ((32000, np.full(3200, np.nan, np.float32)), "dog", "NaN"),
        ((0, np.zeros(3200, np.float32)), "dog", "sampling rate"),
        ((1000, np.zeros(121 * 1000, np.float32)), "dog", "at most 120 s"),
        ((32000, np.zeros(3200, np.float32)), "", "at least one label"),
        ((32000, np.zeros(3200, np.float32)), " , ,", "at least one label"),
        ((32000, np.zeros(3200, np.float32)), None, "at least one label"),
    ],
)
def test_bad_input_raises_gradio_error(demo_model, audio, text, message):
    with pytest.raises(gr.Error, match=message):
        demo_model.analyze(audio, text, 0.5)


def test_every_door_finds_the_event_at_30_seconds(demo_model, model_folder):
    """A 40 s recording, silent but for a noise burst at 30-33 s: the endpoint handler, the pipeline,
    `detect_sound_events` and the demo analyse it whole (not only the first 10 s) and give the same events."""
    rate = 32000
    recording = np.zeros(40 * rate, np.float32)
    recording[30 * rate : 33 * rate] = 0.3 * np.random.default_rng(0).standard_normal(3 * rate)
    model = MGAClapModel.from_pretrained(model_folder).eval()
    processor = MGAClapProcessor.from_pretrained(model_folder)
    text = embed_text(model, processor, ["beep"]).text_embeds
    curve = compute_long_audio_frame_similarity(
        model, recording, None, processor.feature_extractor, text_embeds=text
    )
    centres = (curve.frame_boundaries[:-1] + curve.frame_boundaries[1:]) / 2
    burst = (centres >= 29.5) & (centres < 33.5)
    inside, outside = (
        float(curve.frame_similarity[burst, 0].max()),
        float(curve.frame_similarity[~burst, 0].max()),
    )
    assert inside > outside  # the random tiny model tells this burst from silence for "beep"
    threshold = (inside + outside) / 2

    expected = detect_sound_events(model, recording, ["beep"], processor, threshold=threshold, progress=False)
    assert len(expected) == 1  # the burst, found 30 s into the recording
    assert 29.5 <= expected[0]["onset"] <= 30.5 and expected[0]["offset"] <= 33.5
    detector = pipeline("zero-shot-audio-event-detection", model=str(model_folder), trust_remote_code=True)
    assert detector(recording, candidate_labels=["beep"], threshold=threshold) == expected
    buffer = io.BytesIO()
    soundfile.write(buffer, recording, rate, format="WAV", subtype="FLOAT")
    request = {"task": "event-detection", "candidate_labels": ["beep"], "threshold": threshold}
    handler = MGAClapEndpointHandler(str(model_folder))
    assert handler({"inputs": buffer.getvalue(), "parameters": request}) == expected
    _, _, rows = demo_model.analyze((rate, recording), "beep", threshold)
    assert rows == [
        [e["label"], round(e["onset"], 3), round(e["offset"], 3), round(e["score"], 4)] for e in expected
    ]


def test_example_audio_is_the_documented_soundscape(app, tmp_path):
    clip = app.write_example_audio(tmp_path / "example.wav")
    assert (tmp_path / "example.wav").read_bytes() == app.EXAMPLE_AUDIO.read_bytes()
    assert clip["caption"] == app.EXAMPLE_CAPTION
    assert set(clip["labels"]) <= {label.strip() for label in app.EXAMPLE_LABELS.split(",")}


def test_model_name_resolution(app, monkeypatch):
    monkeypatch.delenv(app.MODEL_ENV_VAR, raising=False)
    assert app.resolve_model_name() == app.DEFAULT_MODEL
    monkeypatch.setenv(app.MODEL_ENV_VAR, "me/my-mgaclap")
    assert app.resolve_model_name() == "me/my-mgaclap"
    assert app.resolve_model_name("local/folder") == "local/folder"


def test_build_demo_wires_the_components(app, demo_model):
    demo = app.build_demo(demo_model)
    config = demo.get_config_file()
    elem_ids = {component.get("props", {}).get("elem_id") for component in config["components"]}
    assert {"audio-input", "labels-input", "threshold-input", "submit-button", "scores-output"} <= elem_ids
    assert {"similarity-plot", "events-output", "examples"} <= elem_ids
    assert {
        "search-tab",
        "search-input",
        "top-k",
        "search-button",
        "moments-output",
        "search-plot",
    } <= elem_ids


def test_search_tab_finds_moments_in_the_bundled_clips(app, demo_model):
    pytest.importorskip("datasets")
    rows, figure = demo_model.search(app.SEARCH_EXAMPLE, 3)
    assert 1 <= len(rows) <= 3 and {row[0] for row in rows} == {app.EXAMPLE_AUDIO.name}
    assert all(0 <= row[1] < row[2] <= 8.0 + 1e-6 for row in rows)  # the example clip lasts 8 s
    assert [row[3] for row in rows] == sorted((row[3] for row in rows), reverse=True)
    assert app.EXAMPLE_AUDIO.name in figure.axes[0].get_title()
    with pytest.raises(gr.Error, match="Type what to search for"):
        demo_model.search("  ", 3)


# -- the served app in a headless browser --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"app.py did not serve {url} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def served_app(app, model_folder, tmp_path):
    """`python app.py --model <tiny folder>` on 127.0.0.1, offline, no analytics, no share link."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp_path / "gradio_tmp"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        MPLCONFIGDIR=str(tmp_path / "mpl"),
        TOKENIZERS_PARALLELISM="false",
        no_proxy="127.0.0.1,localhost",
    )
    env.pop(app.MODEL_ENV_VAR, None)  # the --model argument is what is served
    log = tmp_path / "app.log"
    command = [sys.executable, str(APP_PATH), "--model", str(model_folder), "--host", "127.0.0.1"]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process, log, SERVER_START_TIMEOUT_S)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def headless_chromium():
    """Debian's chromium through its chromedriver; Selenium Manager is never asked to download anything."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-gpu",
        "--window-size=1280,2000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.skipif(
    not (shutil.which("chromium") or os.access(CHROMIUM, os.X_OK)),
    reason="Debian's chromium is not installed (apt-get install chromium chromium-driver)",
)
def test_served_app_runs_the_example_in_a_browser(app, served_app, monkeypatch):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager stays offline
    url, log = served_app
    driver = headless_chromium()
    try:
        # Gradio re-renders outputs: look elements up again on every poll and tolerate replaced nodes.
        wait = WebDriverWait(driver, BROWSER_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))

        def text_of(selector: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, selector).text

        driver.get(url)
        submit = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#submit-button")))
        assert "MGA-CLAP" in driver.title

        # Click the first example (its labels cell), which fills the audio, the labels and the threshold.
        example = wait.until(
            ec.element_to_be_clickable(
                (By.XPATH, f"//*[@id='examples']//*[contains(text(), '{app.EXAMPLE_LABELS}')]")
            )
        )
        example.click()
        labels = "#labels-input textarea, #labels-input input"
        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, labels).get_attribute("value") == app.EXAMPLE_LABELS
        )
        # The example clip is loaded into the player (its file is served by the app).
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-input audio, #audio-input .waveform-container")
        )

        # Lowest threshold: every valid frame is active, so each query gives one event whatever the random weights.
        number = driver.find_element(By.CSS_SELECTOR, "#threshold-input input[type='number']")
        number.clear()
        number.send_keys("-1", Keys.TAB)
        slider = "#threshold-input input[type='range']"
        wait.until(lambda d: float(d.find_element(By.CSS_SELECTOR, slider).get_attribute("value")) == -1.0)

        submit.click()
        plot = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#similarity-plot img")))
        source = plot.get_attribute("src")
        assert source.startswith("data:image/png;base64,") and len(source) > 1000, source[:80]
        assert plot.size["width"] > 100 and plot.size["height"] > 50

        # The label output shows every query with a percentage.
        queries = [label.strip() for label in app.EXAMPLE_LABELS.split(",")]
        wait.until(lambda d: all(query in text_of("#scores-output") for query in queries))
        assert "%" in text_of("#scores-output")
        # The events table: its header and one row per query.
        wait.until(lambda d: all(query in text_of("#events-output") for query in queries))
        assert "onset (s)" in text_of("#events-output") and "offset (s)" in text_of("#events-output")
        errors = driver.find_elements(By.CSS_SELECTOR, ".toast-body.error, .toast-wrap .error")
        assert not errors, [error.text for error in errors]

        # The Search tab: index the bundled clips on the first search, then a table of moments and a plot.
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Search')]").click()
        search_box = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "#search-input textarea, #search-input input"))
        )
        search_box.send_keys(app.SEARCH_EXAMPLE)
        driver.find_element(By.CSS_SELECTOR, "#search-button").click()
        wait.until(lambda d: app.EXAMPLE_AUDIO.name in text_of("#moments-output"))
        assert "onset (s)" in text_of("#moments-output") and "clip score" in text_of("#moments-output")
        best = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#search-plot img")))
        assert best.get_attribute("src").startswith("data:image/png;base64,")
        errors = driver.find_elements(By.CSS_SELECTOR, ".toast-body.error, .toast-wrap .error")
        assert not errors, [error.text for error in errors]
    except Exception:
        print(f"app log:\n{log.read_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        driver.quit()
