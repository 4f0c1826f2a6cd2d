"""Which JSON Schemas a tenant may use as an output validator.

The schema is free-form in the CRD (``x-kubernetes-preserve-unknown-fields``), so the
API server cannot look inside it; pydantic does, here, for the operator (which marks the
policy ``Ready=False`` and leaves it out of the router configuration), the router (which
refuses that policy's configuration fragment) and ``slmfleet up``. Refused:

* any reference that is not local (``$ref``/``$dynamicRef`` not starting with ``#``),
  and ``$id``/``$schema`` that would re-base references or select another dialect:
  a remote reference used to make every router replica fetch a URL of the tenant's
  choosing, blocking, with no timeout;
* ``pattern`` that RE2 cannot compile (the router evaluates ``pattern`` with RE2, never
  with a backtracking engine), and ``patternProperties`` altogether (the validator
  library matches those with Python's backtracking ``re`` in several keywords; use
  ``propertyNames: {pattern: ...}`` instead);
* schemas larger than :data:`MAX_SCHEMA_BYTES` or nested deeper than
  :data:`MAX_SCHEMA_DEPTH` (bounded work per validation);
* anything that is not a valid Draft 2020-12 schema.

The walk is conservative: a key named ``$ref`` inside ``enum`` or ``default`` data is
refused too.
"""

from __future__ import annotations

from typing import Any

import orjson

from .regex import re2_problem

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 32
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def _walk(node: Any, path: str, depth: int, problems: list[str]) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        problems.append(f"{path}: nested deeper than {MAX_SCHEMA_DEPTH} levels")
        return
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", depth + 1, problems)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = f"{path}.{key}"
        if key in _REF_KEYS and not (isinstance(value, str) and value.startswith("#")):
            problems.append(f"{here}: only local references (#...) are allowed")
        elif key == "$id" and not (isinstance(value, str) and value.startswith("#")):
            problems.append(f"{here}: $id is not allowed (it re-bases references)")
        elif key == "$schema" and value != DIALECT:
            problems.append(f"{here}: only {DIALECT} is supported")
        elif key == "pattern" and isinstance(value, str):
            problem = re2_problem(value)
            if problem:
                problems.append(f"{here}: {problem}")
        elif key == "patternProperties":
            problems.append(f"{here}: not supported (use propertyNames with a pattern)")
        _walk(value, here, depth + 1, problems)


def schema_problems(schema: Any) -> list[str]:
    """Reasons ``schema`` may not be used as a validator; empty when it may."""
    if not isinstance(schema, dict | bool):
        return ["a JSON Schema must be an object"]
    size = len(orjson.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        return [f"the schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed"]
    problems: list[str] = []
    _walk(schema, "jsonSchema", 0, problems)
    if problems:
        return problems[:5]
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [f"not a valid JSON Schema: {exc.message}"]
    return []


def check_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """pydantic validator: the schema, or ValueError naming what is wrong."""
    if schema is None:
        return None
    problems = schema_problems(schema)
    if problems:
        raise ValueError("; ".join(problems))
    return schema
