"""Python client for the RemoteMedia pipeline service."""

from remotemedia_client import pb
from remotemedia_client.client import PROTOCOL_VERSION, AsyncClient, Client

__all__ = ["PROTOCOL_VERSION", "AsyncClient", "Client", "pb"]
__version__ = "0.1.0"
