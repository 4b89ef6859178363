"""A fake of the SMS Partner HTTP API, served over real HTTP on loopback.

It answers ``GET /v1/bulk-status-by-tag`` (paginated) and ``GET /v1/me`` in the shapes of the
real API, checks the API key as it does (codes 1 and 10; an unknown tag is code 4), and can
inject every failure the exporter must survive. It serves the test suite, the demo and the
benchmarks: HTTP/1.1 keep-alive, one thread per connection, quiet, standard library only.

What it models:

- *campaigns* (:class:`TagSpec`): a tag's messages are sent over time, each reported later as
  ``Delivered`` or ``Not delivered`` (or never: ``Waiting``), some recipients reply STOP; all
  deterministic from a seed, and long-lived tags (a send rate, a start in the past, months of
  history) as well as one-off campaigns; listed oldest or newest first, or by report date
  (:mod:`.campaigns`);
- a simulated *clock* that runs, runs faster, or is frozen and advanced by hand (:mod:`.clock`);
- *dialects*: other plausible encodings of the same answer (:mod:`.dialects`);
- *faults*: HTTP errors, rate limits, API errors, delays, resets, HTML, cut or malformed JSON,
  pages ignored or short (:mod:`.faults`);
- the API's *answers*, and the choices made where the API documents nothing (:mod:`.answers`);
- *control endpoints* ``/_sim/…`` to drive it from another process (:mod:`.control`), and
  request *statistics* for the tests and benchmarks (:mod:`.stats`).

:class:`Simulator` (:mod:`.core`) wires the parts together; :mod:`.server` is the HTTP plumbing;
command line: ``python -m smsp_exporter.simulator --help`` (:mod:`.command`).
"""

from .campaigns import DEFAULT_START_TIME, DEMO_TAGS, LISTING_ORDERS, Message, TagSpec
from .command import main
from .core import Simulator
from .dialects import DEMO_DIALECTS, DIALECTS, Dialect
from .faults import FAULT_KINDS, WRONG_SHAPE_VARIANTS

__all__ = [
    "DEFAULT_START_TIME",
    "DEMO_DIALECTS",
    "DEMO_TAGS",
    "DIALECTS",
    "FAULT_KINDS",
    "LISTING_ORDERS",
    "WRONG_SHAPE_VARIANTS",
    "Dialect",
    "Message",
    "Simulator",
    "TagSpec",
    "main",
]
