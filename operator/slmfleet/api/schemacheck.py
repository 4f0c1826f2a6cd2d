"""Which JSON Schemas a tenant may use as an output validator.

The schema is free-form in the CRD (``x-kubernetes-preserve-unknown-fields``), so the
API server cannot look inside it; pydantic does, here, for the operator (which marks the
policy ``Ready=False`` and leaves it out of the router configuration), the router (which
refuses that policy's configuration fragment) and ``slmfleet up``. Refused:

* any reference that is not local (``$ref``/``$dynamicRef`` not starting with ``#``),
  and ``$id``/``$schema`` that would re-base references or select another dialect:
  a remote reference used to make every router replica fetch a URL of the tenant's
  choosing, blocking, with no timeout;
* ``$dynamicRef``/``$recursiveRef`` altogether, and a ``$ref`` that is not a JSON
  pointer into the schema itself (``#`` or ``#/...``; anchors are not resolved);
* references that are recursive, or that expand the schema past
  :data:`MAX_EXPANDED_NODES` objects or :data:`MAX_EXPANDED_DEPTH` levels: the
  validator evaluates a ``$ref`` by evaluating its target again, so a 2 KB chain of
  ``$defs`` each referencing the next twice cost 2^30 evaluations per answer, on the
  router's event loop (every tenant waited). Counted with memoisation: the check
  itself is linear in the written schema;
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
from urllib.parse import unquote

import orjson

from .regex import re2_problem

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 32
#: Objects and arrays in the schema with every ``$ref`` replaced by its target: what
#: one validation may visit per node of the answer. A written 32 KiB schema can hold
#: more than this, so references add no power over writing the schema out.
MAX_EXPANDED_NODES = 4096
MAX_EXPANDED_DEPTH = 64
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
        elif key in ("$dynamicRef", "$recursiveRef"):
            problems.append(f"{here}: not supported (use $ref)")
        elif key == "$ref" and not (value == "#" or value.startswith("#/")):
            problems.append(f"{here}: only JSON-pointer references (#/...) are allowed")
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


class _Refused(Exception):
    pass


def _resolve(root: Any, ref: str) -> Any:
    """The node a ``#/...`` JSON pointer names in ``root`` (RFC 6901, percent-decoded)."""
    node = root
    for raw in unquote(ref[1:]).split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _Refused(f"$ref {ref!r} does not resolve within the schema")
    return node


def _expansion_problem(root: Any) -> str | None:
    """Why the schema with its references expanded is too large, or None.

    Memoised per node (by identity: every target is a node of ``root``), so a chain of
    references that doubles at each step costs one visit per written node here. The
    height is memoised too: a definition first met at the top level of ``$defs`` is
    still as deep as the chain it ends.
    """
    memo: dict[int, tuple[int, int]] = {}  # id -> (expanded objects, expanded height)
    open_nodes: set[int] = set()

    def expand(node: Any, depth: int) -> tuple[int, int]:
        if not isinstance(node, dict | list):
            return 0, 0
        key = id(node)
        if key in memo:
            return memo[key]
        if key in open_nodes:
            raise _Refused("recursive $ref is not supported")
        if depth > MAX_EXPANDED_DEPTH:
            raise _Refused(f"nested deeper than {MAX_EXPANDED_DEPTH} levels through $ref")
        open_nodes.add(key)
        children = list(node.values() if isinstance(node, dict) else node)
        ref = node.get("$ref") if isinstance(node, dict) else None
        if isinstance(ref, str):
            children.append(_resolve(root, ref))
        total, height = 1, 0
        for child in children:
            child_total, child_height = expand(child, depth + 1)
            total += child_total
            height = max(height, child_height)
        open_nodes.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise _Refused(
                f"$ref expands the schema past {MAX_EXPANDED_NODES} objects "
                "(each reference is validated as a copy of its target)"
            )
        if height + 1 > MAX_EXPANDED_DEPTH:
            raise _Refused(f"nested deeper than {MAX_EXPANDED_DEPTH} levels through $ref")
        memo[key] = (total, height + 1)
        return memo[key]

    try:
        expand(root, 0)
    except _Refused as exc:
        return f"jsonSchema: {exc}"
    return None


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
    expansion = _expansion_problem(schema)
    if expansion:
        return [expansion]
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
