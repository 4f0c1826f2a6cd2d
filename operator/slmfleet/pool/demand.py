"""Demand per pool member, from the router's metrics (the autoscaler's collector).

A member is *wanted* while the router holds requests for it (``waiting``) or cascaded
requests away from it because it was not loaded (``unavailable``): a wanted member that
is not loaded gets loaded. It is *used* when requests ran on it in the window. Both
refresh its place in the LRU order.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..autoscale.scrape import Collector

#: Residency reacts within seconds: a short window of the router's counters.
WINDOW_S = 10.0


def demand(
    collector: Collector, members: Mapping[str, str], window_s: float = WINDOW_S
) -> tuple[set[str], set[str]]:
    """(wanted, used) member names; ``members`` maps a member name to its specialist id."""
    wanted: set[str] = set()
    used: set[str] = set()
    for name, sid in members.items():
        signals, _why = collector.signals(sid, triton_model=None, window_s=window_s)
        if signals is None or not signals.finite():
            continue
        if signals.waiting > 0 or signals.unavailable_rps > 0:
            wanted.add(name)
        if signals.in_flight > 0 or signals.request_rps > 0:
            used.add(name)
    return wanted, used
