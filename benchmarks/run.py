"""Run every benchmark figure, print the table and write it as JSON.

    ./dev.sh bench                 # the figures at the sizes their targets are stated for
    python -m benchmarks.run --quick --json /tmp/bench.json   # small sizes, a few seconds

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import figures
from .figures import Figure

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def full() -> list[Callable[[], Figure | list[Figure]]]:
    """The sizes the targets are stated for (issue 5)."""
    return [
        lambda: figures.fetch_vs_bound(tags=100, pages=range(1, 6), latency=0.05, concurrency=8),
        lambda: figures.naive_vs_exporter(tags=100, pages=3, latency=0.05, concurrency=8),
        lambda: figures.rate_limit(rate=20.0, tags=20, pages=3, latency=0.05, concurrency=8),
        lambda: figures.parse_vs_json(messages=100_000),
        lambda: figures.memory(big=1_000_000, small=1_000, page_size=1_000),
        lambda: figures.serving_render(tags=1_000),
        lambda: figures.concurrent_scrapes(scrapes=10, tags=20, concurrency=4),
        lambda: figures.incremental(messages=1_000_000, rate=20.0),
        lambda: figures.budget(),
        lambda: figures.status_page(tags=500),
    ]


def quick() -> list[Callable[[], Figure | list[Figure]]]:
    """Small sizes: checks the machinery, not the targets (the test suite runs these)."""
    return [
        lambda: figures.fetch_vs_bound(tags=6, pages=range(1, 3), latency=0.01, concurrency=3),
        lambda: figures.naive_vs_exporter(tags=4, pages=2, latency=0.01, concurrency=3),
        lambda: figures.rate_limit(rate=50.0, tags=3, pages=2, latency=0.01, concurrency=3),
        lambda: figures.parse_vs_json(messages=2_000, repeat=3),
        lambda: figures.memory(big=5_000, small=100, page_size=500),
        lambda: figures.serving_render(tags=20, repeat=3),
        lambda: figures.concurrent_scrapes(scrapes=3, tags=3, concurrency=2, latency=0.01),
        lambda: figures.incremental(messages=20_000, rate=20.0, rounds=3),
        lambda: figures.budget(finished_tags=(6, 12), live_sent=3_000, steady_minutes=11.0),
        lambda: figures.status_page(tags=20, repeat=3),
    ]


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def run(steps: list[Callable[[], Figure | list[Figure]]], echo: bool = True) -> list[Figure]:
    out: list[Figure] = []
    for step in steps:
        result = step()
        for fig in result if isinstance(result, list) else [result]:
            out.append(fig)
            if echo:
                print(f"  {fig.title}: {fig.value:.3g} ({fig.detail})", file=sys.stderr)
    return out


def table(results: list[Figure]) -> str:
    rows = [("figure", "value", "target", "result", "measured")]
    for fig in results:
        verdict = "-" if fig.passed is None else ("pass" if fig.passed else "FAIL")
        rows.append((fig.title, f"{fig.value:.3g}", fig.target, verdict, fig.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append("| " + " | ".join([*cells, row[4]]) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in [*widths, 8]) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, no meaningful targets")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    args = parser.parse_args(argv)
    started = time.monotonic()
    host = machine()
    print(
        f"smsp-exporter benchmarks on {host['cpus']} x {host['cpu']}, Python {host['python']}",
        file=sys.stderr,
    )
    results = run(quick() if args.quick else full())
    elapsed = time.monotonic() - started
    print(table(results))
    print(
        f"\n{len(results)} figures in {elapsed:.0f} s; machine: {host['cpus']} CPUs, "
        f"{host['cpu']}, Python {host['python']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": host,
        "quick": args.quick,
        "seconds": round(elapsed, 1),
        "figures": [asdict(fig) for fig in results],
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0 if all(fig.passed is not False for fig in results) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
