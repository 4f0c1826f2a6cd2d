"""What the shared ledger keeps while Redis is down: whether it is down, when to try it
again, and the spend counted meanwhile that waits for replay.

Down is a state, not a timer: it starts at the first failure of a shared call and ends
at the first success. Failed probes during an outage change nothing but the time of the
next probe, so the fail-open baseline is built once per outage (at up -> down) and the
warning is logged once; rebuilding it at every failed probe would forget what this
replica counted since and let it admit past a cap once a second. At most one probe is
in flight at a time and no request waits for it (``RedisLedger`` runs it in the
background), so an outage costs the requests that arrive during it nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .amounts import Amount
from .ledger import WindowCall, WindowKey, WindowState
from .specs import WindowSpec


class Availability:
    """Up or down, with one probe at a time after ``retry_interval_s``. Pure state: the
    caller does the I/O and reports each shared call's outcome."""

    def __init__(self, retry_interval_s: float, monotonic: Callable[[], float]) -> None:
        self.retry_interval_s = retry_interval_s
        self.monotonic = monotonic
        self.down = False
        self.probing = False
        self.next_probe = 0.0
        self.last_error = ""

    def failed(self, error: str) -> bool:
        """A shared call failed. True only at the transition up -> down."""
        self.last_error = error
        self.next_probe = self.monotonic() + self.retry_interval_s
        went_down, self.down = not self.down, True
        return went_down

    def succeeded(self) -> bool:
        """A shared call answered. True only at the transition down -> up."""
        came_up, self.down = self.down, False
        return came_up

    def start_probe(self) -> bool:
        """Whether the caller should probe now (down, due, none in flight); if so, the
        probe is in flight until ``end_probe``."""
        if not self.down or self.probing or self.monotonic() < self.next_probe:
            return False
        self.probing = True
        return True

    def end_probe(self) -> None:
        self.probing = False


@dataclass
class Pending:
    """Spend counted while Redis was down, for one window and bucket."""

    replay_id: str
    budget_id: str
    spec: WindowSpec
    bucket: int
    amount: Amount
    sealed: bool = False
    """Tried once: its id may have counted already, so it never grows again."""


@dataclass(frozen=True)
class Orphan:
    """A settle of a reservation Redis holds, made while Redis did not answer."""

    reservation_id: str
    actual: Amount
    calls: list[WindowCall]
    """The windows as they were at the settle (its bucket)."""


def outage_baseline(
    known: Mapping[WindowKey, WindowState],
    batches: Iterable[Pending],
    orphans: Iterable[Orphan],
) -> dict[WindowKey, Amount]:
    """The spend a fail-open replica starts an outage from, per window: what Redis last
    said (spent + reserved) plus what this replica counted that Redis has not seen yet
    (replays still waiting from an earlier outage). It errs high: an orphan's hold is
    in ``reserved`` and its actual is added again."""
    base: dict[WindowKey, Amount] = {k: st.spent + st.reserved for k, st in known.items()}
    for p in batches:
        key = (p.budget_id, p.spec.window)
        base[key] = base.get(key, Amount()) + p.amount
    for o in orphans:
        for c in o.calls:
            base[c.key] = base.get(c.key, Amount()) + o.actual
    return base
