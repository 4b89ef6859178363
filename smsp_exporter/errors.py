"""Typed errors for everything that can go wrong while reading the SMS Partner API.

Each error carries a ``reason``: the short, low-cardinality label value used in
``sms_api_errors_total{reason=...}``. Messages are plain English, built by us: they never
contain the request URL (which holds the API key) nor any phone number.
"""

from __future__ import annotations

import re
from http import HTTPStatus

# What each documented SMS Partner error code means (the API's own messages are in French).
API_CODE_MESSAGES: dict[int, str] = {
    1: "the API key is missing from the request",
    3: "a message ID is required",
    4: "no message was found",
    10: "the API key was rejected: check api.key, api.key_file or SMSP_API_KEY",
    20: "the SMS Partner account is disabled",
    30: "the SMS Partner account is blocked",
    40: "API access is denied for this SMS Partner account",
    96: "this machine's IP address is not authorised to use the SMS Partner API",
    # Not a documented code: the API's (and the simulator's) answer to an unknown path, which
    # here means api.url is not the API's base URL.
    404: "no such endpoint: check api.url, the API's base URL (https://api.smspartner.fr/v1)",
}
# Every code the API's documentation lists for status retrieval and the account: each gets its
# own reason, api_code_<code>; any other code shares one, api_code_other, so that an upstream
# sending a new code every round (or one thousands of digits long) cannot add series forever.
DOCUMENTED_API_CODES = frozenset({1, 3, 4, 5, 6, 9, 10, 20, 30, 40, 50, 96})
# 404 too: not documented, but what an unknown path answers (api.url without /v1), and the one
# code whose own reason tells the operator where to look (the runbook's 404 entry).
REASON_API_CODES = DOCUMENTED_API_CODES | {404}
API_CODE_OTHER = "api_code_other"
# Likewise http_<status> only for the real HTTP error statuses (RFC 9110 and friends, as Python
# knows them), http_other for any other number an upstream may put in its status line.
KNOWN_HTTP_ERRORS = frozenset(s.value for s in HTTPStatus if 400 <= s.value <= 599)
HTTP_OTHER = "http_other"


# In the API's own error message: runs of words holding a digit (a phone number, "06 12 34 56
# 78", an echoed key) or very long words (a key without digits).
_SENSITIVE_WORDS = re.compile(r"\S*(?:\d|\S{25})\S*(?:\s+\S*(?:\d|\S{25})\S*)*")
MAX_API_MESSAGE = 200
# Characters of the API's message looked at at all (it may be megabytes long).
_MAX_SCANNED = 1024


def _whole_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, without a word cut in two: the part of a
    word left would no longer look like what it is (a key, a phone number)."""
    if len(text) <= limit:
        return text
    end = limit + 1
    while end and not text[end - 1].isspace():  # that word runs past the limit: drop it all
        end -= 1
    return text[: min(end, limit)].rstrip()


def scrub_api_message(text: str) -> str:
    """The API's free-text ``message`` as safe to log: no digits, no long tokens, bounded.

    Scrubbed *before* it is cut: cutting first could leave the first characters of an echoed
    key (``sk-LEAK`` of ``sk-LEAK...123``) with no digit in them, and so unscrubbed."""
    scrubbed = _SENSITIVE_WORDS.sub("<redacted>", _whole_words(text, _MAX_SCANNED))
    short = _whole_words(scrubbed, MAX_API_MESSAGE)
    return short + ("..." if len(short) < len(scrubbed) else "")


def detached(error: BaseException) -> BaseException:
    """``error`` without its traceback, cause or context, to be raised again elsewhere: the
    frames of a failed parse hold the body (up to ``api.max_response_bytes``), a JSON error its
    whole text, and an error stored where its own traceback leads (a tag's result, a future)
    makes a reference cycle that keeps them all alive until the cycle collector runs."""
    error.__traceback__ = error.__cause__ = error.__context__ = None
    return error


class UpstreamError(Exception):
    """Base class: a tag could not be collected."""

    reason = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiCodeError(UpstreamError):
    """The API answered ``success: false`` with an error code."""

    def __init__(self, code: int, api_message: str = "") -> None:
        self.code = code
        # Free text from upstream: it could quote a phone number or the key, so it is scrubbed.
        self.api_message = scrub_api_message(api_message)
        meaning = API_CODE_MESSAGES.get(code, "the API reported an error")
        shown = str(code) if -(10**9) < code < 10**9 else "(a number too long to show)"
        text = f"SMS Partner API error code {shown}: {meaning}"
        if self.api_message:
            text += f" (API said: {self.api_message!r})"
        super().__init__(text)
        self.reason = f"api_code_{code}" if code in REASON_API_CODES else API_CODE_OTHER


class HttpStatusError(UpstreamError):
    """An HTTP error status without a usable API error body."""

    retry_after: float | None = None  # seconds, from a Retry-After header

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"SMS Partner API answered HTTP {status}")
        self.reason = f"http_{status}" if status in KNOWN_HTTP_ERRORS else HTTP_OTHER


class RequestTimeout(UpstreamError):
    reason = "timeout"


class ConnectionFailed(UpstreamError):
    reason = "connection"


class InvalidResponse(UpstreamError):
    reason = "invalid_response"


class RedirectRefused(UpstreamError):
    """A 3xx answer: redirects are never followed (the key is in the query string)."""

    reason = "redirect"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{message}, a redirect: not followed (check api.url)")


class ResponseTooLarge(UpstreamError):
    """The answer passed ``api.max_response_bytes`` (after decompression)."""

    reason = "response_too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the answer is larger than {limit} bytes (api.max_response_bytes): reading stopped"
        )


class DeadlineExceeded(UpstreamError):
    """The collection round ran out of time (the scrape timeout or the refresh interval)."""

    reason = "deadline"


class NotSent(DeadlineExceeded):
    """The round's time ran out before the request was sent: nothing was asked of the API, so
    the read is deferred to a later round, not failed."""
