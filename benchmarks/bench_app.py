"""Time every interaction of the monitoring app on the repository's own data.

    .venv/bin/python benchmarks/bench_app.py          # after ./setup.sh

Drives ``monitoring_app.py`` with Streamlit's AppTest (the script runs in this process, as
it does in the server; the browser's drawing is not included) over the lake the main job
wrote, and prints the seconds of each step: the first load (cold caches), each view's first
visit, the same view again (cached), and each control changed. The target is < 2 s for
every interaction (issue 13).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "mlops_pipeline" / "src"))

from streamlit.testing.v1 import AppTest  # noqa: E402

import monitoring_views as mv  # noqa: E402

APP = str(REPO / "mlops_pipeline" / "src" / "monitoring_app.py")


def timed(label: str, action, results: list[tuple[str, float]]) -> AppTest:
    started = time.perf_counter()
    at = action()
    seconds = time.perf_counter() - started
    if at.exception:
        raise SystemExit(f"{label}: the app raised {at.exception[0].value}")
    results.append((label, seconds))
    return at


def main() -> None:
    results: list[tuple[str, float]] = []
    at = AppTest.from_file(APP, default_timeout=120)
    timed("first load (cold caches, Overview)", at.run, results)
    for view in mv.VIEWS[1:]:
        timed(f"{view}: first visit", lambda v=view: at.sidebar.radio(key="view").set_value(v).run(), results)
    for view in mv.VIEWS:
        timed(
            f"{view}: again (cached)", lambda v=view: at.sidebar.radio(key="view").set_value(v).run(), results
        )
    at.sidebar.radio(key="view").set_value("Feature view").run()
    steps = [
        ("feature -> pressure", lambda: at.selectbox(key="feature").set_value("pressure").run()),
        ("metric -> ks_statistic", lambda: at.selectbox(key="metric").set_value("ks_statistic").run()),
        ("window -> 2nd window", lambda: at.selectbox(key="window").select_index(1).run()),
        ("date range -> Oct-Nov", lambda: at.select_slider(key="date_range").set_value(
            (at.select_slider(key="date_range").options[5], at.select_slider(key="date_range").options[13])).run()),
        ("granularity -> month", lambda: at.selectbox(key="granularity").set_value("month").run()),
        ("granularity -> week", lambda: at.selectbox(key="granularity").set_value("week").run()),
    ]  # fmt: skip
    for label, action in steps:
        timed(label, action, results)
    width = max(len(label) for label, _ in results)
    for label, seconds in results:
        print(f"{label:<{width}}  {seconds:6.2f} s")
    slowest = max(results[1:], key=lambda r: r[1])
    print(f"slowest interaction after the first load: {slowest[0]} {slowest[1]:.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
