"""What the upstream can make the exporter export stays bounded, whatever it sends.

The parser refuses a page with more than :data:`~smsp_exporter.parse.MAX_DISTINCT_STATUSES`
distinct statuses, but a tag whose every page brings new ones would still add a series to
``sms_status_total`` per status: thousands. :func:`bounded_result` applies the same cap to a
tag's whole result, on its way into the snapshot (``Poller._fold``), however it was collected.
A tag over it is refused, not folded: its answers are judged broken (reason
``invalid_response``), like a page over the cap, rather than exported with some statuses
merged, which would change meaning from one round to the next. (Error reasons are bounded where
they are made: see :mod:`.errors`.)
"""

from __future__ import annotations

from .client import TagCounts
from .errors import InvalidResponse, UpstreamError
from .parse import MAX_DISTINCT_STATUSES

# Distinct statuses one tag may have (all its pages together): the same as one page.
MAX_TAG_STATUSES = MAX_DISTINCT_STATUSES


def bounded_result(result: TagCounts | UpstreamError) -> TagCounts | UpstreamError:
    """``result``, or the error it becomes when it has too many distinct statuses."""
    if isinstance(result, UpstreamError) or len(result.statuses) <= MAX_TAG_STATUSES:
        return result
    return InvalidResponse(
        f"more than {MAX_TAG_STATUSES} distinct statuses in the tag's pages together "
        f"({len(result.statuses)}): the answers are judged broken"
    )
