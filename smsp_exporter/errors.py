"""Typed errors for everything that can go wrong while reading the SMS Partner API.

Each error carries a ``reason``: the short, low-cardinality label value used in
``sms_api_errors_total{reason=...}``. Messages are plain English, built by us: they never
contain the request URL (which holds the API key) nor any phone number.
"""

from __future__ import annotations

import re

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


# In the API's own error message: runs of words holding a digit (a phone number, "06 12 34 56
# 78", an echoed key) or very long words (a key without digits).
_SENSITIVE_WORDS = re.compile(r"\S*(?:\d|\S{25})\S*(?:\s+\S*(?:\d|\S{25})\S*)*")
MAX_API_MESSAGE = 200


def scrub_api_message(text: str) -> str:
    """The API's free-text ``message`` as safe to log: no digits, no long tokens, bounded."""
    return _SENSITIVE_WORDS.sub("<redacted>", text[:MAX_API_MESSAGE])


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
        text = f"SMS Partner API error code {code}: {meaning}"
        if self.api_message:
            text += f" (API said: {self.api_message!r})"
        super().__init__(text)
        self.reason = f"api_code_{code}"


class HttpStatusError(UpstreamError):
    """An HTTP error status without a usable API error body."""

    retry_after: float | None = None  # seconds, from a Retry-After header

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"SMS Partner API answered HTTP {status}")
        self.reason = f"http_{status}"


class RequestTimeout(UpstreamError):
    reason = "timeout"


class ConnectionFailed(UpstreamError):
    reason = "connection"


class InvalidResponse(UpstreamError):
    reason = "invalid_response"


class DeadlineExceeded(UpstreamError):
    """The collection round ran out of time (the scrape timeout or the refresh interval)."""

    reason = "deadline"
