"""Compiled forms of what tenants write: rule and validator regexes, JSON Schemas.

Every user regular expression runs on RE2 (linear time in the input, whatever the
pattern): ``(a+)+$`` on a long request used to stall the router's event loop for
tens of seconds. JSON Schemas are validated with a registry that retrieves nothing (a
remote ``$ref`` used to make the router fetch a tenant's URL, blocking, with no
timeout) and with ``pattern`` evaluated by RE2; ``api.schemacheck`` has refused every
schema the validator could not handle safely before it gets here. Keywords are not
regular expressions at all: see ``keywords``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry
from referencing.exceptions import NoSuchResource

from ..api.regex import compile_re2


def compile_user_regex(pattern: str, *, dotall: bool = False, ignorecase: bool = False) -> Any:
    """An RE2 pattern object (``search``, ``fullmatch``); ValueError if not RE2."""
    return compile_re2(pattern, dotall=dotall, ignorecase=ignorecase)


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


#: A registry that never fetches: every non-local reference is unresolvable.
NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_refuse)


def _re2_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and compile_re2(pattern).search(instance) is None:
        yield ValidationError(f"does not match {pattern!r}")


SafeValidator = validators.extend(Draft202012Validator, {"pattern": _re2_pattern})


class SchemaCheck:
    """``is_valid(document)``; a schema that fails at validation time (an unresolvable
    reference) rejects the answer instead of raising."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = SafeValidator(schema, registry=NO_RETRIEVAL)

    def is_valid(self, document: Any) -> bool:
        try:
            return bool(self._validator.is_valid(document))
        except Exception:  # Unresolvable, RE2 errors: the answer fails
            return False


def compile_json_schema(schema: dict[str, Any]) -> SchemaCheck:
    return SchemaCheck(schema)
