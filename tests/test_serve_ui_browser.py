"""The operator page in a real browser: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (never a downloaded driver). A deletion submitted through the API shows on
/ui as applied with its verification, after logging in with the form (HttpOnly session cookie);
a screenshot of the page is written to the test's output folder (``tmp_path``; also copied to
``$UNLEARNREC_TEST_ARTIFACTS`` when set).

Skips locally when chromium, chromedriver or selenium is missing; under CI (``CI=true``) it must
run (``.ci/run`` installs ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.serve_helpers import tiny_artifacts
from tests.test_serve_crash import Server, call

httpx = pytest.importorskip("httpx")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,900",  # a laptop screen
)


def _need_browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the browser test: " + msg)
        pytest.skip(msg)


def _driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=ChromeService(executable_path=str(CHROMEDRIVER)), options=opts)


def test_a_deletion_shows_on_the_operator_page(tmp_path):
    _need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from unlearnrec.model import TrainedModel
    from unlearnrec.serve.auth import create_key
    from unlearnrec.serve.store import Store

    model_dir, enc_dir = tiny_artifacts()
    base = TrainedModel.load(model_dir)
    state = tmp_path / "state"
    state.mkdir()
    db = f"sqlite:///{state / 'service.sqlite'}"
    store = Store.open(db)
    admin = create_key(store, "admin")[1]
    operator = create_key(store, "operator")[1]
    store.close()
    server = Server(model_dir, enc_dir, state, db, tmp_path, tmp_path / "server.log")
    server.start()
    driver = None
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            # the edges of the busiest user (membership is judged from 10 edges on)
            u = int(base.train.user_degrees().argmax())
            items = base.train.items[base.train.users == u][:12]
            body = {"edges": [[u, int(i)] for i in items]}
            r = c.post("/v1/deletions", json=body, headers={"Authorization": f"Bearer {operator}"})
            assert r.status_code == 202, r.text
            rid = r.json()["id"]
            deadline = time.monotonic() + 60
            while True:
                v = call(c, "GET", f"/v1/deletions/{rid}", headers={"X-API-Key": operator}).json()
                if v["status"] == "applied" and v.get("verification"):
                    break
                assert time.monotonic() < deadline, v
                time.sleep(0.2)
            # and a compaction, so that the page shows one with the lineage it made
            adm = {"Authorization": f"Bearer {admin}"}
            cid = c.post("/v1/admin/compactions", headers=adm).json()["id"]
            while call(c, "GET", f"/v1/admin/compactions/{cid}", headers=adm).json()["status"] != "purged":
                assert time.monotonic() < deadline + 120
                time.sleep(0.2)
        driver = _driver(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 30)
        driver.get(server.url + "/ui")
        wait.until(ec.presence_of_element_located((By.ID, "key")))
        assert driver.current_url.endswith("/ui/login")
        # a wrong key is refused on the page
        driver.find_element(By.ID, "key").send_keys(operator)
        driver.find_element(By.ID, "login").click()
        err = wait.until(ec.presence_of_element_located((By.ID, "login-error")))
        assert "needs 'admin'" in err.text
        driver.find_element(By.ID, "key").send_keys(admin)
        driver.find_element(By.ID, "login").click()
        row = wait.until(ec.presence_of_element_located((By.ID, f"request-{rid}")))
        text = row.text
        assert "applied" in text and "edges_absent" in text and "membership" in text, text
        # the page shows the request's verification as the API reports it, check by check
        verdict = row.find_element(By.CSS_SELECTOR, "td.verification").text
        word = {True: "pass", False: "FAIL", None: "n/a"}
        assert verdict.startswith(word[v["verification"]["passed"]]), verdict
        for chk in v["verification"]["checks"]:
            assert f"{word[chk['passed']]} {chk['name']}: {chk['detail']}" in verdict, verdict
        assert driver.find_element(By.ID, "queue-depth").text == "0"
        assert "intact" in driver.find_element(By.ID, "ledger-check").text
        comp = driver.find_element(By.ID, "compactions").text
        assert "purged" in comp and "manual" in comp, comp
        assert "compacted" in driver.find_element(By.ID, "versions").text
        cookies = {ck["name"]: ck for ck in driver.get_cookies()}
        assert cookies["ulr_ui"]["httpOnly"] and admin not in cookies["ulr_ui"]["value"]
        shot = tmp_path / "operator-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        out = os.environ.get("UNLEARNREC_TEST_ARTIFACTS")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(out) / shot.name)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
