"""Warning Events for objects that turn Stalled: ``kubectl describe`` and event-based
alerting see what the ``Stalled`` condition says, once per transition.

The status writers (fleet.py for policies and budgets, pools.py for pools and their
members, specialist.py for specialists) call :func:`warn_stalled` after a status write
that succeeded; :func:`~slmfleet.render.conditions.stalled_news` decides, purely,
whether that write is news.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

from ..autoscale.record import event_body
from ..clients.kube import ApiError, KubeClient
from ..render.conditions import stalled_news

log = logging.getLogger("slmfleet.events")

#: The component Events are reported by (kopf's own failure Events say "kopf").
COMPONENT = "slmfleet-operator"
INSTANCE = socket.gethostname()


async def warn_stalled(
    kube: KubeClient,
    kind: str,
    body: dict[str, Any],
    previous: Iterable[dict[str, Any]] | None,
    desired: Iterable[dict[str, Any]],
    *,
    already_reported: Iterable[str] = (),
) -> None:
    """Post a Warning Event (reason and message of the Stalled condition) about ``body``
    when ``desired`` turns it Stalled; reasons in ``already_reported`` have Events of
    their own. An Event is a courtesy: a failure to post it is logged, never raised."""
    news = stalled_news(previous, desired)
    if news is None or news[0] in set(already_reported):
        return
    reason, message = news
    event = event_body(body, "Warning", reason, message, INSTANCE, kind=kind, component=COMPONENT)
    try:
        await kube.create(event)
    except (ApiError, OSError) as err:
        meta = body.get("metadata") or {}
        log.warning("%s %s/%s: event not recorded: %s", kind, meta.get("namespace"),
                    meta.get("name"), err)  # fmt: skip
