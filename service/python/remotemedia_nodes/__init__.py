"""Python nodes for the RemoteMedia pipeline service.

The server's embedded interpreter imports this package at start-up, then every plug-in
directory given with ``--python-nodes-path``. Declare a node with ``@node("TypeName")`` on a
class with a ``process`` method; its ``__init__`` signature, with ``Param`` annotations, and its
``inputs``/``outputs`` ports are its declaration. See :mod:`remotemedia_nodes.registry` and
:mod:`remotemedia_nodes.declare`.
"""

import os as _os

# numpy's and scipy's BLAS libraries start a pool of spinning threads per core by default; in a
# server whose cores belong to the request handlers that costs far more than it gives. One
# thread each, unless the operator says otherwise (set before numpy is first imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

from remotemedia_nodes import builtin as _builtin  # noqa: E402  (registers the built-in nodes)
from remotemedia_nodes import models  # noqa: E402
from remotemedia_nodes.audio import Audio, from_float  # noqa: E402
from remotemedia_nodes.declare import Above, Exclusive, Param, Port  # noqa: E402
from remotemedia_nodes.errors import (  # noqa: E402
    Cancelled,
    InvalidInput,
    MemoryLimitExceeded,
    NodeError,
    ParamError,
    ParamErrors,
    TransientError,
    InvalidRequest,
    UnsupportedAudio,
)
from remotemedia_nodes.registry import Node, declarations, node, node_types, reserve_output  # noqa: E402

__all__ = [
    "Above",
    "Audio",
    "Cancelled",
    "Exclusive",
    "InvalidInput",
    "MemoryLimitExceeded",
    "Node",
    "NodeError",
    "Param",
    "ParamError",
    "ParamErrors",
    "Port",
    "TransientError",
    "InvalidRequest",
    "UnsupportedAudio",
    "declarations",
    "from_float",
    "models",
    "node",
    "node_types",
    "reserve_output",
]
del _builtin, _var
