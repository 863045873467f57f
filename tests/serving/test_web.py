"""The web page, end to end in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium)
against the real service on a loopback port; plus the load-test command against it."""

import os
import shutil
import time

import numpy as np
import pytest

from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.data.split import CLASSES
from fashion_ensemble.serving.serve import ServeConfig, create_app
from fashion_ensemble.tools import loadtest
from helpers import garment_photo, png_bytes, serving

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(tiny_run, real_data):
    app = create_app(tiny_run, ServeConfig(), examples=lambda: load_raw(real_data, verify_checksums=False)["test"])
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("FE_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (FE_REQUIRE_BROWSER is set); make test installs "
                        "Debian's chromium and chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def no_script_errors(request):
    """Every page test ends with an empty console: a JavaScript error fails the test that caused it."""
    yield
    if "browser" in request.fixturenames:
        driver = request.getfixturevalue("browser")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "the server responded with a status of 415" not in e["message"]  # the bad-file test's own 415
                  and "cdn.redoc.ly/redoc/logo-mini.svg" not in e["message"]]  # ReDoc's "powered by" logo, offline
        assert not errors, errors


def wait_for(driver, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.05)
    error = driver.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"timed out waiting for: {condition}; the page's error line: {error!r}")


def test_choose_a_file_and_see_what_the_model_saw_and_both_members(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    photo = tmp_path / "shirt.jpg"
    photo.write_bytes(png_bytes(garment_photo(), format="JPEG"))
    browser.get(server + "/")
    wait_for(browser, "return document.getElementById('classes').textContent.includes('It knows 10 classes')")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait_for(browser, "return !document.getElementById('result').hidden")

    label = browser.find_element(By.ID, "label").text
    assert label in CLASSES
    rows = browser.find_elements(By.CSS_SELECTOR, "#table tr")
    assert len(rows) == 10 and rows[0].find_element(By.TAG_NAME, "td").text == label  # sorted by the ensemble
    assert len(rows[0].find_elements(By.CSS_SELECTOR, "td.ann")) == 1
    assert len(rows[0].find_elements(By.CSS_SELECTOR, "td.cnn")) == 1
    vote = browser.find_element(By.ID, "vote").text
    assert "ANN says" in vote and "CNN says" in vote and ("agree" in vote)
    # The 28×28 canvas shows the preprocessed input: a bright garment on black, 28 wide and 14 high.
    pixels = browser.execute_script(
        "const c = document.getElementById('input').getContext('2d');"
        "return Array.from(c.getImageData(0, 0, 28, 28).data).filter((_, i) => i % 4 === 0);")
    x = np.array(pixels).reshape(28, 28)
    rows_lit = np.nonzero(x.max(axis=1) > 128)[0]
    assert x[0].max() == 0 and x[:, 0].max() > 128 and 13 <= len(rows_lit) <= 15


def test_an_image_unlike_any_garment_is_shown_as_a_guess(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    noise = tmp_path / "noise.png"
    noise.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)))
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(noise))
    wait_for(browser, "return !document.getElementById('result').hidden")
    doubt = browser.find_element(By.ID, "doubt")
    assert doubt.is_displayed() and doubt.text.startswith("I don't know")
    assert browser.find_element(By.ID, "verdict").text.startswith("Best guess:")


@pytest.mark.slow
def test_random_test_image_shows_its_true_label(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    wait_for(browser, "return document.getElementById('classes').textContent.length > 0")
    browser.find_element(By.ID, "random").click()
    truth = wait_for(browser, "const t = document.getElementById('truth'); return t && t.textContent")
    assert truth in CLASSES
    assert browser.find_element(By.ID, "original").get_attribute("src").startswith("blob:")


def test_a_bad_file_shows_the_reason(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    message = wait_for(browser, "return document.getElementById('error').textContent")
    assert "notes.png" in message and "not an image" in message


def test_load_test_against_the_running_service(server, real_data):
    images, labels = load_raw(real_data, verify_checksums=False)["test"]
    result = loadtest.load_test(server, images[:50], labels[:50], requests=60, concurrency=4, warmup=4)
    assert result["requests"] == 60 and result["errors"] == 0, result["first_errors"]
    assert result["p50_ms"] <= result["p99_ms"] and result["requests_per_s"] > 0
    assert 0.0 <= result["accuracy"] <= 1.0


def test_dropping_an_image_classifies_it(browser, server):
    browser.get(server + "/")
    wait_for(browser, "return document.getElementById('classes').textContent.length > 0")
    browser.execute_script("""
        const canvas = document.createElement('canvas'); canvas.width = 60; canvas.height = 40;
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, 60, 40); ctx.fillStyle = '#333'; ctx.fillRect(10, 5, 40, 30);
        canvas.toBlob((blob) => {
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
        });""")
    label = wait_for(browser, "const l = document.getElementById('label'); return !document.getElementById('result')"
                              ".hidden && l && l.textContent")
    assert label in CLASSES


# -- class names are text, never markup -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_server(hostile_run):
    from fashion_ensemble.data import split as data
    from fashion_ensemble.model.runs import RunFolder

    def examples():
        return data.part(RunFolder(hostile_run).config().data, "test", progress=False)

    with serving(create_app(hostile_run, ServeConfig(), examples=examples)) as url:
        yield url


@pytest.mark.slow
def test_hostile_class_names_show_as_text_and_run_no_script(browser, hostile_server):
    from selenium.webdriver.common.by import By

    from conftest import HOSTILE_CLASSES

    browser.get(hostile_server + "/")
    wait_for(browser, "return document.getElementById('classes').textContent.includes('It knows 3 classes')")
    for _ in range(4):  # random test images: the verdict, the true label and every table row name a class
        browser.execute_script("document.getElementById('result').hidden = true")  # shown again once answered
        browser.find_element(By.ID, "random").click()
        wait_for(browser, "const t = document.getElementById('truth'); return !document.getElementById('result')"
                          ".hidden && t && t.textContent")
        assert browser.execute_script("return window.pwned") is None  # the onerror handler never ran
        assert browser.find_element(By.ID, "label").text in HOSTILE_CLASSES
        assert browser.find_element(By.ID, "truth").text in HOSTILE_CLASSES
        cells = [r.find_element(By.TAG_NAME, "td").text for r in browser.find_elements(By.CSS_SELECTOR, "#table tr")]
        assert sorted(cells) == sorted(HOSTILE_CLASSES)
        assert not browser.find_elements(By.CSS_SELECTOR, "#result img[src='x'], #table img")
    assert "<img src=x onerror=window.pwned=1>" in browser.find_element(By.ID, "classes").text


@pytest.mark.slow
@pytest.mark.parametrize("page", ["/redoc", "/docs"])
def test_the_api_docs_show_hostile_class_names_as_text(browser, hostile_server, page):
    browser.get(hostile_server + page)
    wait_for(browser, "return document.body.innerText.includes('Classifies images into 3 classes')", timeout=60)
    assert browser.execute_script("return window.pwned") is None
    assert "<img src=x onerror=window.pwned=1>" in browser.execute_script("return document.body.innerText")
