"""The `site` pages in a real browser: Debian's headless Chromium, driven by Selenium through Debian's chromedriver.

What a person sees: the matrix's cells (their text and colour class), a failed cell's reason on its run's page,
the history that marks a regression, the links between pages (clicked, not read), and no console error on any page.
A screenshot of every page goes to MIC_SITE_ARTIFACTS (default: this test's tmp folder, named in its output).
MIC_SITE_SCREENSHOT=docs/img/site-overview.png rewrites the README's picture of the overview page.

Nothing here touches the network: the driver is /usr/bin/chromedriver (never Selenium Manager's download),
the browser is /usr/bin/chromium with its background fetches off and a proxy that leads nowhere, and the pages are
files. Under CI=true a missing browser fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, REPO
from site_reports import unpack

from conformance.cli import main
from conformance.results.documents import load_report
from conformance.results.site.model import build
from conformance.results.site.pages import anchor
from conformance.spec.semantics import RULES

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDE = (1280, 900)
PHONE = (390, 844)


def _missing() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"no {CHROMIUM} or {CHROMEDRIVER}: ./setup.sh installs Debian's chromium and chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no selenium: it is in the test extra (pip install -e '.[test]', or tox -e unit)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true: the browser test must run, but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_manager(*_: object) -> dict[str, str]:
        raise AssertionError("Selenium Manager must not run: it downloads drivers and browsers")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root, as CI runs
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--proxy-server=http://127.0.0.1:9",  # anything that still reaches out fails at once, locally
        f"--window-size={WIDE[0]},{WIDE[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # were Selenium Manager ever asked, it must not download anything
        patch.setattr(SeleniumManager, "binary_paths", no_manager)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    samples = unpack(tmp_path_factory.mktemp("reports"))
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", *map(str, samples.values()), "--out", str(out)]) == 0
    return out, build([load_report(p) for p in samples.values()])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("MIC_SITE_ARTIFACTS") or tmp_path_factory.mktemp("site-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


class Visit:
    """The browser on the site: every page it lands on is screenshot and its console read."""

    def __init__(self, driver: Any, root: Path, artifacts: Path) -> None:
        self.driver, self.root, self.artifacts = driver, root, artifacts
        self.console: list[dict[str, Any]] = []

    def open(self, name: str) -> None:
        self.driver.get((self.root / name).as_uri())
        self.landed()

    def click(self, element: Any) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()
        self.landed()

    def landed(self) -> None:
        """Wait for the page, keep its console entries, screenshot it whole."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
        self.console += self.driver.get_log("browser")
        self.shot(Path(self.driver.current_url.split("#")[0]).stem)

    def viewport(self, size: tuple[int, int] | None, height: int | None = None) -> None:
        """Emulate a screen of `size` (a phone's is a mobile one: the viewport meta applies); None: the window's."""
        if size is None:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            return
        metrics = {"width": size[0], "height": height or size[1], "deviceScaleFactor": 1, "mobile": size == PHONE}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def shot(self, name: str, size: tuple[int, int] = WIDE, to: Path | None = None, whole: bool = True) -> None:
        """A screenshot at `size`: the whole page (up to 6000 px high), or just the first screen."""
        self.viewport(size)
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.viewport(size, min(max(height, size[1]), 6000) if whole else size[1])
        self.driver.get_screenshot_as_file(str(to or self.artifacts / f"{name}-{size[0]}.png"))
        self.viewport(None)

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)


def _cell(visit: Visit, row: int, column: int) -> Any:
    from selenium.webdriver.common.by import By

    return visit.driver.find_element(By.CSS_SELECTOR, f"#matrix tbody tr:nth-child({row}) td:nth-of-type({column})")


def test_a_person_reads_the_matrix_follows_a_failure_to_its_reason_and_rule_and_reads_the_history(
    browser: Any, site: tuple[Path, Any], artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By

    root, model = site
    visit = Visit(browser, root, artifacts)
    visit.open("index.html")
    assert browser.title == "Inbound conformance: the matrix"
    headers = [e.text.splitlines()[0] for e in browser.find_elements(By.CSS_SELECTOR, "#matrix tbody th[scope=row]")]
    assert headers == ["istio 1.24.2 (release)", "istio 1.24.2 (custom build)", "istio 1.23.4 (release)"]
    columns = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#matrix thead tr:nth-child(2) th")]
    assert columns == ["baseline", "legacy", "passthrough", "ambient"] * 2

    # The release passes everywhere; its ipv6 ambient cell (the last column) too.
    release = _cell(visit, 1, 8)
    assert release.text.splitlines() == ["✔ success", "708 pass, 0 fail"]
    assert "res-success" in release.get_attribute("class").split()
    # The custom build fails legacy on ipv4, which passed the night before: text, class and the regression note.
    legacy = _cell(visit, 2, 2)
    assert legacy.text.splitlines() == ["✘ failure", "412 pass, 128 fail", "▼ regressed, passed 2026-12-04"]
    assert {"res-failure", "regressed"} <= set(legacy.get_attribute("class").split())
    assert legacy.value_of_css_property("background-color") != release.value_of_css_property("background-color")
    assert _cell(visit, 2, 5).text == "– no run"  # no ipv6 run of the custom build
    interrupted = _cell(visit, 3, 2)
    assert interrupted.text.splitlines()[0] == "■ interrupted"
    assert "res-interrupted" in interrupted.get_attribute("class").split()

    # The phone: the page does not scroll sideways; the matrix scrolls inside its own box.
    visit.viewport(PHONE)
    assert browser.execute_script("return window.innerWidth") == PHONE[0]
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    visit.viewport(None)
    visit.shot("index", PHONE)
    if os.environ.get("MIC_SITE_SCREENSHOT"):
        target = REPO / os.environ["MIC_SITE_SCREENSHOT"]
        target.parent.mkdir(parents=True, exist_ok=True)
        visit.viewport((1400, 900))
        bottom = browser.execute_script("return document.getElementById('matrix').getBoundingClientRect().bottom")
        visit.shot("index", (1400, int(bottom) + 16), to=target, whole=False)

    # Click the failed legacy cell: the run's page, its failed cells with reasons and reruns.
    visit.click(legacy.find_element(By.TAG_NAME, "a"))
    run = model.rows[1].latest("ipv4")
    assert browser.current_url.endswith("/" + run.page)
    assert visit.text("h2#failed") == "Failed cells (311)"
    cell = "passthrough/none/wildcard/remapped/tcp/service/plain/ipv4"
    entry = browser.find_element(By.ID, anchor(cell))
    assert entry.is_displayed()
    assert "reason: expected the app to see inbound_passthrough, it saw 127.0.0.1 (localhost)" in entry.text
    assert 'rerun: .venv/bin/tox -e conformance -- -k "SourceAddressFromOtherPods and passthrough"' in entry.text
    # In the table, the same cell: expected, and what was seen; its link leads to the entry.
    in_table = browser.find_element(By.ID, "t-" + anchor(cell))
    assert in_table.text.splitlines() == ["✘ expected ✓ 127.0.0.6", "saw ✓ 127.0.0.1"]
    assert "fail" in in_table.get_attribute("class").split()

    # Follow one of its rules to the spec: the rule's statement and its Istio source.
    visit.click(entry.find_element(By.LINK_TEXT, "passthrough-original-dst"))
    assert browser.current_url.endswith("/spec.html#rule-passthrough-original-dst")
    rule = browser.find_element(By.ID, "rule-passthrough-original-dst")
    assert RULES["passthrough-original-dst"].istio_source in rule.text
    assert browser.execute_script("return arguments[0].getBoundingClientRect().top", rule) < 900  # scrolled to it

    # The history: the custom build's two nights, the latest marked.
    visit.click(browser.find_element(By.LINK_TEXT, "History"))
    section = browser.find_element(By.ID, "row-2")
    assert "▼ regressed" in section.find_element(By.TAG_NAME, "h2").text
    nights = section.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [n.find_element(By.TAG_NAME, "th").text for n in nights] == ["2026-12-05 18:18 UTC", "2026-12-04 18:18 UTC"]
    assert "▼ regressed" in nights[0].text
    assert "▼" not in nights[1].text
    # The night before passed: its page has no failed cells.
    visit.click(nights[1].find_element(By.TAG_NAME, "a"))
    assert browser.find_elements(By.ID, "failed") == []
    assert "✔ success" in visit.text("#profiles + .scroll table")

    # Back to the overview by the navigation bar; then every other page once, for its console and screenshot.
    visit.click(browser.find_element(By.LINK_TEXT, "Overview"))
    assert browser.current_url.endswith("/index.html")
    for page in sorted(p.name for p in root.glob("*.html")):
        visit.open(page)
    severe = [e for e in visit.console if e.get("level") == "SEVERE"]
    assert severe == [], severe
    shots = {p.name for p in artifacts.glob("*.png")}
    assert {f"{p.stem}-{WIDE[0]}.png" for p in root.glob("*.html")} <= shots


def test_the_console_check_sees_an_error(browser: Any, site: tuple[Path, Any], artifacts: Path) -> None:
    """The log the test above reads is the browser's console: an error there shows up (the check can fail)."""
    root, _ = site
    visit = Visit(browser, root, artifacts)
    visit.open("spec.html")
    browser.execute_script("console.error('a deliberate error')")
    assert any("a deliberate error" in e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE")
