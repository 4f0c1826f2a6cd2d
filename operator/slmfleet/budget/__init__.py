"""Budgets that hold across router replicas.

Pure parts: ``windows`` (rolling and calendar arithmetic, DST-correct), ``ladder``
(spend fraction -> step), ``amounts`` (worst-case and actual cost of a call),
``status`` (ledger state -> Budget.status). Shells: ``ledger`` (the interface and the
in-process ledger), ``redis_ledger`` (atomic Lua scripts on Redis/Valkey, fail modes),
``statusloop`` (writes Budget.status), ``tokens`` (exact token counts: a tokenizer and
the Triton vLLM backend's ``num_output_tokens`` tensors). See docs/budgets.md.
"""

from .inprocess import InProcessLedger
from .ladder import LadderDecision, decide
from .ledger import (
    Admission,
    Amount,
    BudgetLimits,
    Ledger,
    Reservation,
    Settlement,
    WindowState,
)

__all__ = [
    "Admission",
    "Amount",
    "BudgetLimits",
    "InProcessLedger",
    "LadderDecision",
    "Ledger",
    "Reservation",
    "Settlement",
    "WindowState",
    "decide",
]
