"""The status page at ``/``: what each tag is doing and why, at a glance, for an operator.

One row per tag: its state (failing, deferred, incomplete, first read n %, not read yet, up),
its counts by status and STOP, the share of Not delivered among the reports of the last hour
(where it can be known), the time of its last read and last success, and when it fails, the
reason and the API's own message (scrubbed as in the logs). Rolling tags are grouped under their
template; tags only ever asked through ``/probe`` are listed apart. Trouble sorts first.
Above the table: the round (its request budget and what it spent, when the scheduler tells),
the account's credit, where the configuration comes from and when it was loaded.

It costs no API call, in any mode: it reads the poller's latest snapshot (or, before the first
round, :meth:`.Poller.pending`), never :meth:`.Source.snapshot`, which in ``scrape`` mode runs a
round. The page is plain server-rendered HTML: no script, no asset from elsewhere; every text
that comes from the configuration or the API is escaped, and a ``Content-Security-Policy``
forbids scripts, images and anything but its one inline style sheet (allowed by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import html
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from wsgiref.types import StartResponse, WSGIEnvironment

from . import __version__
from .account import AccountState
from .collection.rounds import Poller, RoundBudget, Snapshot, TagState
from .logs import redact

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "RecentOutcomes",
    "ReloadInfo",
    "StatusPage",
    "StatusView",
    "render",
]

# The recent Not-delivered share: the counts of each tag are sampled at most every SAMPLE_STEP
# seconds and kept for WINDOW seconds, so at most WINDOW / SAMPLE_STEP + 1 samples a tag
# (13 small tuples: about 1 kB a tag, 0.5 MB for 500 tags).
WINDOW = 3600.0
SAMPLE_STEP = 300.0
# Characters of a tag name shown (a longer one is cut, with an ellipsis).
MAX_SHOWN_TAG = 200
# Seconds between the page's own refreshes (<meta http-equiv="refresh">: no script needed).
REFRESH_SECONDS = 30

DELIVERED, NOT_DELIVERED, WAITING = "Delivered", "Not delivered", "Waiting"

_COLUMNS = (
    "Tag",
    "State",
    "Delivered",
    "Not delivered",
    "Waiting",
    "Other",
    "STOP",
    "Not delivered, last hour",
    "Last read",
    "Last success",
    "Reason",
)
# On a narrow screen the rows become cards: each cell says which column it is.
_CARD_LABELS = "".join(
    f'td:nth-child({index})::before{{content:"{name}: "}}'
    for index, name in enumerate(_COLUMNS[1:], start=2)
)
_CSS = (
    """
:root{color-scheme:light;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body{margin:0 auto;padding:12px 16px;max-width:1400px;color:#1d2125;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px}
p,ul{margin:4px 0}a{color:#0b57d0}
.links a{margin-right:12px}.muted{color:#5f6368}
.summary{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0}
.pill{border-radius:12px;padding:2px 10px;font-weight:600;border:1px solid transparent}
.s-failing{background:#fce8e6;color:#a50e0e;border-color:#f4b4ae}
.s-stale{background:#fef7e0;color:#7a4f01;border-color:#f6d680}
.s-first{background:#e8f0fe;color:#174ea6;border-color:#aecbfa}
.s-up{background:#e6f4ea;color:#0d652d;border-color:#a8dab5}
.s-none{background:#f1f3f4;color:#3c4043;border-color:#dadce0}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
.facts dt{font-weight:600}.facts dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;margin-top:4px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e3e3;vertical-align:top}
thead th{background:#f1f3f4;font-size:12px;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.group th{background:#fafafa;font-weight:600;padding-top:10px}
.tag{font-family:ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere;
word-break:break-word;max-width:28em}th.tag{min-width:12em}
.why{overflow-wrap:anywhere;max-width:36em}td.why{min-width:18em}
td.share{min-width:10em}.why q{color:#5f6368}
.state,td time{white-space:nowrap}
progress{width:5em;height:.8em;vertical-align:middle}
tr.failing>:first-child{border-left:4px solid #d93025}
tr.stale>:first-child{border-left:4px solid #f9ab00}
tr.first>:first-child{border-left:4px solid #1a73e8}
tr.up>:first-child{border-left:4px solid #1e8e3e}
@media (max-width:760px){
body{padding:8px}
thead{display:none}table,tbody{display:block;width:auto}
tr{display:flex;flex-wrap:wrap;gap:0 14px;border-bottom:2px solid #dadce0;padding:4px 0 4px 6px}
th,td{display:block;border:0;padding:1px 0}td:empty{display:none}
tr>th[scope=row]{flex-basis:100%}td.why{flex-basis:100%}
td::before{color:#5f6368;font-size:12px}
.tag,.why{max-width:none}th.tag,td.why,td.share{min-width:0}
"""
    + _CARD_LABELS
    + """
tr.group th{flex-basis:100%;padding:8px 0 2px}
tr.failing,tr.stale,tr.first,tr.up{border-left:4px solid #1e8e3e}
tr.failing{border-left-color:#d93025}tr.stale{border-left-color:#f9ab00}
tr.first{border-left-color:#1a73e8}tbody tr[class]>:first-child{border-left:0}
}
"""
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# No script, no image, no frame, no form, nothing fetched: the one inline style sheet, by hash.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- the recent Not-delivered share ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """Not delivered among the reports that arrived over the last ``seconds``."""

    not_delivered: int
    reports: int
    seconds: float


class RecentOutcomes:
    """Per tag, its Delivered and Not delivered counts over the last hour, sampled every
    ``SAMPLE_STEP`` seconds (bounded: see ``WINDOW``), fed by every round's snapshot."""

    def __init__(self, window: float = WINDOW, step: float = SAMPLE_STEP) -> None:
        self.window = window
        self.step = step
        self._lock = threading.Lock()
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def record(self, snapshot: Snapshot) -> None:
        """Fold a round's snapshot in: a sample per tag read this round, the tags gone dropped."""
        now = snapshot.taken_at
        with self._lock:
            seen = set()
            for state in snapshot.tags:
                seen.add(state.tag)
                if not state.up or state.counts is None:
                    continue  # failing (its counts, if kept, are old) or in its first read
                done = _reported(state.counts.statuses)
                kept = self._samples.get(state.tag)
                if kept is None:
                    kept = self._samples[state.tag] = deque()
                elif kept and (kept[-1][1] > done[0] or kept[-1][2] > done[1]):
                    kept.clear()  # fewer than before: read anew, the old samples mean nothing
                if not kept or now - kept[-1][0] >= self.step:
                    kept.append((now, *done))
                while kept and kept[0][0] < now - self.window:
                    kept.popleft()
            for gone in set(self._samples) - seen:
                del self._samples[gone]

    def share(self, state: TagState, now: float) -> Share | None:
        """The share for ``state`` (the latest round's): None when it cannot be known (the tag
        not read, or read only once within the window)."""
        if not state.up or state.counts is None:
            return None
        with self._lock:
            kept = self._samples.get(state.tag)
            oldest = kept[0] if kept else None
        if oldest is None or oldest[0] >= now:
            return None
        delivered, not_delivered = _reported(state.counts.statuses)
        new_nd = not_delivered - oldest[2]
        reports = delivered - oldest[1] + new_nd
        if reports < 0 or new_nd < 0:
            return None
        return Share(new_nd, reports, now - oldest[0])

    def carry_from(self, other: RecentOutcomes) -> None:
        """Keep what ``other`` (the exporter's before a reload) sampled."""
        with other._lock:
            samples = {tag: deque(kept) for tag, kept in other._samples.items()}
        with self._lock:
            for tag, kept in samples.items():
                self._samples.setdefault(tag, kept)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(kept) for kept in self._samples.values())


def _reported(statuses: Mapping[str, int]) -> tuple[int, int]:
    return statuses.get(DELIVERED, 0), statuses.get(NOT_DELIVERED, 0)


# --- what the page shows ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadInfo:
    """The configuration's last (re)load: whether it succeeded, and when one last did."""

    successful: bool
    success_time: float


@dataclass(frozen=True)
class StatusView:
    """Everything one rendering of the page needs (no I/O, no lock held while rendering)."""

    snapshot: Snapshot
    now: float
    read: bool = True  # False: before the first round (the snapshot is Poller.pending()'s)
    probed: Sequence[TagState] = ()  # tags asked through /probe only
    shares: Mapping[str, Share] = field(default_factory=dict)
    source: str = ""  # the configuration's file (or <demo>)
    loaded_at: float | None = None  # when this configuration was loaded
    reload: ReloadInfo | None = None
    mode: str = "scrape"
    interval: float | None = None  # background mode: seconds between rounds
    title: str = "SMS Partner exporter"
    version: str = __version__


# Ranks: trouble first.
FAILING, STALE, FIRST, UP = 0, 1, 2, 3
_RANK_CLASS = {FAILING: "failing", STALE: "stale", FIRST: "first", UP: "up"}
_RANK_WORD = {FAILING: "failing", STALE: "stale or deferred", FIRST: "first read", UP: "up"}


def classify(state: TagState, read: bool = True) -> tuple[int, str]:
    """The tag's rank (trouble first) and its state in words, as HTML."""
    info = state.incremental
    if not state.up and state.error is not None:
        kept = " (last counts kept)" if state.counts is not None else ""
        return FAILING, f"failing{kept}"
    if not state.up:
        return FIRST, "not read yet" if read else "waiting for the first round"
    if info is not None and info.mode == "first_read":  # its reads deferred or not: progress
        ratio = info.read / info.known if info.known > 0 else 0.0
        percent = min(99, int(ratio * 100))
        return FIRST, (
            f'first read {percent} % <progress max="{max(info.known, 1)}" '
            f'value="{min(info.read, max(info.known, 1))}">{percent} %</progress>'
        )
    if state.behind_since is not None or state.deferred:
        since = f" since {_clock(state.behind_since)}" if state.behind_since is not None else ""
        reads = f", {state.deferred} read{'s' if state.deferred != 1 else ''}" * (
            state.deferred > 0
        )
        return STALE, f"deferred{since}{reads}"
    if state.counts is not None and not state.counts.complete:
        return STALE, f"incomplete ({_e(state.counts.truncation or 'cut short')})"
    return UP, "up"


def _clock(when: float) -> str:
    """``HH:MM:SS`` (UTC), the full date and time as its tooltip."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return (
        f'<time datetime="{iso}" title="{_stamp(when)}">'
        f"{time.strftime('%H:%M:%S', time.gmtime(when))}</time>"
    )


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return '<span class="muted">never</span>'
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return f'<time datetime="{iso}" title="{_stamp(when)}">{_age(now - when)} ago</time>'


def _tag_name(tag: str) -> str:
    shown = tag if len(tag) <= MAX_SHOWN_TAG else tag[:MAX_SHOWN_TAG] + "…"
    return _e(shown)


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}".replace(",", "\u202f")


def _share(share: Share | None) -> str:
    if share is None:
        return '<span class="muted" title="known once the tag was read twice">&ndash;</span>'
    if share.reports == 0:
        return f'<span class="muted">no report in {_age(share.seconds)}</span>'
    percent = 100.0 * share.not_delivered / share.reports
    return (
        f'{percent:.1f} % <span class="muted">of {_number(share.reports)} '
        f"report{'s' if share.reports != 1 else ''} in {_age(share.seconds)}</span>"
    )


def _reason(state: TagState) -> str:
    if state.error is None:
        if state.counts is not None and state.counts.truncation:
            return f"counts cut short: {_e(state.counts.truncation)}"
        return ""
    text = f"<b>{_e(state.error)}</b>"
    if state.error_message:
        # As the log line says it: the formatter's redaction (key, phone numbers) on top of the
        # scrubbing the message already had.
        text += f": <q>{_e(redact(state.error_message))}</q>"
    return text


def _row(state: TagState, view: StatusView, rank: int, words: str) -> str:
    counts = state.counts
    statuses: Mapping[str, int] = counts.statuses if counts is not None else {}
    other = sum(
        n for name, n in statuses.items() if name not in (DELIVERED, NOT_DELIVERED, WAITING)
    )
    others = ", ".join(
        f"{name}: {n}"
        for name, n in sorted(statuses.items())
        if name not in (DELIVERED, NOT_DELIVERED, WAITING)
    )
    known = counts is not None
    last_read = state.last_read
    if last_read is None and known and state.up and view.read:
        # A state without the scheduler's last_read (none is, after a round): the last good read.
        last_read = state.last_success
    cells = (
        ("Tag", "tag", _tag_name(state.tag)),
        ("State", "state", words),
        ("Delivered", "n", _number(statuses.get(DELIVERED, 0)) if known else ""),
        ("Not delivered", "n", _number(statuses.get(NOT_DELIVERED, 0)) if known else ""),
        ("Waiting", "n", _number(statuses.get(WAITING, 0)) if known else ""),
        ("Other", "n", f'<span title="{_e(others)}">{_number(other)}</span>' if known else ""),
        ("STOP", "n", _number(counts.stop) if counts is not None else ""),
        ("Not delivered, last hour", "share", _share(view.shares.get(state.tag))),
        ("Last read", "", _ago(last_read, view.now)),
        ("Last success", "", _ago(state.last_success, view.now)),
        ("Reason", "why", _reason(state)),
    )
    out = [f'<tr class="{_RANK_CLASS[rank]}">']
    for label, css, content in cells:
        if label == "Tag":
            out.append(f'<th scope="row" class="{css}">{content}</th>')
        else:
            klass = f' class="{css}"' if css else ""
            out.append(f"<td{klass}>{content}</td>")
    out.append("</tr>\n")
    return "".join(out)


def _sorted(states: Iterable[TagState], read: bool) -> list[tuple[int, str, TagState]]:
    ranked = [(*classify(state, read), state) for state in states]
    ranked.sort(key=lambda item: (item[0], item[2].tag))
    return ranked


def _table(
    groups: list[tuple[str | None, list[tuple[int, str, TagState]]]], view: StatusView
) -> str:
    head = "".join(f'<th scope="col">{_e(name)}</th>' for name in _COLUMNS)
    out = [f"<table>\n<thead><tr>{head}</tr></thead>\n"]
    for title, rows in groups:
        out.append("<tbody>\n")
        if title is not None:
            trouble = _group_summary(rows)
            out.append(
                f'<tr class="group"><th colspan="{len(_COLUMNS)}">{title}'
                f' <span class="muted">{trouble}</span></th></tr>\n'
            )
        out.extend(_row(state, view, rank, words) for rank, words, state in rows)
        out.append("</tbody>\n")
    out.append("</table>\n")
    return "".join(out)


def _group_summary(rows: list[tuple[int, str, TagState]]) -> str:
    by_rank: dict[int, int] = {}
    for rank, _, _ in rows:
        by_rank[rank] = by_rank.get(rank, 0) + 1
    parts = [f"{by_rank[rank]} {_RANK_WORD[rank]}" for rank in sorted(by_rank)]
    return f"{len(rows)} tag{'s' if len(rows) != 1 else ''}: " + ", ".join(parts)


def _groups(
    states: Sequence[TagState], read: bool
) -> list[tuple[str | None, list[tuple[int, str, TagState]]]]:
    """Static tags, then one group per template; the groups in trouble first."""
    by_template: dict[str | None, list[TagState]] = {}
    for state in states:
        by_template.setdefault(state.template, []).append(state)
    groups: list[tuple[int, str, str | None, list[tuple[int, str, TagState]]]] = []
    for template, members in by_template.items():
        rows = _sorted(members, read)
        worst = rows[0][0] if rows else UP
        if template is None:
            title = "Tags" if len(by_template) > 1 else None
            groups.append((worst, "", title, rows))
        else:
            title = f'Rolling tags of template <span class="tag">{_e(template)}</span>'
            groups.append((worst, template, title, rows))
    groups.sort(key=lambda group: (group[0], group[1]))
    return [(title, rows) for _, _, title, rows in groups]


def _summary(states: Sequence[TagState], read: bool) -> str:
    by_rank = dict.fromkeys((FAILING, STALE, FIRST, UP), 0)
    for state in states:
        by_rank[classify(state, read)[0]] += 1
    pills = [
        f'<span class="pill s-{_RANK_CLASS[rank] if by_rank[rank] else "none"}">'
        f"{by_rank[rank]} {_RANK_WORD[rank]}</span>"
        for rank in (FAILING, STALE, FIRST, UP)
        if by_rank[rank] or rank == FAILING
    ]
    return f'<div class="summary">{"".join(pills)}</div>\n'


def _purposes(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_e(name)} {n}" for name, n in sorted(counts.items()) if n)


def _round(view: StatusView) -> str:
    snapshot = view.snapshot
    if not view.read:
        return "no round yet"
    text = (
        f"ended {_ago(snapshot.taken_at, view.now)}, took {snapshot.duration:.1f} s; "
        f"{_number(snapshot.upstream_requests)} API requests since start"
    )
    budget: RoundBudget | None = snapshot.budget
    if budget is not None:
        spent = sum(budget.spent.values())
        deferred = sum(budget.deferred.values())
        allowed = "no request limit" if budget.requests is None else f"{budget.requests} requests"
        text += (
            f"<br>budget {allowed} in {budget.seconds:.1f} s; spent {spent}"
            + (f" ({_purposes(budget.spent)})" if spent else "")
            + f"; deferred {deferred}"
            + (f" ({_purposes(budget.deferred)})" if deferred else "")
        )
    return text


def _account(account: AccountState | None, now: float) -> str | None:
    if account is None:
        return None
    parts = []
    credit = account.credit
    if credit is not None:
        kinds = ", ".join(f"{_e(kind)} {value:g}" for kind, value in sorted(credit.credits.items()))
        parts.append(kinds or "no credit listed")
        if credit.balance is not None:
            parts.append(f"balance {credit.balance:.2f} {_e(credit.currency)}".rstrip())
        parts.append(f"read {_ago(account.last_success, now)}")
    else:
        parts.append("not read yet")
    if not account.up and account.last_success is not None:
        parts.append('<b class="s-failing">the latest reading failed</b>')
    return "; ".join(parts)


def _configuration(view: StatusView) -> str:
    text = f'<span class="tag">{_e(view.source or "?")}</span>'
    if view.loaded_at is not None:
        text += f", loaded {_ago(view.loaded_at, view.now)}"
    if view.reload is not None and not view.reload.successful:
        text += (
            '; <b class="s-failing">the last reload failed</b>: this configuration stays '
            "(the reason is in the log)"
        )
    mode = _e(view.mode)
    if view.interval is not None:
        mode += f", a round every {view.interval:g} s"
    return f"{text}; mode {mode}"


def render(view: StatusView) -> str:
    """The page, as one HTML document."""
    snapshot = view.snapshot
    title = _e(view.title)
    version = f" {_e(view.version)}" if view.version else ""
    facts = [
        ("Round", _round(view)),
        ("Account", _account(snapshot.account, view.now)),
        ("Configuration", _configuration(view)),
        ("Page", f"rendered {_stamp(view.now)}; times are UTC"),
    ]
    out = [
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{title}<span class=muted>{version}</span></h1>\n"
        '<p class="links"><a href="/metrics">Metrics</a><a href="/healthz">Health</a>'
        '<a href="/api/v1/tags">Tags (JSON)</a></p>\n',
        _summary(snapshot.tags, view.read),
        '<dl class="facts">\n',
    ]
    out.extend(f"<dt>{name}</dt><dd>{value}</dd>\n" for name, value in facts if value is not None)
    out.append("</dl>\n")
    if snapshot.tags:
        out.append(_table(_groups(snapshot.tags, view.read), view))
    else:
        out.append("<p>No tag is configured.</p>\n")
    if view.probed:
        out.append(
            "<h2>Probed tags</h2>\n<p class=muted>Tags asked through /probe only (not in the "
            "configuration's rounds), as their latest probe found them.</p>\n"
        )
        out.append(_table([(None, _sorted(view.probed, True))], view))
    out.append("</body>\n</html>\n")
    return "".join(out)


# --- the WSGI application --------------------------------------------------------------------


class StatusPage:
    """The WSGI application behind ``/``. ``probed`` gives the latest states of the tags
    ``/probe`` was asked for; ``reloads`` (set by the :class:`.reload.Reloader`) the last
    reload's outcome."""

    def __init__(
        self,
        poller: Poller,
        outcomes: RecentOutcomes,
        *,
        probed: Callable[[], Sequence[TagState]] = tuple,
        loaded_at: float | None = None,
    ) -> None:
        self.poller = poller
        self.outcomes = outcomes
        self.probed = probed
        self.loaded_at = time.time() if loaded_at is None else loaded_at
        self.reloads: Callable[[], ReloadInfo] | None = None

    def view(self) -> StatusView:
        """What the page shows now: the latest round's snapshot, never a new round."""
        latest = self.poller.latest
        snapshot = latest if latest is not None else self.poller.pending()
        now = time.time()
        names = {state.tag for state in snapshot.tags}
        probed = tuple(state for state in self.probed() if state.tag not in names)
        shares = {}
        for state in snapshot.tags:
            share = self.outcomes.share(state, snapshot.taken_at)
            if share is not None:
                shares[state.tag] = share
        config = self.poller.config
        background = config.collection.mode == "background"
        return StatusView(
            snapshot=snapshot,
            now=now,
            read=latest is not None,
            probed=probed,
            shares=shares,
            source=config.source,
            loaded_at=self.loaded_at,
            reload=self.reloads() if self.reloads is not None else None,
            mode=config.collection.mode,
            interval=config.collection.interval if background else None,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = render(self.view()).encode()
        start_response("200 OK", list(HEADERS))
        return [body]
