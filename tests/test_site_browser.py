"""End-to-end test of the built site in headless Chromium (Debian's chromium + chromedriver).

The site is built from the real catalog, served by http.server on 127.0.0.1 (a free port) and
driven with Selenium: search, timeline filters, a paper page with its BibTeX and copy button, the
dataset table. Screenshots of the home, timeline and a paper page go to the test's tmp_path and
to $STFCAT_SCREENSHOT_DIR when set.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromedriver (/usr/bin/chromium, /usr/bin/chromedriver)"),
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


def _board_with_a_trained_run(root: Path) -> Path:
    import json

    from test_site_charts import write_run

    board = json.loads((Path(__file__).resolve().parent / "fixtures" / "site" / "leaderboard_bench.json").read_text())
    row = json.loads(json.dumps(board["rows"][-1]))  # starfm's row as a template
    row.update(model="stfdcnn", paper="stfdcnn", family="cnn", reported=None, params=100_000)
    row["metrics"] = {k: (v * 1.5 if k in ("rmse", "mae") else v) for k, v in row["metrics"].items()}
    board["rows"].append(row)
    board["runs"] = [r for r in board["runs"] if r["model"] != "stfdcnn"]
    board["runs"].append(write_run(root, "stfdcnn-demo", "stfdcnn", untrained={"rmse": 0.05, "ssim": 0.6}))
    path = root / "leaderboard.json"
    path.write_text(json.dumps(board))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from stfcat.catalog import load_catalog
    from stfcat.site.build import build_site

    out = tmp_path_factory.mktemp("site-e2e")
    # A leaderboard in the format `stfcat bench` writes (see tests/test_site.py), plus a trained
    # STFDCNN row whose run folder has untrained scores and a quick-look image (issue #12.6).
    results = _board_with_a_trained_run(out)
    res = build_site(out / "build", None, results)
    handler = functools.partial(_QuietHandler, directory=str(res.html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", load_catalog()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{name} screenshot is (nearly) empty"
    extra = os.environ.get("STFCAT_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def _wait(driver, predicate, timeout: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(predicate)


def test_home_and_search_finds_swinstfm(served, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, catalog = served
    if "swinstfm" not in catalog.papers:
        pytest.skip("SwinSTFM is not in the catalog")
    browser.get(base + "index.html")
    assert "papers" in browser.find_element(By.TAG_NAME, "h1").text.lower() or browser.title
    _shot(browser, tmp_path, "home")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys("swin")
    results = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")
                                         if "swinstfm" in (e.get_attribute("href") or "")])
    assert results, "searching 'swin' does not find the SwinSTFM page"
    doi = catalog.papers["swinstfm"].doi
    box.clear()
    box.send_keys(doi)
    hits = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")
                                      if "swinstfm" in (e.get_attribute("href") or "")])
    assert hits, f"searching the DOI {doi} does not find the SwinSTFM page"


def test_palette_toggle_switches_light_and_dark(served, browser) -> None:
    from selenium.webdriver.common.by import By

    base, _ = served
    browser.get(base + "index.html")

    def scheme() -> str:
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-md-color-scheme")

    before = scheme()
    toggle = next(t for t in browser.find_elements(By.CSS_SELECTOR, "form[data-md-component=palette] label")
                  if t.is_displayed())
    toggle.click()
    _wait(browser, lambda d: scheme() != before)
    assert {before, scheme()} == {"default", "slate"}


def test_timeline_shows_every_paper_and_filters(served, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, catalog = served
    browser.get(base + "timeline.html")
    items = browser.find_elements(By.CSS_SELECTOR, ".stl-item")
    assert len(items) == len(catalog.papers)
    assert all(i.is_displayed() for i in items)
    hrefs = {i.find_element(By.TAG_NAME, "a").get_attribute("href").rsplit("/", 1)[-1] for i in items}
    assert hrefs == {f"{pid}.html" for pid in catalog.papers}
    _shot(browser, tmp_path, "timeline")

    keep = "cnn"
    for box in browser.find_elements(By.CSS_SELECTOR, "#stl-filters input[name=cat]"):
        if box.get_attribute("value") != keep:
            browser.execute_script("arguments[0].click();", box)
    shown = [i for i in items if i.is_displayed()]
    n_keep = sum(p.category.value == keep for p in catalog.papers.values())
    assert len(shown) == n_keep > 0
    assert all(i.get_attribute("data-cat") == keep for i in shown)
    assert browser.find_element(By.ID, "stl-count").text.startswith(f"{n_keep} of {len(catalog.papers)}")

    # the year range hides papers outside it
    years = sorted(p.year for p in catalog.papers.values() if p.category.value == keep)
    lo = years[-1]
    frm = browser.find_element(By.ID, "stl-from")
    browser.execute_script("arguments[0].value = arguments[1];"
                           "arguments[0].dispatchEvent(new Event('input'));", frm, str(lo))
    shown = [i for i in items if i.is_displayed()]
    assert len(shown) == sum(y >= lo for y in years)
    assert all(int(i.get_attribute("data-year")) >= lo for i in shown)


def test_paper_page_bibtex_and_copy_button(served, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from stfcat.bibtex import paper_key

    base, catalog = served
    pid = "swinstfm" if "swinstfm" in catalog.papers else sorted(catalog.papers)[0]
    paper = catalog.papers[pid]
    browser.get(base + f"papers/{pid}.html")
    codes = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "pre code")]
    key = paper_key(paper)
    assert any(c.lstrip().startswith("@") and key in c for c in codes), f"no BibTeX block with {key}: {codes}"
    # mkdocs-material (content.code.copy) adds the copy button with JS after load
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button.md-code__button[data-md-type=copy]"))
    assert paper.doi in browser.find_element(By.TAG_NAME, "article").text
    browser.execute_script("document.getElementById('links').scrollIntoView();")
    time.sleep(0.6)  # let the theme's header-title transition finish before the screenshot
    _shot(browser, tmp_path, "paper")


def test_datasets_table_lists_all(served, browser) -> None:
    from selenium.webdriver.common.by import By

    base, catalog = served
    browser.get(base + "datasets/index.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "article table tbody tr")
    first_cells = {r.find_elements(By.TAG_NAME, "td")[0].text for r in rows}
    assert set(catalog.datasets) <= first_cells
    assert len(rows) == len(catalog.datasets)


def test_paper_table_filters(served, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, catalog = served
    browser.get(base + "papers/index.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "#pt tbody tr")
    assert len(rows) == len(catalog.papers) and all(r.is_displayed() for r in rows)
    Select(browser.find_element(By.ID, "pt-cat")).select_by_value("gan")
    shown = [r for r in rows if r.is_displayed()]
    assert len(shown) == sum(p.category.value == "gan" for p in catalog.papers.values())
    browser.execute_script("arguments[0].click();", browser.find_element(By.ID, "pt-run"))
    runnable = {p.implementation.model for p in catalog.papers.values() if p.category.value == "gan"}
    assert all(r.get_attribute("data-run") == "1" for r in rows if r.is_displayed())
    assert len([r for r in rows if r.is_displayed()]) <= len(runnable - {None})

    browser.refresh()
    rows = browser.find_elements(By.CSS_SELECTOR, "#pt tbody tr")
    year = max(p.year for p in catalog.papers.values())
    Select(browser.find_element(By.ID, "pt-year")).select_by_value(str(year))
    assert len([r for r in rows if r.is_displayed()]) == sum(p.year == year for p in catalog.papers.values())
    Select(browser.find_element(By.ID, "pt-year")).select_by_value("")
    Select(browser.find_element(By.ID, "pt-task")).select_by_value("reflectance")
    browser.execute_script("arguments[0].click();", browser.find_element(By.ID, "pt-code"))
    want = sum(p.task.value == "reflectance" and bool(p.code_url) for p in catalog.papers.values())
    assert len([r for r in rows if r.is_displayed()]) == want > 0
    assert browser.find_element(By.ID, "pt-count").text == f"{want} shown"


def test_leaderboard_sorts_by_metric(served, browser) -> None:
    from selenium.webdriver.common.by import By

    base, _ = served
    browser.get(base + "models.html")
    table = next(t for t in browser.find_elements(By.CSS_SELECTOR, ".stfcat-sortable table")
                 if "RMSE" in t.find_element(By.TAG_NAME, "thead").text)
    heads = [h.text.strip() for h in table.find_elements(By.CSS_SELECTOR, "thead th")]
    col = heads.index("RMSE")

    def models() -> list[str]:
        return [r.find_elements(By.TAG_NAME, "td")[0].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    def rmse() -> list[float]:
        return [float(r.find_elements(By.TAG_NAME, "td")[col].text)
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    header = table.find_elements(By.CSS_SELECTOR, "thead th")[col]
    assert models()[:3] == ["delta", "copy-f1", "upsample-c2"]  # as built: baselines first
    header.click()
    assert rmse() == sorted(rmse()) and models()[0] == "starfm"  # the paper's reported 0.0187
    header.click()
    assert rmse() == sorted(rmse(), reverse=True) and models()[0] == "upsample-c2"
    assert "reproduced here" in table.text and "reported in paper" in table.text
    # the reported row has no MAE: missing values sort last in both directions
    mae = table.find_elements(By.CSS_SELECTOR, "thead th")[heads.index("MAE")]
    for _ in range(2):
        mae.click()
        last = table.find_elements(By.CSS_SELECTOR, "tbody tr")[-1].find_elements(By.TAG_NAME, "td")
        assert last[0].text == "starfm" and last[heads.index("MAE")].text == "—"


def test_leaderboard_chart_has_one_mark_per_row(served, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, _ = served
    browser.get(base + "models.html")
    table = next(t for t in browser.find_elements(By.CSS_SELECTOR, ".stfcat-sortable table")
                 if "RMSE" in t.find_element(By.TAG_NAME, "thead").text)
    rows = [r.find_elements(By.TAG_NAME, "td")[0].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
            if "not in results" not in r.text]
    chart = browser.find_element(By.CSS_SELECTOR, 'svg.stfcat-chart[data-metric="rmse"][data-dataset="demo"]')
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    assert chart.is_displayed() and chart.size["width"] > 300 and chart.size["height"] > 100
    marks = chart.find_elements(By.CSS_SELECTOR, "g[data-method]")
    assert sorted(m.get_attribute("data-method") for m in marks) == sorted(rows)
    # every bar is drawn with a width, and the worst row has the longest one
    widths = {m.get_attribute("data-method") + m.get_attribute("data-source"):
              browser.execute_script("return arguments[0].getBBox().width", m.find_element(By.TAG_NAME, "rect"))
              for m in marks}
    assert min(widths.values()) > 0 and max(widths, key=widths.get).startswith("upsample-c2")
    refs = chart.find_elements(By.CSS_SELECTOR, "g.stfcat-ref")
    assert sorted(r.get_attribute("data-baseline") for r in refs) == ["copy-f1", "delta", "upsample-c2"]
    ssim = browser.find_element(By.CSS_SELECTOR, 'svg.stfcat-chart[data-metric="ssim"][data-dataset="demo"]')
    assert len(ssim.find_elements(By.CSS_SELECTOR, "g[data-method]")) == len(rows)
    _shot(browser, tmp_path, "leaderboard-chart")
    # the dataset's own page shows the same chart
    browser.get(base + "datasets/demo.html")
    chart = browser.find_element(By.CSS_SELECTOR, 'svg.stfcat-chart[data-metric="rmse"]')
    assert chart.is_displayed() and len(chart.find_elements(By.CSS_SELECTOR, "g[data-method]")) == len(rows)


def test_mirrored_dataset_page_lists_the_pinned_files(served, browser) -> None:
    from selenium.webdriver.common.by import By

    base, catalog = served
    ds = catalog.datasets["ahb"]
    browser.get(base + "datasets/ahb.html")
    text = browser.find_element(By.TAG_NAME, "article").text
    assert "stfcat fetch ahb" in text and ds.access.mirror.repository in text and ds.access.mirror.licence in text
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "details table tbody td:first-child")]
    assert cells == [f.path for f in ds.access.mirror.files]  # shown verbatim (no stray backslashes)


def test_model_section_shows_quicklook_and_untrained_vs_trained(served, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, _ = served
    browser.get(base + "papers/stfdcnn.html")
    chart = browser.find_element(By.CSS_SELECTOR, 'svg.stfcat-chart[data-chart="training"][data-metric="rmse"]')
    states = [g.get_attribute("data-state") for g in chart.find_elements(By.CSS_SELECTOR, "g[data-state]")]
    assert states == ["untrained", "trained"]
    img = browser.find_element(By.CSS_SELECTOR, 'img[src*="assets/runs/stfdcnn-demo/"]')
    browser.execute_script("arguments[0].scrollIntoView()", img)
    assert _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    _shot(browser, tmp_path, "model-runs")
