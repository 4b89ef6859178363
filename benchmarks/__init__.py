"""Benchmarks of smsp-exporter against its simulator: ``./dev.sh bench`` (docs/performance.md)."""
