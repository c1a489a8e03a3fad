"""The page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

It opens the page served by ``python -m anybind.serve`` on the small index, types a text query and sees results
of several modalities, uploads a WAV and sees image hits, clicks a hit to search with it, checks the layout at
phone width, and saves screenshots (into the test's folder; also to ``$ANYBIND_SCREENSHOT`` when set, which is how
``docs/serve-screenshot.png`` is made). Skips, saying why, when the browser, its driver or selenium is missing.
Nothing is downloaded: Selenium is given both binaries and told to stay offline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install 'anybind[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


CHROMIUM = _binary("chromium", "chromium-browser")
CHROMEDRIVER = _binary("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=(
    f"no headless browser: chromium {'found' if CHROMIUM else 'missing'}, chromedriver "
    f"{'found' if CHROMEDRIVER else 'missing'} (Debian: apt-get install chromium chromium-driver; .ci/run does it)"))


@pytest.fixture(scope="module")
def browser():
    old = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
                "--disable-extensions", "--no-first-run", "--hide-scrollbars", "--mute-audio"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is a missing browser
        pytest.skip(f"headless chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        if old is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old


def wait(driver, cond, timeout: float = 60, what: str = "the page"):
    return WebDriverWait(driver, timeout).until(cond, message=f"timed out waiting for {what}; page error: "
                                                              f"{driver.find_element(By.ID, 'error').text!r}")


def search_done(driver, action, timeout: float = 60):
    """Run ``action`` (which starts a search) and wait until the page has drawn its results."""
    driver.execute_script("document.body.removeAttribute('data-state')")
    action()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"),
         timeout, "the search")
    state = driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    assert state == "done", driver.find_element(By.ID, "error").text


def groups(driver) -> dict[str, list]:
    return {s.get_attribute("data-modality"): s.find_elements(By.CSS_SELECTOR, ".hit")
            for s in driver.find_elements(By.CSS_SELECTOR, "section.group")}


def test_page_in_a_real_browser(browser, live_server, collection, tmp_path):
    d = browser
    d.get(live_server.url + "/")
    n_mods = len(collection.index.parts)
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filters input")) == n_mods, what="the modality filter")
    assert "items" in d.find_element(By.ID, "summary").text

    k = d.find_element(By.ID, "k")
    k.clear()
    k.send_keys(str(len(collection.index)))

    # 1. a text query: results of several modalities, each with a score
    box = d.find_element(By.ID, "q")
    box.send_keys("a red thing")
    search_done(d, lambda: box.send_keys(Keys.ENTER))
    g = groups(d)
    assert len(g) >= 3 and {"image", "audio", "text"} <= set(g), sorted(g)
    first = g["image"][0]
    assert float(first.find_element(By.CSS_SELECTOR, ".score").text) <= 1.0
    wait(d, lambda d: d.execute_script(
        "const i = document.querySelector('section[data-modality=image] img'); return i.complete && i.naturalWidth > 0"),
        what="an image preview to load")
    assert d.find_elements(By.CSS_SELECTOR, "section[data-modality=audio] audio[src]")
    play = d.find_element(By.CSS_SELECTOR, "section[data-modality=video] .play")  # a poster frame with a play button
    play.click()
    assert d.find_elements(By.CSS_SELECTOR, "section[data-modality=video] video[src][controls]")
    assert d.find_elements(By.CSS_SELECTOR, "section[data-modality=text] blockquote")

    # 2. upload a WAV with only images shown: image hits
    d.find_element(By.ID, "clear").click()
    for cb in d.find_elements(By.CSS_SELECTOR, "#filters input"):
        if cb.get_attribute("value") != "image" and cb.is_selected():
            cb.click()
    wav = collection.root / "wav" / "blue-1.wav"
    search_done(d, lambda: d.find_element(By.ID, "file").send_keys(str(wav)))
    chips = d.find_elements(By.CSS_SELECTOR, "#queries .chip")
    assert len(chips) == 1 and "blue-1.wav" in chips[0].text
    g = groups(d)
    assert list(g) == ["image"] and len(g["image"]) == len(collection.index.parts["image"])

    # 3. every modality again, then click an image hit: "more like this"
    for cb in d.find_elements(By.CSS_SELECTOR, "#filters input"):
        if not cb.is_selected():
            search_done(d, cb.click)
    target = groups(d)["image"][1]
    item = target.get_attribute("data-item")
    search_done(d, lambda: target.find_element(By.CSS_SELECTOR, ".meta").click())
    chips = d.find_elements(By.CSS_SELECTOR, "#queries .chip")
    assert len(chips) == 1 and chips[0].get_attribute("data-kind") == "id" and item in chips[0].text
    g = groups(d)
    scores = {c.get_attribute("data-item"): c.find_element(By.CSS_SELECTOR, ".score").text for c in g["image"]}
    top = g["image"][0].get_attribute("data-item")
    assert scores[item] == "1.000" and scores[top] == "1.000"  # it finds itself first (or tied with a twin)
    assert len(g) >= 3
    wait(d, lambda d: d.execute_script(
        "return [...document.querySelectorAll('section[data-modality=image] img, section[data-modality=points] img')]"
        ".slice(0, 3).every(i => i.complete && i.naturalWidth > 0)"), what="the previews to load")

    d.set_window_size(1280, 1800)
    d.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "serve.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ANYBIND_SCREENSHOT"):
        dest = Path(os.environ["ANYBIND_SCREENSHOT"])
        dest = dest if dest.is_absolute() else REPO / dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)

    # 4. a phone-sized screen: no sideways scrolling, two columns of results
    d.set_window_size(390, 844)
    wait(d, lambda d: d.execute_script("return window.innerWidth") < 500, what="the narrow window")
    d.save_screenshot(str(tmp_path / "serve-phone.png"))
    overflow = d.execute_script(
        "const w = window.innerWidth; return [document.documentElement.scrollWidth, w, [...document.querySelectorAll('*')]"
        ".filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + "
        "e.className + ' ' + Math.round(e.getBoundingClientRect().right))]")
    assert overflow[0] <= overflow[1] + 1, overflow
    cols = d.execute_script("return getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length")
    assert cols == 2
