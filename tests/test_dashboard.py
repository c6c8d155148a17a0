"""The feature dashboard (step 5) in a real browser: headless Chromium opens index.html from a file:// URL.

Builds a fixture experiment (binding_sae.fixtures.write_fixture_experiment), runs visualize_step, and checks that the
page loads without console errors, states the verdict first (in words, with the bar and every check), shows at least
the catalog's number of feature rows, reads "what it tracks" against base rates, lists as many test questions per
panel as it says, shows each feature's interchange swap rate and the set's swap line, embeds every image, fetches nothing from the network, sorts its table, and leaves a screenshot in tests/artifacts/dashboard.png (not committed).
"""
import json, os, re, shutil, tempfile
from pathlib import Path

import pytest

from binding_sae.config import config_from_dict
from binding_sae.fixtures import write_fixture_experiment, write_fixture_interchange
from binding_sae.visualize import visualize_step

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    exp = write_fixture_experiment(tmp_path_factory.mktemp("dash") / "fixture", n_features=3)
    write_fixture_interchange(exp)  # results/interchange_results.json: the swap column and line
    cfg = config_from_dict({"dataset": {"refined_dataset": str(exp / "world" / "questions.csv")}})  # base rates of "what it tracks"
    counts = visualize_step(cfg, exp)
    return exp, counts


@pytest.fixture(scope="module")
def browser():
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: install it with `apt-get install -y chromium chromium-driver`")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="bsae-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
              "--window-size=1280,900", "--hide-scrollbars"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try: yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _severe(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_dashboard_in_chromium(dashboard, browser):
    exp, counts = dashboard
    page = exp / "feature_dashboard" / "index.html"
    n_catalog = len(json.loads((exp / "feature_catalog.json").read_text())["features"])
    browser.get(page.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert _severe(browser) == [], "console errors while loading the dashboard"

    # the verdict is the first thing on the page: supported or not, in words, with the bar and each check's outcome
    report = json.loads((exp / "analysis" / "hypothesis_report.json").read_text())
    verdict = browser.find_element("css selector", "section.verdict")
    assert verdict.location["y"] < browser.find_element("css selector", "table#features").location["y"]
    word = "SUPPORTED" if report["hypothesis_supported"] else "NOT SUPPORTED"
    assert verdict.find_element("css selector", "h2").text.startswith(f"Verdict: {word}")
    assert "pre-registered bar 10 %" in verdict.text
    assert len(verdict.find_elements("css selector", "td.chk")) == len(report["conditions"][0]["checks"])
    assert "top_mean_activation" in verdict.text and "all latents replace" in verdict.text
    # "what it tracks" names a preferred value with its base rate (the planted colours), and the rank's basis is a column
    tracks = [r.find_elements("css selector", "td")[-1].text for r in browser.find_elements("css selector", "table#features tbody tr")]
    assert all("base " in t or "no clear preference" in t for t in tracks), tracks
    assert browser.find_element("css selector", 'th[data-col="2"]').text.endswith("(rank)")

    rows = browser.find_elements("css selector", "table#features tbody tr")
    assert len(rows) >= n_catalog == counts["n_features"]
    # the interchange swap: a column with each feature's swap rate alone (first condition), and the set's line under the verdict
    inter = json.loads((exp / "results" / "interchange_results.json").read_text())["conditions"][0]
    heads = [th.text for th in browser.find_elements("css selector", "table#features thead th")]
    col = next(i for i, h in enumerate(heads) if h.lower().startswith("swap rate (interchange)"))
    shown = {r.find_elements("css selector", "td")[1].text: r.find_elements("css selector", "td")[col].text for r in rows}
    assert shown == {f: f"{100 * v['swap_rate']:.2f}%" for f, v in inter["per_feature"].items()}, (shown, inter["per_feature"])
    line = browser.find_element("css selector", "p#interchange")
    assert line.location["y"] < browser.find_element("css selector", "table#features").location["y"]
    s = inter["summary"]
    for k in ("swap_rate", "random_swap_rate_mean", "full_residual_swap_rate"):
        assert f"{100 * s[k]:.3g} %" in line.text, (k, line.text)
    assert inter["task"] in line.text and counts["n_features_with_swap"] == n_catalog
    # each panel says how many test questions its ablation list shows, and shows that many
    for panel in browser.find_elements("css selector", "section.panel"):
        said = [re.search(r"on (?:its (\d+)|the (\d+) of its \d+) test questions", h.text)
                for h in panel.find_elements("css selector", ".ablation h3") if h.text.startswith("… on ")]
        assert len(said) == 1 and said[0], [h.text for h in panel.find_elements("css selector", ".ablation h3")]
        assert int(said[0].group(1) or said[0].group(2)) == len(panel.find_elements("css selector", ".ablation .barwrap"))
    assert len(browser.find_elements("css selector", "section.panel")) == n_catalog
    # every image is embedded and decoded; nothing points at the network
    imgs = browser.execute_script("return Array.from(document.images).map(i => [i.src.slice(0, 5), i.complete && i.naturalWidth > 0])")
    assert len(imgs) == counts["n_examples"] and all(src == "data:" and ok for src, ok in imgs), imgs
    remote = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))"
        ".filter(u => /^(https?:)?\\/\\//.test(u))")
    assert remote == []
    # per-token highlighting carries the value in its title; tracked objects are outlined
    assert browser.find_elements("css selector", "span.tok.peak[title]")
    assert browser.find_elements("css selector", ".scene .box.tracked")
    # boxes sit on their image: the scene is exactly as tall as its image, so percent boxes stay inside it
    outside = browser.execute_script("""
        return Array.from(document.querySelectorAll('.scene')).filter(s => {
          const i = s.querySelector('img').getBoundingClientRect(), r = s.getBoundingClientRect();
          return Math.abs(r.height - i.height) > 1 || Array.from(s.querySelectorAll('.box')).some(b => {
            const x = b.getBoundingClientRect();
            return x.left < i.left - 1 || x.top < i.top - 1 || x.right > i.right + 1 || x.bottom > i.bottom + 1; });
        }).length""")
    assert outside == 0, f"{outside} images with boxes outside them"

    # the script works: sorting by feature id (ascending), then a row click opens its panel
    ids = lambda: [r.find_elements("css selector", "td")[1].text for r in browser.find_elements("css selector", "table#features tbody tr")]
    browser.find_element("css selector", 'th[data-col="1"]').click()
    assert ids() == sorted(ids(), key=int)
    browser.find_elements("css selector", "table#features tbody tr")[0].find_elements("css selector", "td")[5].click()
    assert browser.execute_script("return location.hash") == f"#f{ids()[0]}"
    browser.execute_script("window.scrollTo(0, 0); location.hash = '';")
    browser.find_element("css selector", 'th[data-col="0"]').click()  # back to rank order for the screenshot
    assert _severe(browser) == [], "console errors while using the dashboard"

    # screenshot of the whole page (kept as a test artefact)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 120, 6000))
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
