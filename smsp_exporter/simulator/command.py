"""The simulator's command line: ``python -m smsp_exporter.simulator`` or
``smsp-exporter simulate`` (``--help``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .campaigns import DEFAULT_START_TIME, DEMO_TAGS, LISTING_ORDERS, TagSpec
from .core import Simulator
from .dialects import DEMO_DIALECTS, DIALECTS
from .wire import is_loopback


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _parse_tag(text: str, spread: float, delay: float, order: str = "oldest") -> TagSpec:
    name, sep, count = text.rpartition(":")
    if not sep or not name or not count.isdigit():
        raise ValueError(f"--tag wants NAME:MESSAGES, got {text!r}")
    return TagSpec(name, int(count), send_spread=spread, report_delay=delay, order=order)


def _parse_dialect(text: str) -> tuple[str, str]:
    tag, sep, dialect = text.rpartition("=")
    if not sep or not tag or dialect not in DIALECTS:
        raise ValueError(
            f"--dialect wants TAG=DIALECT (one of {', '.join(DIALECTS)}), got {text!r}"
        )
    return tag, dialect


def main(argv: list[str] | None = None, prog: str = "python -m smsp_exporter.simulator") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,  # "smsp-exporter simulate" when run that way
        description="A fake SMS Partner API on loopback, for demos and tests.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8787", help="HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback listen address"
    )
    parser.add_argument("--api-key", default="sim-key")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    parser.add_argument("--error-http-status", type=int, default=200)
    parser.add_argument(
        "--order",
        choices=LISTING_ORDERS,
        default="oldest",
        help="listing order of --tag campaigns (default %(default)s)",
    )
    parser.add_argument(
        "--fixed-dates",
        action="store_true",
        help=f"date simulated t=0 at {DEFAULT_START_TIME} (reproducible) instead of now",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="NAME:MESSAGES",
        help="a campaign (repeatable; default: the demo campaigns)",
    )
    parser.add_argument(
        "--send-spread",
        type=float,
        default=120.0,
        help="seconds over which each --tag campaign is sent",
    )
    parser.add_argument(
        "--report-delay",
        type=float,
        default=30.0,
        help="mean delivery-report delay of --tag campaigns",
    )
    parser.add_argument(
        "--dialect",
        action="append",
        default=[],
        metavar="TAG=DIALECT",
        help=f"serve a tag in another encoding (repeatable; one of {', '.join(DIALECTS)}; "
        "default with the demo campaigns: "
        + ", ".join(f"{t}={d}" for t, d in DEMO_DIALECTS.items())
        + ")",
    )
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
        tags = [
            _parse_tag(t, args.send_spread, args.report_delay, args.order) for t in args.tag
        ] or DEMO_TAGS
        dialects = dict(_parse_dialect(d) for d in args.dialect)
        if not args.tag and not args.dialect:
            dialects = dict(DEMO_DIALECTS)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.allow_remote and not is_loopback(host):
        print(
            f"error: refusing to listen on non-loopback {host!r} without --allow-remote",
            file=sys.stderr,
        )
        return 2
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    try:
        sim = Simulator(
            api_key=args.api_key,
            seed=seed,
            page_size=args.page_size,
            latency=args.latency,
            tags=tags,
            host=host,
            port=port,
            error_http_status=args.error_http_status,
            speed=args.speed,
            allow_remote=args.allow_remote,
            dialects=dialects,
            start_time=DEFAULT_START_TIME if args.fixed_dates else time.time(),
        ).start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the simulator: {exc}", file=sys.stderr)
        return 1

    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: done.set())
    try:
        print(f"simulator listening on {sim.url} (api key: {sim.api_key})", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
