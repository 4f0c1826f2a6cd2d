"""User regular expressions are RE2: linear time, refused at admission when not RE2.

A backtracking engine (Python's ``re``) takes exponential time on patterns such as
``(a+)+$``; one such pattern in one tenant's rule used to stall every request on the
router's event loop. RE2 matches in time linear in the input, whatever the pattern,
and bounds the memory of a compiled pattern. The same check runs in three places:

* the API server: Kubernetes CEL's ``matches()`` compiles its argument with Go's
  ``regexp`` (RE2 syntax), so a CEL rule that matches the empty string *against* the
  user's pattern fails to evaluate on anything RE2 cannot compile, and the API server
  refuses the object naming the field;
* pydantic (``Re2Pattern``): the router's configuration and ``slmfleet up`` manifests;
* the router, which compiles with :func:`compile_re2` only.

Go's ``regexp`` and RE2 share one syntax; the few escapes one accepts and the other
does not are refused by whichever sees the pattern first, never run by a backtracking
engine.
"""

from __future__ import annotations

from typing import Annotated, Any

import re2
from pydantic import AfterValidator, Field

#: Longest user pattern; RE2's compile time and memory are linear in it.
MAX_PATTERN_LENGTH = 1024
#: Memory a compiled pattern may use (RE2's default is 8 MiB; the DFA cache lives in it).
MAX_PATTERN_MEMORY = 8 << 20

#: ``matches()`` errors out (rather than returning false) when its argument does not
#: compile, and an evaluation error refuses the object; both sides of the ``||`` error
#: together, so CEL's error-absorbing ``||`` cannot turn the error into ``true``.
RE2_CEL_RULE = "''.matches(self) || !''.matches(self)"
RE2_MESSAGE = "must be an RE2 regular expression (no lookaround or backreferences)"


def _options(*, dotall: bool = False, ignorecase: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors are raised, and RE2's own logging goes to stderr
    options.max_mem = MAX_PATTERN_MEMORY
    options.dot_nl = dotall
    options.case_sensitive = not ignorecase
    return options


def compile_re2(pattern: str, *, dotall: bool = False, ignorecase: bool = False) -> Any:
    """Compile a user pattern with RE2; ``ValueError`` (with RE2's reason) if it cannot."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, _options(dotall=dotall, ignorecase=ignorecase))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"not an RE2 regular expression: {reason}") from None


def re2_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or None."""
    try:
        compile_re2(pattern)
    except ValueError as exc:
        return str(exc)
    return None


def _check(pattern: str) -> str:
    compile_re2(pattern)
    return pattern


#: A user regular expression: RE2 syntax, checked by the API server and by pydantic.
Re2Pattern = Annotated[
    str,
    AfterValidator(_check),
    Field(
        min_length=1,
        max_length=MAX_PATTERN_LENGTH,
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": RE2_CEL_RULE, "message": RE2_MESSAGE}]
        },
    ),
]
