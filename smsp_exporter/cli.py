"""Command line: ``smsp-exporter [flags]``, ``smsp-exporter --demo``, ``smsp-exporter simulate``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import __version__
from .config import Config, ConfigError, config_from_dict, load_config
from .exporter import Exporter
from .logs import add_secret, setup_logging
from .web import ExporterServer

log = logging.getLogger("smsp_exporter")

DEFAULT_LISTEN = ":9847"
DEMO_LISTEN = "127.0.0.1:9847"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsp-exporter",
        description="Prometheus exporter for the SMS Partner gateway: per-tag delivery status "
        "counts on /metrics. 'smsp-exporter simulate --help' runs the API simulator alone.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="YAML configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print the result and exit 0 (valid) or 2 (invalid)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=None,
        metavar="HOST:PORT",
        help=f"address to serve /metrics on (default: {DEFAULT_LISTEN}; {DEMO_LISTEN} with --demo)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warn", "error"],
        help="log level (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log format (default: %(default)s)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in SMS Partner simulator and export its campaigns: "
        "no account or config file needed",
    )
    parser.add_argument("--version", action="version", version=f"smsp-exporter {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from .simulator import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)

    simulator = None
    if args.demo:
        simulator, config = _start_demo()
    else:
        try:
            config = load_config(args.config_file)
        except ConfigError as err:
            print(f"smsp-exporter: invalid configuration: {err}", file=sys.stderr)
            return 2
    add_secret(config.api.key)
    for warning in config.warnings:
        log.warning("%s: %s", config.source, warning)
    if args.config_check:
        print(f"{config.source}: valid, {len(config.tags)} tags, mode {config.collection.mode}")
        return 0

    listen = args.listen_address or (DEMO_LISTEN if args.demo else DEFAULT_LISTEN)
    try:
        return _serve(config, listen, demo=args.demo)
    finally:
        if simulator is not None:
            simulator.stop()


def _start_demo():
    from .simulator import DEMO_TAGS, Simulator

    simulator = Simulator(tags=DEMO_TAGS, latency=0.02, seed=42).start()
    config: Config = config_from_dict(
        {
            "api": {
                "url": simulator.url,
                "key": simulator.api_key,
                "max_requests_per_second": 100,
                "concurrency": 8,
            },
            "tags": [spec.name for spec in DEMO_TAGS],
            "account": {"enabled": True},
        },
        source="<demo>",
    )
    log.info("demo: simulator of the SMS Partner API started", extra={"url": simulator.url})
    return simulator, config


def _serve(config: Config, listen: str, *, demo: bool) -> int:
    exporter = Exporter(config)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(exporter.collector)
    server = ExporterServer(registry, listen, version=__version__, extra_routes=exporter.routes())
    try:
        server.start()
    except (OSError, ValueError) as err:
        print(f"smsp-exporter: {err}", file=sys.stderr)
        exporter.close()
        return 1
    exporter.start()
    metrics_url = f"{server.url.rstrip('/')}/metrics"
    log.info(
        "serving metrics",
        extra={"url": metrics_url, "tags": len(config.tags), "mode": config.collection.mode},
    )
    if demo:
        print(f"smsp-exporter demo: metrics at {metrics_url}  (Ctrl-C to stop)", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        exporter.close()
    return 0
