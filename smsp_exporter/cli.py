"""Command line: ``smsp-exporter [flags]``, ``smsp-exporter --demo``, ``smsp-exporter simulate``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import __version__
from .collection.statestore import Claim, StateFileError
from .collection.statestore import hold as hold_state_file
from .config import Config, ConfigError, config_from_dict, load_config
from .logs import add_secret, setup_logging
from .reload import Reloader, lifecycle_disabled_route, reload_route
from .tags import expand_tags
from .web import ExporterServer, parse_listen_address
from .webconfig import WebConfig, load_web_config

if TYPE_CHECKING:
    from .simulator import Simulator

log = logging.getLogger("smsp_exporter")

DEFAULT_LISTEN = ":9847"
DEMO_LISTEN = "127.0.0.1:9847"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsp-exporter",
        description="Prometheus exporter for the SMS Partner gateway: per-tag delivery status "
        "counts on /metrics. 'smsp-exporter simulate --help' runs the API simulator alone; "
        "'smsp-exporter homeassistant-package --help' prints a Home Assistant package.",
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
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="PATH",
        help="exporter-toolkit web configuration (TLS, basic auth); "
        "check it with 'promtool check web-config PATH'",
    )
    parser.add_argument(
        "--web.healthz-without-auth",
        dest="healthz_without_auth",
        action="store_true",
        help="serve /healthz without basic auth (for liveness probes); the rest still needs it",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="accept POST /-/reload (as Prometheus's flag); without it, it answers 403. "
        "SIGHUP always reloads",
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


class _Stopped(BaseException):
    """SIGTERM or SIGINT before the server is up (a BaseException: no handler swallows it)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from .simulator import main as simulate

        return simulate(argv[1:], prog="smsp-exporter simulate")
    if argv[:1] == ["homeassistant-package"]:
        from .homeassistant import main as homeassistant_package

        return homeassistant_package(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)

    # Until the server is up, SIGTERM and SIGINT stop start-up at once (no traceback) and a
    # SIGHUP is remembered for when it is (its default action would kill the process).
    hangup = threading.Event()

    def stop_starting(signum: int, _frame: object) -> None:
        raise _Stopped(signal.Signals(signum).name)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    signal.signal(signal.SIGTERM, stop_starting)
    signal.signal(signal.SIGINT, stop_starting)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup.set())
    try:
        return _main(args, hangup)
    except _Stopped as stopped:
        log.info("stopping before start-up finished", extra={"signal": str(stopped)})
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(args: argparse.Namespace, hangup: threading.Event) -> int:
    listen = args.listen_address or (DEMO_LISTEN if args.demo else DEFAULT_LISTEN)
    try:
        parse_listen_address(listen)
    except ValueError as err:
        print(f"smsp-exporter: --web.listen-address: {err}", file=sys.stderr)
        return 2

    web_config = None
    if args.web_config_file:
        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as err:
            print(f"smsp-exporter: invalid web configuration: {err}", file=sys.stderr)
            return 2
        if args.healthz_without_auth:
            web_config = replace(web_config, healthz_without_auth=True)

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
        print(f"{config.source}: valid, {_tag_summary(config)}, mode {config.collection.mode}")
        return 0
    try:
        # Checked, and locked from now on (another exporter on the file: exit 2 here); the
        # lock passes to the exporter, which holds it while it uses the file.
        state_lock = hold_state_file(config.collection.state_file)
    except StateFileError as err:
        print(f"smsp-exporter: {err}", file=sys.stderr)
        return 2

    if args.demo:
        demo_config = config

        def load() -> Config:
            return demo_config
    else:

        def load() -> Config:
            return load_config(args.config_file)

    try:
        return _serve(
            config,
            listen,
            demo=args.demo,
            load=load,
            web_config=web_config,
            hangup=hangup,
            lifecycle=args.enable_lifecycle,
            state_lock=state_lock,
        )
    finally:
        if state_lock is not None:
            state_lock.release()  # released already, unless start-up stopped before
        if simulator is not None:
            simulator.stop()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _tag_summary(config: Config) -> str:
    """What is configured, and with templates what is collected now (a template stands for
    several tags, changing at midnight): "2 tags", "2 tags + 1 template = 9 tags today"."""
    text = _plural(len(config.tags), "tag")
    if not config.tag_templates:
        return text
    today = len(expand_tags(config.tags, config.tag_templates, time.time()))
    return f"{text} + {_plural(len(config.tag_templates), 'template')} = {today} tags today"


def _start_demo() -> tuple[Simulator, Config]:
    from .simulator import DEMO_DIALECTS, DEMO_TAGS, Simulator

    # Simulated t=0 is now: the campaigns' dates (and the age of their Waiting messages) follow
    # the real clock, as a real account's would.
    simulator = Simulator(
        tags=DEMO_TAGS, latency=0.02, seed=42, dialects=DEMO_DIALECTS, start_time=time.time()
    ).start()
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
        # The simulator's key, whatever the environment says: the Docker image sets
        # SMSP_API_KEY_FILE, which would otherwise replace it and get every tag rejected.
        env={},
    )
    log.info("demo: simulator of the SMS Partner API started", extra={"url": simulator.url})
    return simulator, config


def _serve(
    config: Config,
    listen: str,
    *,
    demo: bool,
    load: Callable[[], Config],
    web_config: WebConfig | None = None,
    hangup: threading.Event | None = None,
    lifecycle: bool = False,
    state_lock: Claim | None = None,
) -> int:
    reloader = Reloader(load, config)
    if state_lock is not None:
        # The exporter holds the state file's lock now; not this start-up's hold any more (a
        # reload to another file must free this one).
        state_lock.release()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(reloader)
    server = ExporterServer(
        registry,
        listen,
        version=__version__,
        extra_routes={
            **reloader.routes(),
            "/-/reload": reload_route(reloader) if lifecycle else lifecycle_disabled_route(),
        },
        web_config=web_config,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except (OSError, ValueError) as err:
        print(f"smsp-exporter: {err}", file=sys.stderr)
        reloader.close()
        return 1
    except ConfigError as err:  # the TLS files
        print(f"smsp-exporter: invalid web configuration: {err}", file=sys.stderr)
        reloader.close()
        return 2
    reloader.start()
    metrics_url = f"{server.url.rstrip('/')}/metrics"
    log.info(
        "serving metrics",
        extra={
            "url": metrics_url,
            "tags": len(expand_tags(config.tags, config.tag_templates, time.time())),
            "mode": config.collection.mode,
        },
    )
    if demo:
        print(f"smsp-exporter demo: metrics at {metrics_url}  (Ctrl-C to stop)", flush=True)

    def on_hangup(_signum: int, _frame: object) -> None:
        # Not in the signal handler: a reload reads files and starts threads.
        threading.Thread(target=reloader.reload, name="smsp-exporter-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hangup)
    if hangup is not None and hangup.is_set():  # a SIGHUP during start-up
        on_hangup(signal.SIGHUP, None)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        reloader.close()
    return 0
