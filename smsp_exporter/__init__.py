"""Prometheus exporter for the SMS Partner gateway."""

__version__ = "0.1.0"
