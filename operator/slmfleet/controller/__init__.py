"""The kopf operator: ``kopf run -m slmfleet.controller``.

Importing this package registers every handler; ``lifecycle`` starts the shared
runtime, ``specialist`` reconciles SLMSpecialists into Triton deployments, and
``fleet`` renders the router configuration and the status of policies and budgets.
"""

from . import fleet, lifecycle, specialist

__all__ = ["fleet", "lifecycle", "specialist"]
