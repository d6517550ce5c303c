"""training_report: the report's numbers, its plots' curves, summary.md and the readme's model table."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

import model_training_evaluation as mte
import training_report as report
from settings import REPO_ROOT, get_settings

RNG = np.random.default_rng(3)
N = 4_000
Y = (RNG.random(N) < 0.22).astype(int)
MONTHS = RNG.choice([9, 10, 11, 12], N)
WEAK = np.clip(0.22 + 0.15 * Y * RNG.random(N) + 0.2 * RNG.random(N) - 0.1, 0.01, 0.99)
STRONG = np.clip(WEAK + 0.2 * Y * RNG.random(N), 0.01, 0.99)
CONSTANT = np.full(N, 0.28)  # a prior fitted elsewhere: constant, and not this sample's rate


def _line(ax: plt.Axes, label_start: str) -> tuple[np.ndarray, np.ndarray]:
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# --------------------------------------------------------------------------- curves and plots


def test_a_constant_scores_pr_curve_is_flat_at_the_positive_rate() -> None:
    recall, precision = report.pr_curve(Y, CONSTANT)
    assert np.allclose(precision, Y.mean()) and recall.min() == 0 and recall.max() == 1


def test_the_drawn_curves_of_a_constant_score_are_the_chance_lines() -> None:
    fig = report.plot_roc_pr(Y, {"baseline": CONSTANT, "model": STRONG}, "test")
    roc_ax, pr_ax = fig.axes
    recall, precision = _line(pr_ax, "baseline")
    assert np.allclose(precision, Y.mean()), "the constant's PR curve must be the horizontal line at the rate"
    assert recall.min() == 0 and recall.max() == 1
    fpr, tpr = _line(roc_ax, "baseline")
    assert np.allclose(fpr, tpr) and fpr.min() == 0 and fpr.max() == 1  # the diagonal
    assert np.allclose(_line(pr_ax, "chance")[1], Y.mean())
    plt.close(fig)


def test_the_drawn_pr_curve_has_average_precision_as_its_area() -> None:
    # drawn as steps-post from high recall to low: each step's height is the precision at its right end
    fig = report.plot_roc_pr(Y, {"model": STRONG}, "test")
    (line,) = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("model")]
    assert line.get_drawstyle() == "steps-post"
    recall, precision = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    area = float(np.sum((recall[:-1] - recall[1:]) * precision[:-1]))
    assert area == pytest.approx(average_precision_score(Y, STRONG), abs=1e-12)
    # no point at precision 1 that no threshold reaches (scikit-learn's appended (0, 1))
    assert precision[-1] == precision[-2]
    plt.close(fig)


def test_reliability_bins_hold_equal_shares_and_the_observed_rates() -> None:
    table = report.reliability_table(Y, STRONG, n_bins=10)
    assert table["flights"].sum() == N and table.height == 10
    assert table["flights"].min() >= N / 10 - 5 and table["flights"].max() <= N / 10 + 5
    first = table.row(0, named=True)
    in_bin = first["score_to"] >= STRONG
    assert first["observed_rate"] == pytest.approx(Y[in_bin].mean())
    assert first["mean_score"] == pytest.approx(STRONG[in_bin].mean())
    # a constant score is one bin: the predicted value against the observed rate
    constant = report.reliability_table(Y, CONSTANT)
    assert constant.height == 1 and constant["mean_score"][0] == pytest.approx(0.28)
    assert constant["observed_rate"][0] == pytest.approx(Y.mean())


def test_the_reliability_plot_shows_the_constant_as_one_point() -> None:
    fig = report.plot_reliability({"test": (Y, {"baseline": CONSTANT, "model": STRONG})})
    x, y = _line(fig.axes[0], "baseline")
    assert len(x) == 1 and x[0] == pytest.approx(0.28) and y[0] == pytest.approx(Y.mean())
    plt.close(fig)


def test_feature_importance_shares_use_every_features_gain() -> None:
    names = [f"f{i}" for i in range(40)]
    gains = np.arange(40, dtype=float)
    fig = report.plot_feature_importance(names, gains, top=5)
    bars = fig.axes[0].patches
    assert len(bars) == 5
    assert bars[-1].get_width() == pytest.approx(39 / gains.sum())  # largest on top, share of all 40
    assert "top 5 of 40 features" in fig.axes[0].get_title()
    plt.close(fig)


# --------------------------------------------------------------------------- tables


def test_monthly_metrics_match_scikit_learn() -> None:
    table = report.monthly_metrics(Y, MONTHS, STRONG)
    assert table["month"].to_list() == [9, 10, 11, 12] and table["flights"].sum() == N
    oct_ = table.filter(pl.col("month") == 10).row(0, named=True)
    mask = MONTHS == 10
    assert oct_["roc_auc"] == pytest.approx(roc_auc_score(Y[mask], STRONG[mask]))
    assert oct_["pr_auc"] == pytest.approx(average_precision_score(Y[mask], STRONG[mask]))
    assert oct_["brier"] == pytest.approx(brier_score_loss(Y[mask], STRONG[mask]))
    assert oct_["positive_rate"] == pytest.approx(Y[mask].mean())
    assert oct_["mean_score"] == pytest.approx(STRONG[mask].mean())


def test_compare_by_month_gives_each_models_figures_and_the_difference() -> None:
    table = report.compare_by_month(Y, MONTHS, {"before": WEAK, "after": STRONG})
    assert table.columns == ["month", "flights", "positive_rate", "metric", "before", "after", "delta_after"]
    assert table["month"].unique(maintain_order=True).to_list() == ["Sep", "Oct", "Nov", "Dec", "all"]
    assert table.height == 5 * len(report.COMPARED_METRICS)
    nov = table.filter((pl.col("month") == "Nov") & (pl.col("metric") == "roc_auc")).row(0, named=True)
    mask = MONTHS == 11
    assert nov["before"] == pytest.approx(roc_auc_score(Y[mask], WEAK[mask]))
    assert nov["after"] == pytest.approx(roc_auc_score(Y[mask], STRONG[mask]))
    assert nov["delta_after"] == pytest.approx(nov["after"] - nov["before"])
    assert nov["flights"] == mask.sum() and nov["positive_rate"] == pytest.approx(Y[mask].mean())
    pooled = table.filter((pl.col("month") == "all") & (pl.col("metric") == "brier")).row(0, named=True)
    assert pooled["after"] == pytest.approx(brier_score_loss(Y, STRONG)) and pooled["flights"] == N
    # a third model, compared with a chosen reference
    three = report.compare_by_month(Y, MONTHS, {"a": WEAK, "b": STRONG, "c": CONSTANT}, reference="b")
    assert {"delta_a", "delta_c"} <= set(three.columns) and "delta_b" not in three.columns
    text = report.comparison_markdown(table)
    assert "| Nov |" in text and "after − before" in text and f"{nov['delta_after']:+.4f}" in text


def test_compare_by_month_refuses_scores_of_other_rows() -> None:
    with pytest.raises(ValueError, match="not the same rows"):
        report.compare_by_month(Y, MONTHS, {"before": WEAK, "after": STRONG[:-1]})
    with pytest.raises(ValueError, match="reference"):
        report.compare_by_month(Y, MONTHS, {"before": WEAK}, reference="after")


# --------------------------------------------------------------------------- the run's report (10 % sample)


@pytest.fixture(scope="module")
def run_report(trained):
    run = trained[0]
    return run, pl.read_csv(run.report_dir / "summary.csv"), run.report_dir


def test_monthly_csv_holds_every_candidate_and_month_of_jul_dec(run_report) -> None:
    run, _, folder = run_report
    monthly = pl.read_csv(folder / "monthly.csv")
    assert set(monthly["model"]) == set(mte.CANDIDATES)
    assert sorted(monthly["month"].unique().to_list()) == [7, 8, 9, 10, 11, 12]
    best = monthly.filter(pl.col("model") == run.best.name).sort("month")
    assert best["roc_auc"].to_list() == pytest.approx(list(run.best.monthly_auc.values()))


def _tables(markdown: str) -> list[list[str]]:
    """Runs of consecutive lines that start with '|'."""
    tables: list[list[str]] = []
    previous = False
    for line in markdown.splitlines():
        row = line.startswith("|")
        if row and not previous:
            tables.append([])
        if row:
            tables[-1].append(line)
        previous = row
    return tables


def test_summary_md_is_a_few_narrow_tables_with_the_csvs_numbers(run_report) -> None:
    run, summary, folder = run_report
    text = (folder / "summary.md").read_text()
    assert not re.search(r"\d[eE][+-]?\d", text), "no scientific notation"
    tables = _tables(text)
    assert len(tables) >= 5
    assert max(line.count("|") - 1 for t in tables for line in t) <= 8, "every table narrow"
    best = summary.filter(pl.col("selected")).row(0, named=True)
    assert best["model"] == run.best.name
    assert (
        f"| **LightGBM** (selected) | {best['validation_roc_auc']:.4f} | {best['test_roc_auc']:.4f} |" in text
    )
    assert f"{best['test_brier']:.4f}" in text and f"{100 * best['test_recall']:.1f} %" in text
    assert f"{len(run.best.scores['test']):,}" in text  # thousands separators
    assert "(constant)" in text  # the prior's "speed" is not a model's


def test_the_readme_block_parses_back_to_the_summary(run_report) -> None:
    run, summary, _ = run_report
    block = report.readme_block(summary, run.version)
    assert report.readme_version(block) == run.version
    _assert_table_is_summary(report.parse_markdown_table(block), summary, timings=True)


def test_readme_command_rewrites_and_checks_the_block(use_trained, tmp_path) -> None:
    readme = tmp_path / "readme.md"
    readme.write_text(f"before\n\n{report.README_BEGIN} -->\nold\n{report.README_END}\n\nafter\n")
    assert report.main(["readme", "--check", "--readme", str(readme)]) == 1
    assert report.main(["readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n") and use_trained.version in text
    assert report.main(["readme", "--check", "--readme", str(readme)]) == 0
    # one changed metric is caught; a changed timing is not a difference
    cell = f"{use_trained.best.metrics['test']['roc_auc']:.4f}"
    readme.write_text(text.replace(cell, "0.9999"))
    assert report.main(["readme", "--check", "--readme", str(readme)]) == 1
    fit = f"| {pl.read_csv(use_trained.report_dir / 'summary.csv')['fit_seconds'][-1]:.1f} |"
    readme.write_text(text.replace(fit, "| 999.9 |"))
    assert report.main(["readme", "--check", "--readme", str(readme)]) == 0


# --------------------------------------------------------------------------- the readme is the current model's


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _assert_table_is_summary(rows: list[dict[str, str]], summary: pl.DataFrame, timings: bool) -> None:
    """Each readme cell, read as a number, equals the summary.csv value rounded as shown."""
    by_name = {report.display_name(r["model"]): r for r in summary.iter_rows(named=True)}
    assert [r["model"].replace(" (selected)", "") for r in rows] == list(by_name)
    for row in rows:
        selected = row["model"].endswith("(selected)")
        want = by_name[row["model"].replace(" (selected)", "")]
        assert selected == want["selected"]
        for header, column in [("validation ROC-AUC", "validation_roc_auc"), ("test ROC-AUC", "test_roc_auc"),
                               ("validation PR-AUC", "validation_pr_auc"), ("test PR-AUC", "test_pr_auc"),
                               ("test Brier", "test_brier")]:  # fmt: skip
            # the selected model is pinned by its version (a content hash), so its figures are
            # exact; the other candidates' solvers (lbfgs on threaded BLAS) move in the 4th
            # decimal between runs (logistic regression's validation ROC-AUC: 0.7418 / 0.7417)
            tolerance = 0 if selected else 5e-4
            assert _number(row[header]) == pytest.approx(round(want[column], 4), abs=tolerance), (
                row["model"], header)  # fmt: skip
        monthly = [_number(v) for v in row["monthly ROC-AUC Jul–Dec: mean / std / worst"].split(" / ")]
        expected = [round(want[f"monthly_auc_{k}"], 3) for k in ("mean", "std", "min")]
        assert monthly == pytest.approx(expected, abs=0 if selected else 1.5e-3)
        assert _number(row["size KB"]) == round(want["size_kb"])
        if timings:
            assert _number(row["fit s"]) == round(want["fit_seconds"], 1)
            if want["model"] != "baseline":
                assert _number(row["scoring rows/s"]) == round(want["score_rows_per_s"])


@pytest.fixture(scope="module")
def full_run(real_datasets, tmp_path_factory):
    """The main job's training on the full warehouse (every candidate, the full grid), in a
    temporary artifacts folder."""
    folder = tmp_path_factory.mktemp("full") / "artifacts"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(folder))
        get_settings.cache_clear()
        run = mte.run(real_datasets)
    get_settings.cache_clear()
    return run


@pytest.mark.slow
def test_the_readmes_model_table_is_the_summary_of_a_fresh_training(full_run) -> None:
    readme = (REPO_ROOT / "readme.md").read_text()
    block, _, _ = report.readme_section(readme)
    summary = pl.read_csv(full_run.report_dir / "summary.csv")
    hint = f"the readme describes another model than training builds now; after ./setup.sh run {report.README_COMMAND}"
    assert report.readme_version(block) == full_run.version, hint
    _assert_table_is_summary(report.parse_markdown_table(block), summary, timings=False)
    # and the prose sentence of the block, as generated
    wanted = report.readme_block(summary, full_run.version)
    assert block.splitlines()[-2] == wanted.splitlines()[-2], hint
