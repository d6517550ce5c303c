"""The monitoring app in a real browser: ``streamlit run`` as a subprocess, driven by
Playwright on Debian's chromium (``apt-get install -y chromium``; no browser download).

The test starts the server on a free port over the session's real Sep-Dec production lake
(monitored weekly), loads each view, changes the controls, checks what is drawn (Plotly
traces, tables, messages) and saves a screenshot of each view; then it runs the main job's
load (``warehouse.load_raw_csv``) while the server is still up, which fails if the app
holds ``warehouse.duckdb``. It skips, saying why, when /usr/bin/chromium or Playwright is
missing.

Screenshots go to the test's temporary folder. To refresh the ones in docs/img from the
repository's own data (after ``./setup.sh``):

    MLOPS_APP_SCREENSHOTS=docs/img MLOPS_APP_REPO_DATA=1 .venv/bin/python -m pytest tests/test_app_browser.py -s
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RAW_CSV, SRC_DIR
from settings import REPO_ROOT, Settings
from warehouse import load_raw_csv

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # the first render after start-up reads the lake with cold caches

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium: install it with apt-get install -y chromium"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(folder: Path | None, artifacts: Path | None) -> dict[str, str]:
    """The server's environment: the production lake's settings, or (folder None) the
    repository's defaults, without this test process's per-test MLOPS_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    if folder is not None:
        env |= {
            "MLOPS_WAREHOUSE_PATH": str(folder / "warehouse.duckdb"),
            "MLOPS_LAKE_DIR": str(folder / "lake"),
            "MLOPS_ARTIFACTS_DIR": str(artifacts),
        }
    return env


@pytest.fixture(scope="module")
def served(request) -> Iterator[tuple[str, Path]]:
    """(URL of a running ``streamlit run``, the warehouse it is configured with)."""
    if os.environ.get("MLOPS_APP_REPO_DATA"):
        env, warehouse = _server_env(None, None), Settings().warehouse_path
    else:
        request.getfixturevalue("production_monitored")
        lake = request.getfixturevalue("production_lake")
        env, warehouse = _server_env(lake.folder, lake.artifacts), lake.folder / "warehouse.duckdb"
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(SRC_DIR / "monitoring_app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode() if server.stdout else ""
                    pytest.fail(f"streamlit run did not start: {output[-2000:]}")
                time.sleep(0.3)
        yield url, warehouse
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="module")
def page(served):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1500, "height": 1700})
        tab.set_default_timeout(WAIT_MS)
        tab.goto(served[0])
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MLOPS_APP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- driving the page


def settled(page, text: str | None = None) -> None:
    """Wait until the rerun has drawn ``text`` (a heading or any text) and no element of the
    previous run is left (Streamlit marks those ``data-stale="true"`` until the run ends)."""
    if text is not None:
        page.get_by_text(text).first.wait_for()
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def choose_view(page, view: str, expect: str) -> float:
    """Click a view in the sidebar; seconds until it is drawn."""
    started = time.perf_counter()
    sidebar(page).locator('[data-testid="stRadio"] label').filter(has_text=re.compile(f"^{view}$")).click()
    settled(page, expect)
    return time.perf_counter() - started


def choose_option(page, label: str, option: str, expect: str) -> float:
    """Pick an option of a sidebar selectbox; seconds until ``expect`` is drawn."""
    started = time.perf_counter()
    sidebar(page).locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    settled(page, expect)
    return time.perf_counter() - started


def subheaders(page) -> list[str]:
    return page.locator('[data-testid="stHeadingWithActionElements"] h3').all_inner_texts()


def plots(page, expected: int | None = None):
    """The Plotly charts drawn; with ``expected``, first wait (up to 10 s) until that many are
    (Plotly draws after the rerun has ended)."""
    if expected is not None:
        try:
            page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length === {expected}",
                                   timeout=10_000)  # fmt: skip
        except sync_api.TimeoutError as exc:
            count = page.locator(".js-plotly-plot").count()
            raise AssertionError(f"{count} Plotly charts drawn, expected {expected}") from exc
    return page.locator(".js-plotly-plot")


def wait_for_heading(page, text: str) -> None:
    page.locator("h3", has_text=text).first.wait_for()


def snap(page, shots: Path, name: str) -> None:
    page.wait_for_timeout(400)  # Plotly's transition
    page.screenshot(path=str(shots / f"app_{name}.png"))  # Streamlit scrolls inside: the viewport


# --------------------------------------------------------------------------- the test


def test_every_view_and_control_in_a_real_browser(page, served, shots: Path) -> None:
    timings: dict[str, float] = {}
    settled(page, "Overall:")
    assert "week of 2013-12-30" in subheaders(page)[0]
    assert "Latest monitoring run" in page.locator('[data-testid="stMetric"]').nth(2).inner_text()
    assert page.locator('[data-testid="stMetric"]').count() == 3 + 4  # freshness, the last four ROC-AUCs
    assert plots(page, 2).count() == 2  # risk bars, weighted drift per window
    assert plots(page).first.locator(".bars path").count() >= 10  # one bar per drifted feature
    snap(page, shots, "overview")

    timings["Feature view"] = choose_view(page, "Feature view", "reference vs the week of 2013-12-30")
    assert plots(page, 2).count() == 2
    assert plots(page).first.locator(".barlayer .trace").count() == 2  # reference and window overlaid
    timings["feature"] = choose_option(page, "Feature (by importance)", "pressure", "pressure: reference vs")
    timings["metric"] = choose_option(page, "Metric", "ks_statistic", "ks_statistic of pressure per week")
    assert plots(page).nth(1).locator(".shapelayer path").count() >= 3  # the threshold bands
    snap(page, shots, "feature")

    timings["Drift table"] = choose_view(page, "Drift table", "Drift per variable")
    page.locator('[data-testid="stDataFrame"]').wait_for()
    assert "p-values" in page.locator('[data-testid="stCaptionContainer"]').first.inner_text()
    snap(page, shots, "drift_table")

    timings["Time analysis"] = choose_view(page, "Time analysis", "ks_statistic of pressure over time")
    assert plots(page, 2).count() == 2 and plots(page).nth(1).locator(".hm, .heatmaplayer image").count() >= 1
    snap(page, shots, "time_analysis")

    timings["Performance"] = choose_view(page, "Performance", "Realized performance")
    assert plots(page, 4).count() == 4  # ROC-AUC/precision/recall, calibration, score PSI and KS
    assert plots(page).first.locator(".scatterlayer .trace").count() == 3
    snap(page, shots, "performance")

    timings["Recommendations"] = choose_view(page, "Recommendations", "Alert log")
    assert page.locator('[data-testid="stAlertContentError"]').count() >= 1  # the job's advice is not calm
    snap(page, shots, "recommendations")

    choose_view(page, "Overview", "Overall:")
    started = time.perf_counter()  # the date range: its right end two windows earlier
    sidebar(page).get_by_role("slider").last.focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    settled(page, "week of 2013-12-16")
    timings["date range"] = time.perf_counter() - started

    timings["granularity"] = choose_option(page, "Window granularity", "month", "--window month")
    assert plots(page, 0).count() == 0  # not computed here: the command, no chart
    print("browser interaction seconds:", {k: round(v, 2) for k, v in timings.items()})
    assert max(timings.values()) < 5, timings  # < 2 s in the app (AppTest), plus the browser's drawing

    result = load_raw_csv(RAW_CSV, warehouse_path=served[1])  # the main job's load, the app still running
    assert result.row_count == 336_776
    choose_option(page, "Window granularity", "week", "Overall:")
