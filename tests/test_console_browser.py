"""The console in headless Chromium driven by Selenium, with every host but 127.0.0.1 unreachable:
confirm one prediction, correct another, roll back a snapshot, delete a source, checking the store
after each action; /docs renders from the installed Swagger UI. Skips without chromium,
chromedriver or selenium."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from test_serve import ADMIN, COLORS, files, png

selenium = pytest.importorskip("selenium", reason="selenium is in the dev extra")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh --dev)")
TOKEN = ADMIN["Authorization"].split()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """genba's app on uvicorn in a thread, with one memory: support, a snapshot, then logged predictions."""
    from genba.serve import create_app

    app = create_app(tmp_path / "s.sqlite", TOKEN, encoders=("tiny",))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as c:
        memory_id = c.post("/memories", json={"classnames": list(COLORS), "encoder": "tiny", "name": "line 3",
                                              "hyperparameters": {"capacity": 4}}).json()["id"]
        items = [(f"{n}{k}.png", png(rgb, seed=k), "image/png") for k in range(2) for n, rgb in COLORS.items()]
        assert c.post(f"/memories/{memory_id}/support", files=files(items),
                      data={"labels": [n for _ in range(2) for n in COLORS]}).status_code == 200
        snapshot_id = c.post(f"/memories/{memory_id}/snapshot", json={"label": "support only"}).json()["snapshot_id"]
        queries = [(f"q{i}.png", png(list(COLORS.values())[i % 3], seed=20 + i), "image/png") for i in range(6)]
        served = c.post(f"/memories/{memory_id}/predict", files=files(queries),
                        data={"update": "true", "source_ids": [f"cam-{i}" for i in range(6)]}).json()["predictions"]
    yield base, app.state.service.store, memory_id, snapshot_id, served
    server.should_exit = True
    thread.join(timeout=10)
    app.state.service.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,2000",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}",
                 # nothing but loopback: names do not resolve and every other host goes to a dead proxy
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=DRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def wait(predicate, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def loaded_after(driver, stamp):
    return int(driver.execute_script("return document.body.dataset.loaded || 0")) > stamp


def click(driver, element_id):
    stamp = int(driver.execute_script("return document.body.dataset.loaded || 0"))
    driver.find_element("id", element_id).click()
    return stamp


def label_of(store, memory_id, pid):
    return store._conn().execute("SELECT label, label_source FROM predictions WHERE memory_id = ? AND id = ?",
                                 (memory_id, pid)).fetchone()


def test_console_actions_in_chromium(served, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    base, store, memory_id, snapshot_id, predictions = served
    browser.get(f"{base}/console#token={TOKEN}&memory={memory_id}")
    wait(lambda: browser.find_elements("id", f"memory-{memory_id}"), what="the console")
    text = browser.find_element("id", f"memory-{memory_id}").text
    assert "line 3" in text and "review queue" in text and "predictions per class" in browser.page_source
    support = sum(store.fill(memory_id)["static"])

    # confirm one prediction (double-clicked: one support row, one run)
    first = predictions[0]["prediction_id"]
    stamp = int(browser.execute_script("return document.body.dataset.loaded || 0"))
    ActionChains(browser).double_click(browser.find_element("id", f"confirm-{first}")).perform()
    wait(lambda: label_of(store, memory_id, first)[0] is not None, what="the confirmation")
    wait(lambda: loaded_after(browser, stamp), what="reload")
    assert label_of(store, memory_id, first) == (predictions[0]["index"], f"label:{first}")
    assert sum(store.fill(memory_id)["static"]) == support + 1

    # correct another one to a different class
    second = predictions[1]["prediction_id"]
    other = [n for n in COLORS if n != predictions[1]["class"]][0]
    Select(browser.find_element("id", f"pick-{second}")).select_by_value(other)
    stamp = click(browser, f"correct-{second}")
    wait(lambda: label_of(store, memory_id, second)[0] is not None, what="the correction")
    wait(lambda: loaded_after(browser, stamp), what="reload")
    assert label_of(store, memory_id, second)[0] == list(COLORS).index(other)
    assert sum(store.fill(memory_id)["static"]) == support + 2 and "dynamic" in store.fill(memory_id)

    # roll back to the snapshot taken before the predictions (confirm dialog accepted)
    version = store.version(memory_id)
    stamp = click(browser, f"rollback-{snapshot_id}")
    browser.switch_to.alert.accept()
    wait(lambda: store.version(memory_id) > version, what="the rollback")
    wait(lambda: loaded_after(browser, stamp), what="reload")
    assert "dynamic" not in store.fill(memory_id) and sum(store.fill(memory_id)["static"]) == support

    # delete a source: preview, then confirm
    victim = predictions[2]["source_id"]
    assert store._conn().execute("SELECT count(*) FROM predictions WHERE source_id = ?", (victim,)).fetchone()[0] == 1
    browser.find_element("id", "delete-source-id").send_keys(victim)
    browser.find_element("id", "delete-preview-button").click()
    wait(lambda: browser.find_elements("id", "delete-confirm"), what="the preview")
    assert "1 logged predictions" in browser.find_element("id", "delete-preview").text
    stamp = click(browser, "delete-confirm")
    wait(lambda: store._conn().execute("SELECT count(*) FROM predictions WHERE source_id = ?", (victim,)).fetchone()[0] == 0,
         what="the deletion")
    wait(lambda: loaded_after(browser, stamp), what="reload")
    assert victim not in store.entries(memory_id).sources and store.check() == []
    actions = [r[0] for r in store._conn().execute("SELECT action FROM audit WHERE memory_id = ? ORDER BY seq", (memory_id,))]
    assert actions[-4:] == ["label", "label", "rollback", "delete-source"]

    # nothing was fetched from anywhere but this server
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(base) for u in urls)

    # /docs: Swagger UI from the installed assets, offline
    browser.get(f"{base}/docs")
    wait(lambda: browser.find_elements("css selector", ".opblock"), what="Swagger UI's operations")
    assert "genba" in browser.find_element("css selector", ".swagger-ui .info").text
    assert "/memories/{memory_id}/predictions/{prediction_id}/label" in browser.find_element("id", "swagger-ui").text
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(base) for u in urls)
