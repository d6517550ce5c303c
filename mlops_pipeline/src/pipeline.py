"""The main job: every stage of the system, in order, on the embedded defaults.

    python mlops_pipeline/src/pipeline.py

Stages: load ``Base_de_datos.csv`` into the warehouse (and each date's day context); train, compare and save the best
model; score the Sep-Dec production period as one batch per flight date into the scored
table (with the flights' actual outcomes beside it); monitor the scored table week by
week. Each stage is a plain function call into its module, so this file only decides
the order.
"""

from __future__ import annotations

import argparse
import logging
import time

from tqdm.contrib.logging import logging_redirect_tqdm

import day_context
import model_monitoring
import model_training_evaluation
import scoring
from monitoring_views import APP_COMMAND
from production import score_production
from settings import get_settings
from warehouse import load_raw_csv

logger = logging.getLogger(__name__)


def run() -> None:
    settings = get_settings()
    started = time.perf_counter()
    result = load_raw_csv()
    context = day_context.refresh()
    print(
        f"[load] {result.row_count:,} rows from {result.file_name} (sha256 {result.sha256[:12]}...) "
        f"into {settings.warehouse_path.name}:{result.table}; day context of {context.dates} dates "
        f"in {settings.lake_dir.name}/{context.path.parent.name}, in {time.perf_counter() - started:.1f}s"
    )

    started = time.perf_counter()
    training = model_training_evaluation.run()
    best = training.best
    print(
        f"[train] {len(training.results)} candidates; selected {best.name} as model {training.version}: "
        f"validation ROC-AUC {best.metrics['validation']['roc_auc']:.4f}, "
        f"test (Sep-Dec) ROC-AUC {best.metrics['test']['roc_auc']:.4f}, threshold {best.threshold['value']}; "
        f"reports in {training.report_dir.relative_to(settings.artifacts_dir.parent)} "
        f"in {time.perf_counter() - started:.0f}s"
    )

    started = time.perf_counter()
    counts = score_production(scoring.Scorer.load(training.version))
    print(
        f"[score] {counts['rows']:,} flights of Sep-Dec in {counts['days']} daily batches "
        f"({counts['new_rows']:,} new rows) into {settings.lake_dir.name}/{scoring.SCORED_DATASET}, "
        f"views 'scored' and 'actuals' in {settings.warehouse_path.name}, in {time.perf_counter() - started:.0f}s"
    )

    try:
        monitoring = model_monitoring.run_once(model_monitoring.MonitorConfig())
    except model_monitoring.StaleProfileError as exc:  # an artifact saved before profile format 2
        print(f"[monitor] not run: {exc}")
    else:
        print(f"[monitor] {monitoring.line()}; views monitoring_* in {settings.warehouse_path.name}")
    print(f"[app] to look at the results: {APP_COMMAND}")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        description="The main job: load, train, score (and monitor) on the embedded defaults.",
        epilog="Settings come from MLOPS_* environment variables (settings.py).",
    ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        run()


if __name__ == "__main__":
    main()
