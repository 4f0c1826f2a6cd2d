"""Telemetry that closes the loop: the decision log, feedback, the human-review queue,
its console, and OpenTelemetry traces.

Everything here is built to plug into the router without slowing it down:

- ``record``: the decision record (what the router decided about one request) and how
  it is built from the router's ``Decision``; ``privacy`` decides what of the prompt and
  answer is kept.
- ``store``: one ``Store`` interface with SQLite (one router, ``slmfleet up``) and
  PostgreSQL (a cluster) backends, holding decisions, feedback and review cases.
- ``writer``: the decision writer, off the request path (bounded buffer, batches, a
  thread), never blocking the caller.
- ``review``: the human-review queue (file a case durably, claim with a lease,
  resolve, release, escalate, SLA, webhooks, answer modes).
- ``web``: raw ASGI handlers the router mounts (``/v1/feedback``, ``/v1/cases/*``,
  ``/v1/review/*``, the ``/review`` console); ``server`` runs them standalone.
- ``tracing``: OpenTelemetry spans, off unless ``OTEL_*`` turns them on.
"""
