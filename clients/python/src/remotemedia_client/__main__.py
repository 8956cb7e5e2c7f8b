"""``python -m remotemedia_client``: the ``remotemedia`` command line."""

from remotemedia_client.cli import entry

entry()
