"""HTTP for telemetry: raw ASGI handlers the router mounts (``TelemetryHTTP.handle``)."""

from .api import Services
from .app import TelemetryHTTP

__all__ = ["Services", "TelemetryHTTP"]
