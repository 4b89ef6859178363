"""A fake of the SMS Partner HTTP API on loopback (see :mod:`.core`)."""

from .core import (
    DEFAULT_START_TIME,
    DEMO_DIALECTS,
    DEMO_TAGS,
    DIALECTS,
    FAULT_KINDS,
    WRONG_SHAPE_VARIANTS,
    Message,
    Simulator,
    TagSpec,
    main,
)

__all__ = [
    "DEFAULT_START_TIME",
    "DEMO_DIALECTS",
    "DEMO_TAGS",
    "DIALECTS",
    "FAULT_KINDS",
    "WRONG_SHAPE_VARIANTS",
    "Message",
    "Simulator",
    "TagSpec",
    "main",
]
