"""The account's credit, from ``GET /v1/me``, read at most once per collection round.

The answer (see the API notes) is ``{"success": true, "code": 200, "user": {...}, "credits":
{"creditSms": 1234, "creditSmsECO": 2345, "creditHlr": 0, "toSend": 0, "solde": "56.78",
"currency": "EUR", "balance": "56.78"}}``. Credits become ``sms_account_credits{kind}``
(``creditSms`` -> ``sms``, ``creditSmsECO`` and its other spelling ``creditSmsLowCost`` ->
``sms_eco``, ``creditHlr`` -> ``hlr``, any other ``creditXxx`` -> ``xxx``); the money left
(``balance``, else ``solde``, a decimal string) becomes ``sms_account_balance{currency}``.
Only the ``credits`` object is read: the user's name never leaves the process.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .client import SmsPartnerClient
from .errors import (
    DeadlineExceeded,
    HttpStatusError,
    InvalidResponse,
    UpstreamError,
    detached,
)
from .parse import check_success

ENDPOINT = "me"
_KNOWN_KINDS = {"creditSms": "sms", "creditSmsECO": "sms_eco", "creditSmsLowCost": "sms_eco"}
_CREDIT_FIELD = re.compile(r"credit([A-Z][A-Za-z0-9]{0,30})")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_MAX_KINDS = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credit:
    credits: Mapping[str, float]  # kind -> units left
    balance: float | None
    currency: str


@dataclass(frozen=True, slots=True)
class AccountState:
    """What is known of the account after the latest round."""

    up: bool
    credit: Credit | None  # the latest good reading (None until one succeeded)
    last_success: float | None = None
    errors: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidResponse(f"field {name!r} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer of 309 digits or more
        raise InvalidResponse(f"field {name!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidResponse(f"field {name!r} is not a finite number")
    return number


def parse_me(body: bytes) -> Credit:
    """The credit in a ``/v1/me`` answer; raises an :class:`UpstreamError` otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidResponse("the answer is not valid JSON") from None
    credits = check_success(doc).get("credits")
    if not isinstance(credits, dict):
        raise InvalidResponse("field 'credits' is missing or not an object")
    kinds: dict[str, float] = {}
    for name, value in credits.items():
        match = _CREDIT_FIELD.fullmatch(str(name))
        if match is None or len(kinds) >= _MAX_KINDS:
            continue
        kind = _KNOWN_KINDS.get(name) or _snake(match.group(1))
        kinds[kind] = _number(value, name)
    money = credits.get("balance", credits.get("solde"))
    balance = None if money is None else _number(money, "balance")
    currency = credits.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        currency = ""
    return Credit(MappingProxyType(kinds), balance, currency.upper())


class AccountReader:
    """Reads the credit once per round, concurrently with the tags, and keeps the counters."""

    def __init__(self, client: SmsPartnerClient) -> None:
        self.client = client
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="smsp-account")
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._credit: Credit | None = None
        self._last_success: float | None = None
        self._failing: str | None = None  # reason of the failure logged last, None when up

    def start(self, deadline: float) -> Future[Credit]:
        return self._executor.submit(self._read, deadline)

    def _read(self, deadline: float) -> Credit:
        status, body = self.client.get_endpoint(ENDPOINT, deadline)
        try:
            return parse_me(body)
        except UpstreamError as err:
            failure = detached(err)  # raised below, out of the frames that hold the body
        del body
        if isinstance(failure, InvalidResponse) and status >= 400:
            raise HttpStatusError(status)
        raise failure

    def finish(self, future: Future[Credit], deadline: float) -> AccountState:
        """Wait for the reading started by :meth:`start` (until ``deadline``) and fold it in."""
        try:
            credit = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except UpstreamError as err:
            return self._fold(err)
        except TimeoutError:
            future.cancel()
            return self._fold(DeadlineExceeded("the round ran out of time"))
        except Exception as err:  # a bug must not take the tags down
            return self._fold(InvalidResponse(f"unexpected error ({type(err).__name__})"))
        return self._fold(credit)

    def _fold(self, result: Credit | UpstreamError) -> AccountState:
        with self._lock:
            if isinstance(result, UpstreamError):
                self._errors[result.reason] = self._errors.get(result.reason, 0) + 1
                up = False
                if result.reason != self._failing:  # logged once per change, not every round
                    log.warning(
                        "reading the account's credit failed: %s",
                        result.message,
                        extra={"reason": result.reason},
                    )
                self._failing = result.reason
            else:
                self._credit, self._last_success, up = result, time.time(), True
                if self._failing is not None:
                    log.info("reading the account's credit works again")
                self._failing = None
            return AccountState(
                up, self._credit, self._last_success, MappingProxyType(dict(self._errors))
            )

    def pending(self) -> AccountState:
        """Before this reader's first reading: down, with what :meth:`carry_from` kept."""
        with self._lock:
            return AccountState(
                False, self._credit, self._last_success, MappingProxyType(dict(self._errors))
            )

    def carry_from(self, other: AccountReader) -> None:
        """Keep what ``other`` (the reader before a reload) knew: the last reading stays
        exported while readings fail, and the error counters keep counting."""
        with other._lock:
            credit, last_success, errors = other._credit, other._last_success, dict(other._errors)
        with self._lock:
            self._credit, self._last_success, self._errors = credit, last_success, errors

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def account_families(state: AccountState) -> Iterator[Metric]:
    """The account's metric families (the credit stays exported while a reading fails: its
    ``sms_account_up`` is then 0)."""
    up = GaugeMetricFamily(
        "sms_account_up", "1 if the last reading of the account's credit (GET /v1/me) succeeded"
    )
    up.add_metric([], 1.0 if state.up else 0.0)
    yield up
    errors = CounterMetricFamily(
        "sms_account_errors",
        "Failed readings of the account's credit, by reason (as sms_api_errors_total)",
        labels=["reason"],
    )
    for reason, count in sorted(state.errors.items()):
        errors.add_metric([reason], float(count))
    yield errors
    if state.last_success is not None:
        yield GaugeMetricFamily(
            "sms_account_last_success_timestamp_seconds",
            "Unix time of the last successful reading of the account's credit",
            value=state.last_success,
        )
    credit = state.credit
    if credit is None:
        return
    credits = GaugeMetricFamily(
        "sms_account_credits",
        "Credits left on the SMS Partner account, by kind (sms, sms_eco, hlr...)",
        labels=["kind"],
    )
    for kind, value in sorted(credit.credits.items()):
        credits.add_metric([kind], value)
    yield credits
    if credit.balance is not None:
        balance = GaugeMetricFamily(
            "sms_account_balance",
            "Money left on the SMS Partner account, in the currency of the label",
            labels=["currency"],
        )
        balance.add_metric([credit.currency], credit.balance)
        yield balance
