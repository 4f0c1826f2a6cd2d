"""The router's Triton client: codec (pure), stream multiplexer, replicas and balancing,
the pool, and EndpointSlice discovery."""

from .codec import Piece, build_request, parse_response, read_message
from .mux import SharedStream
from .pool import TritonPool
from .replicas import SHARED_STREAMS, Replica, ReplicaSet

__all__ = [
    "SHARED_STREAMS",
    "Piece",
    "Replica",
    "ReplicaSet",
    "SharedStream",
    "TritonPool",
    "build_request",
    "parse_response",
    "read_message",
]
