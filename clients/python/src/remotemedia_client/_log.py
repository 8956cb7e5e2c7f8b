"""structlog logging that stays quiet until the application asks for it.

Events go through the standard ``logging`` logger ``remotemedia_client``, which has only a
``NullHandler``: nothing is printed unless the application configures logging (or calls
:func:`enable_logging`). Events never carry tokens or samples.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LOGGER_NAME = "remotemedia_client"
_stdlib = logging.getLogger(LOGGER_NAME)
_stdlib.addHandler(logging.NullHandler())

log: structlog.stdlib.BoundLogger = structlog.wrap_logger(
    _stdlib,
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.render_to_log_kwargs,
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def enable_logging(level: int | str = logging.INFO, *, json: bool = False, stream: Any = None) -> None:
    """Prints this package's events to ``stream`` (stderr by default), as key=value lines or
    JSON lines. For anything more, configure the ``remotemedia_client`` logger yourself."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.stdlib.add_log_level,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
        )
    )
    for h in list(_stdlib.handlers):
        if not isinstance(h, logging.NullHandler):
            _stdlib.removeHandler(h)
    _stdlib.addHandler(handler)
    _stdlib.setLevel(level)
