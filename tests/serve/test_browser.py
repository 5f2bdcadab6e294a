"""The web page in a real headless browser: Debian's chromium driven by Selenium through Debian's
chromedriver. Upload a test image, and the label shown must be the model's answer."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[dev])")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    from deepautodnn.serve.app import create_app

    yield from serve_in_thread(create_app(tiny_run[0]))


@pytest.fixture(scope="module")
def indexed_server(search_catalogue):
    """The pretrained model with an index of 60 catalogue photos."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install -e .[search])")
    from deepautodnn.serve.app import create_app

    yield from serve_in_thread(create_app("fashion-mnist", index=search_catalogue[2]))


def serve_in_thread(app):
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    import urllib.request

    for _ in range(200):  # until the model is loaded
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_shows_the_models_label(server, browser, tiny_run, data_dir, tmp_path):
    from selenium.webdriver.common.by import By

    from deepautodnn import UnknownDetector, load_fashion_mnist, load_model, predict_files

    images, _ = load_fashion_mnist("test", data_dir)
    model, detector = load_model(tiny_run[0]), UnknownDetector.load(tiny_run[0])
    # Upload a test garment as a shop would: a large dark-on-white RGB JPEG. The briefly trained
    # model flags a few of them unknown; take the first it accepts, so the page must show its label.
    for i, image in enumerate(images[:50]):
        path = tmp_path / f"garment{i}.jpg"
        Image.fromarray(255 - image).resize((280, 280)).convert("RGB").save(path, quality=95)
        (prediction,) = predict_files(model, [path], detector=detector).predictions
        if not prediction["unknown"]:
            break
    else:
        pytest.fail("the tiny model flags all of the first 50 test garments unknown")
    expected = prediction["label"]

    upload(browser, server, path)
    assert browser.find_element(By.ID, "result-label").text == expected
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars tr")) == 3
    assert browser.find_element(By.ID, "input").get_attribute("src").startswith("data:image/png;base64,")
    assert "unknown score" in browser.find_element(By.ID, "unknown").text.lower()


def upload(browser, server: str, path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: "Classes:" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, 20).until(ec.visibility_of_element_located((By.ID, "result-label")))


def test_a_foreign_photo_leads_with_the_unknown_verdict(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    upload(browser, server, path)
    assert browser.find_element(By.ID, "result-label").text == "This does not look like a garment"
    verdict = browser.find_element(By.ID, "unknown")
    assert "unknown input" in verdict.text.lower() and "warn" in verdict.get_attribute("class")
    assert browser.find_element(By.ID, "bars").get_attribute("class") == "muted"


def test_similar_items_show_as_thumbnails_under_the_prediction(indexed_server, browser, search_catalogue):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = search_catalogue[0] / "012.jpg"
    upload(browser, indexed_server, photo)
    WebDriverWait(browser, 20).until(ec.visibility_of_element_located((By.ID, "similar")))
    figures = browser.find_elements(By.CSS_SELECTOR, "#neighbours figure")
    assert len(figures) == 8, "k=8 of the 60 catalogue items"
    first = figures[0].find_element(By.TAG_NAME, "img")
    assert first.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert first.get_attribute("title") == str(photo), "the photo itself is its own nearest item"
    assert browser.execute_script("return arguments[0].naturalWidth", first) > 0, "the thumbnail decoded"
    label = browser.find_element(By.ID, "result-label").text
    assert figures[0].find_element(By.TAG_NAME, "figcaption").text.startswith(label)
    assert browser.find_element(By.ID, "similar-note").text == ""


def test_a_foreign_photo_shows_no_similar_items(indexed_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
    upload(browser, indexed_server, path)
    WebDriverWait(browser, 20).until(ec.visibility_of_element_located((By.ID, "similar")))
    assert "No similar items" in browser.find_element(By.ID, "similar-note").text
    assert browser.find_elements(By.CSS_SELECTOR, "#neighbours figure") == []
