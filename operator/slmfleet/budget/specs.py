"""What the budget arithmetic reads of a spend window and a ladder step.

Two sources describe them: the Budget CRD (``api.budget``, for the status loop) and the
router configuration (``api.routerconfig``, for the router). They are different types
on purpose (the router protocol does not change with a CRD version); both have these
attributes, so the pure parts here take either.
"""

from __future__ import annotations

from typing import Protocol


class WindowSpec(Protocol):
    @property
    def window(self) -> str: ...

    @property
    def time_zone(self) -> str | None: ...

    @property
    def limit_usd(self) -> float | None: ...

    @property
    def limit_tokens(self) -> int | None: ...

    @property
    def action(self) -> str: ...


class StepSpec(Protocol):
    @property
    def at_percent(self) -> int: ...

    @property
    def action(self) -> str: ...
