"""``bench report``: the static site, built from a few committed records (fast: structure, links, numbers) and
from a small fixture results folder of fresh runs, opened in headless Chromium (no console errors, every page
reachable, the fixture's numbers, figures drawn, a run's config)."""

import csv
import html
import re
import shutil
from pathlib import Path

import pytest

from bench import recipes
from bench.executors import run_grid
from bench.registry import get_registry
from bench.report import build_site
from bench.reproduce import needed
from bench.results import read_records, record_path, write_record
from bench.runner import Cell
from bench.tables import TableSpec

ROOT = Path(__file__).resolve().parents[1]
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PAPER_MAP = {"digits": {"map": [61.5, 70.25]}}  # made-up published numbers for the fixture table
LINK = re.compile(r"""(?:href|src)=["']?([^"' >]+)""")


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """The site of a few committed records, for the Dizaji table: ITQ at 16 bits on MNIST at its default config
    (its seeds) and one deep run with a training log on another protocol."""
    root = tmp_path_factory.mktemp("committed")
    stored = read_records(ROOT / "results")
    itq = recipes.select(stored, "itq", {16: recipes.hash_of(get_registry().method("itq"), 16)}, "mnist-dizaji2018")
    deep = next(r for r in stored if r["method"] == "hashgan-cao2018" and (r.get("training") or {}).get("log"))
    assert len(itq) >= 2
    results = root / "results"
    for r in [*itq, deep]:
        write_record(record_path(results, r), r)
    table = get_registry().table("dizaji2018-table1")
    summary = build_site(root / "site", results, tables=[table])
    return {"dir": root / "site", "results": results, "summary": summary, "itq": itq, "deep": deep, "table": table}


def test_every_page_and_download_is_there_and_every_link_resolves(committed):
    out = committed["dir"]
    pages = sorted(out.rglob("*.html"))
    runs = [*committed["itq"], committed["deep"]]
    # index, runs, missing; two protocols; the table at its rows' recipes and at its listed recipe (cpu-reduced)
    assert committed["summary"]["pages"] == len(pages) == len(runs) + 3 + 2 + 2
    for r in runs:
        assert (out / "runs" / f"{r['run_id']}.html").exists()
    for stem in ("dizaji2018-table1", "dizaji2018-table1-cpu-reduced"):
        for ext in ("html", "md", "tex", "csv"):
            assert (out / "tables" / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    assert (out / "assets" / "plotly.min.js").stat().st_size > 1_000_000  # vendored: no CDN
    for page in pages:
        for link in LINK.findall(page.read_text()):
            target = html.unescape(link).split("#")[0]
            assert not target.startswith(("http:", "https:", "//")), (page, link)
            if target:
                assert (page.parent / target).resolve().is_file(), (page, link)


def test_the_index_counts_the_cells_stored_of_those_the_table_needs(committed):
    index = (committed["dir"] / "index.html").read_text()
    cells = needed(committed["table"], committed["results"])
    assert f"1 / {len(cells)}</td>" in index  # ITQ, MNIST, 16 bits, seed 0: the only cell of seed 0 stored
    assert "protocols/mnist-dizaji2018.html" in index and "protocols/cifar10-cao2018.html" in index
    missing = html.unescape((committed["dir"] / "missing.html").read_text())
    assert "bench reproduce dizaji2018-table1 --rows 'ITQ' --bits 32 --seeds 0" in missing
    assert "bench reproduce dizaji2018-table1 --recipe cpu-reduced --rows 'HashGAN' --bits 16 --seeds 0" in missing


def test_the_table_page_shows_our_mean_beside_the_papers_number_and_links_the_runs(committed):
    itq = committed["itq"]
    values = [r["metrics"]["map"] * 100 for r in itq]
    mean = sum(values) / len(values)
    paper = next(r for r in committed["table"].rows if r["method"] == "itq")["published"]["mnist-dizaji2018"]["map"][0]
    text = (committed["dir"] / "tables" / "dizaji2018-table1.html").read_text()
    assert f"{mean:.2f}</span>" in text and f"paper {paper:.2f}" in text and f"{mean - paper:+.2f}" in text
    assert f"<span class=muted>({len(itq)})</span>" in text
    for r in itq:
        assert f"../runs/{r['run_id']}.html" in text
    rows = list(csv.DictReader((committed["dir"] / "tables" / "dizaji2018-table1.csv").open()))
    cell = next(r for r in rows if r["row"] == "ITQ" and r["block"] == "MNIST" and r["metric"] == "map")
    assert (cell["bits"], cell["seeds"]) == ("16", str(len(itq)))
    assert float(cell["ours_mean"]) == pytest.approx(mean, rel=1e-5) and float(cell["paper"]) == paper


def test_the_leaderboard_marks_the_published_number_of_the_same_config(committed):
    board = (committed["dir"] / "protocols" / "mnist-dizaji2018.html").read_text()
    row = next(line for line in board.split("<tr>") if line.startswith("<td>itq</td>"))
    assert "41.18" in row and "dizaji2018-table1.html" in row  # the paper's ITQ at 16 bits
    assert "id=fig-map" in board and "id=fig-pr-radius-16" in board and "id=fig-p-n-16" in board


def test_a_run_page_shows_its_config_against_the_default_and_its_training_curves(committed):
    itq = (committed["dir"] / "runs" / f"{committed['itq'][0]['run_id']}.html").read_text()
    assert "Its config the method&#x27;s default" in itq and "<td>n_iter</td>" in itq
    deep = committed["deep"]
    page = (committed["dir"] / "runs" / f"{deep['run_id']}.html").read_text()
    assert "id=training-losses" in page
    for key in deep["config"]:
        assert f"<td>{html.escape(key)}</td>" in page
    for key in deep["environment"]["packages"]:
        assert f"<td>{html.escape(key)}</td>" in page


# The fixture: fresh runs on digits, opened in a browser


def digits_table() -> TableSpec:
    """A paper table over the digits protocol with the fixture's methods, so the site needs no real dataset."""
    block = {
        "label": "Digits",
        "protocol": "digits",
        "input": "pixels",
        "metrics": ["map", "map@1000"],
        "paper_setup": "the fixture's digits split",
    }
    rows = (
        {"method": "itq", "label": "ITQ", "published": PAPER_MAP},
        {"method": "lsh", "label": "LSH", "published": {}},
        {"method": "dh", "label": "DH", "set": {"epochs": 2}, "published": {}},
    )
    return TableSpec(
        "digits-fixture",
        "Fixture table: mAP on digits",
        "the test fixture",
        (8, 16),
        (block,),
        rows,
        notes=("A fixture footnote.",),
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The fixture's results (shallow runs on digits, one deep smoke run) and the site built from them."""
    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    cells = [Cell("itq", "digits", 8, s) for s in (0, 1)] + [Cell("itq", "digits", 16, 0), Cell("lsh", "digits", 8, 0)]
    cells.append(Cell("dh", "digits", 8, 0, overrides=(("epochs", "2"),)))
    records = run_grid(cells, results_dir=results, log=lambda s: None)
    table = digits_table()
    summary = build_site(root / "site", results, tables=[table])
    return {"root": root, "dir": root / "site", "summary": summary, "records": records, "table": table}


def page(site, rel: str) -> str:
    return (site["dir"] / rel).read_text()


@pytest.mark.slow
def test_the_fixture_index_links_the_table_with_its_completeness_and_the_protocol(site):
    index = page(site, "index.html")
    assert "tables/digits-fixture.html" in index and "protocols/digits.html" in index
    # seed 0 of ITQ, LSH and DH at 8 and 16 bits: 6 cells, of which ITQ 8, ITQ 16, LSH 8 and DH 8 are stored
    assert "4 / 6" in index
    missing = page(site, "missing.html")
    assert "bench reproduce digits-fixture --rows &#x27;LSH&#x27; --bits 16 --seeds 0" in missing
    assert "bench reproduce digits-fixture --rows &#x27;DH&#x27; --bits 16 --seeds 0" in missing


@pytest.mark.slow
def test_the_fixture_table_page_shows_ours_the_papers_number_and_links_the_runs(site):
    itq = [r for r in site["records"] if r["method"] == "itq" and r["n_bits"] == 8]
    values = [r["metrics"]["map"] * 100 for r in itq]
    mean = sum(values) / 2
    text = page(site, "tables/digits-fixture.html")
    assert f"{mean:.2f}" in text and "paper 61.50" in text and f"{mean - 61.5:+.2f}" in text
    for r in itq:
        assert f"../runs/{r['run_id']}.html" in text
    assert "A fixture footnote." in text
    rows = list(csv.DictReader((site["dir"] / "tables" / "digits-fixture.csv").open()))
    cell = next(r for r in rows if r["row"] == "ITQ" and r["metric"] == "map" and r["bits"] == "8")
    assert float(cell["ours_mean"]) == pytest.approx(mean, rel=1e-5) and cell["seeds"] == "2"
    assert float(cell["paper"]) == 61.5


@pytest.mark.slow
def test_the_fixture_leaderboard_marks_the_published_number_and_the_run_page_its_config(site):
    board = page(site, "protocols/digits.html")
    assert "61.50" in board and "digits-fixture.html" in board  # ITQ at its default config has a paper value
    assert "<td>DH</td>" in board  # the deep run's config is labelled by the table row that ran it
    dh = next(r for r in site["records"] if r["method"] == "dh")
    run = page(site, f"runs/{dh['run_id']}.html")
    assert "differs from the method&#x27;s default in: epochs" in run
    assert re.search(r"<tr class=changed><td>epochs</td><td>2</td><td>\d+</td></tr>", run)
    assert "training-losses" in run  # the deep run's training log is drawn


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or not Path(CHROMEDRIVER).exists():
        pytest.skip("chromium or chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get("about:blank")  # the browser log reaches the driver only from the second page a session loads
    driver.get_log("browser")
    yield driver
    driver.quit()


def open_page(driver, path: Path):
    """Load a page and return the console errors it logged."""
    driver.get(path.resolve().as_uri())
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def row_labels(table):
    from selenium.webdriver.common.by import By

    return [tr.find_element(By.TAG_NAME, "td").text for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


@pytest.mark.slow
def test_the_site_in_a_browser(site, browser):
    from selenium.webdriver.common.by import By

    out = site["dir"]
    assert open_page(browser, out / "index.html") == []
    browser.save_screenshot(str(site["root"] / "index.png"))
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a")}
    assert any(link.endswith("tables/digits-fixture.html") for link in links)
    seen, queue = set(), sorted(links)
    while queue:  # every page reachable from the index loads without a console error
        link = queue.pop()
        if link in seen or not link.endswith(".html"):
            continue
        seen.add(link)
        browser.get(link)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], (link, errors)
        assert browser.find_element(By.TAG_NAME, "h1").text, link
        queue += [a.get_attribute("href").split("#")[0] for a in browser.find_elements(By.CSS_SELECTOR, "a[href]")]
    assert len(seen) == site["summary"]["pages"]

    assert open_page(browser, out / "tables" / "digits-fixture.html") == []
    browser.save_screenshot(str(site["root"] / "table.png"))
    table = browser.find_element(By.ID, "paper-table")
    assert "paper 61.50" in table.text
    assert row_labels(table) == ["ITQ", "LSH", "DH"]
    header = table.find_element(By.CSS_SELECTOR, "th[data-col='0']")
    header.click()
    assert row_labels(table) == ["DH", "ITQ", "LSH"]
    header.click()
    assert row_labels(table) == ["LSH", "ITQ", "DH"]

    assert open_page(browser, out / "protocols" / "digits.html") == []
    figures = browser.find_elements(By.CSS_SELECTOR, "div.figure")
    assert figures
    for figure in figures:  # each drawn by plotly, with its data points
        assert figure.find_elements(By.CSS_SELECTOR, "svg.main-svg"), figure.get_attribute("id")
        assert figure.find_elements(By.CSS_SELECTOR, "g.trace path.point"), figure.get_attribute("id")

    dh = next(r for r in site["records"] if r["method"] == "dh")
    assert open_page(browser, out / "runs" / f"{dh['run_id']}.html") == []
    config = browser.find_element(By.ID, "config").text
    assert "epochs 2" in config and "hidden" in config
    assert browser.find_elements(By.CSS_SELECTOR, "#training-losses g.trace")
