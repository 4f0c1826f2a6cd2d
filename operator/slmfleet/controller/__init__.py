"""The kopf operator: ``kopf run -m slmfleet.controller``.

Importing this package registers every handler; ``lifecycle`` starts the shared
runtime and the supervisor of the loops listed in ``loops`` (one line per loop),
``specialist`` reconciles SLMSpecialists into Triton deployments, and ``fleet`` renders
the router configuration fragments and the status of policies and budgets.
"""

from . import fleet, lifecycle, loops, specialist

__all__ = ["fleet", "lifecycle", "loops", "specialist"]
