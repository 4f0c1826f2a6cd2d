"""Run the fleet's real parts on one machine: Triton from the pytriton wheel, CPU stand-ins."""

from .models import StandIn, default_fleet, write_model_repository
from .triton import TritonServer, TritonStartError

__all__ = ["StandIn", "TritonServer", "TritonStartError", "default_fleet", "write_model_repository"]
