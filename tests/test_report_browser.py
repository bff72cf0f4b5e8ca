"""The report in a real browser: headless Chromium loads it with no console errors, sorts the table, and a screenshot
is saved (tests/out/report.png) for a person to look at."""

import pytest

from conftest import headless_chromium, keep_screenshot, needs_chromium
from vaelab.studies.pools import LocalExecutor
from vaelab.report import run_study
from vaelab.studies.spec import load_study


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.mark.slow
@needs_chromium
def test_report_loads_in_headless_chromium_without_console_errors(tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    spec = load_study("latent-dim").scaled("tiny")
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=2), progress=False, log=lambda m: None)
    driver = headless_chromium(1400, 2000)
    try:
        driver.get((folder / "report.html").resolve().as_uri())
        assert "latent dimension" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        images = driver.find_elements(By.CSS_SELECTOR, ".figure img")
        assert len(images) >= 4
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in images)  # every embedded figure decoded
        # sorting by test_loss puts the rows in numeric order
        header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#results-table th") if th.text == "test_loss")
        col = int(header.get_attribute("data-col"))
        header.click()
        values = [float(tr.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-value"))
                  for tr in driver.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")]
        assert values == sorted(values)
        keep_screenshot(driver, "report.png")
    finally:
        driver.quit()
