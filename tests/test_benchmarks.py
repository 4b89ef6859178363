"""A smoke run of the benchmark suite at tiny sizes, so that it cannot rot.

Only that every figure is produced and sane is asserted here: the targets are for
``./dev.sh bench`` at full size on a quiet machine, not for a shared test run."""

from __future__ import annotations

import json
import math

from benchmarks import run
from benchmarks.figures import peak_rate


def test_quick_benchmark_produces_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    assert run.main(["--quick", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["quick"] is True and document["machine"]["python"]
    figures = {fig["key"]: fig for fig in document["figures"]}
    assert {
        "fetch_vs_bound_p1",
        "fetch_vs_bound_p2",
        "naive_vs_exporter",
        "rate_limit_peak",
        "rate_limit_time",
        "parse_vs_json_loads",
        "memory_mb",
        "serving_render",
        "scrape_connections",
        "incremental_vs_changeable",
        "incremental_vs_whole",
        "incremental_restart",
        "budget_finished_scrape_rounds",
        "budget_first_read_share",
        "budget_finished_background_rounds",
        "budget_finished_background_steady",
        "budget_never_reported_steady",
        "capacity_scrape_finished_tags",
        "capacity_background_live_tags",
        "status_page_vs_metrics",
        "status_page_kb",
    } <= set(figures)
    for key, fig in figures.items():
        assert math.isfinite(fig["value"]), key
        assert fig["detail"], key
        assert fig["target"] or fig["passed"] is None, key  # a figure that only informs
        if key != "memory_mb":  # a difference of two peaks: may be 0 at tiny sizes
            assert fig["value"] > 0, key


def test_peak_rate_counts_a_half_open_window():
    assert peak_rate([]) == 0
    assert peak_rate([0.0, 0.5, 1.0, 1.5]) == 2
    assert peak_rate([0.0, 0.1, 0.2, 0.99, 2.0]) == 4
