"""Names and constants shared by the operator, the router and the clients.

Every name a user writes that later becomes a path, an API URL, a file, a header, a
metric label or a model id is one of the types below. Each carries its pattern into the
CRD (the API server refuses anything else, naming the field) and into pydantic (the
router and ``slmfleet up`` refuse the same inputs), so "names are names" holds on every
path an object can take. The patterns are Kubernetes' own where Kubernetes has one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

GROUP = "slmfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: (group, version, plural) of the custom resources, as kopf and the clients address them.
SPECIALISTS = (GROUP, VERSION, "slmspecialists")
POLICIES = (GROUP, VERSION, "routerpolicies")
BUDGETS = (GROUP, VERSION, "budgets")
POOLS = (GROUP, VERSION, "slmpools")

#: The field manager of every server-side apply the operator makes.
FIELD_MANAGER = "slmfleet-operator"
MANAGED_BY = "slmfleet"

# -- patterns (RE2 syntax: the API server evaluates them with Go's regexp) ---------------

#: RFC 1123 label: namespaces, Services, cascade tiers.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 subdomain: ConfigMap and Secret names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: An SLMSpecialist's name: a DNS label that leaves room for the ``slm-<name>-model``
#: children and starts with a letter (it is also a Triton model name and a file name).
SPECIALIST_NAME = r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$"
#: A ConfigMap or Secret key (Kubernetes' IsConfigMapKey): never ``.``, ``..`` or a
#: leading ``..``, so a key can never walk out of a directory it is mounted into.
CONFIG_KEY = r"^([-_a-zA-Z0-9]|\.[-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
#: Names shown in decision headers, logs and metric labels (rules, validators, review
#: queues): the charset of a Kubernetes label value, so no control characters, spaces
#: or separators ever reach a header.
IDENTIFIER = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
#: A model name clients pass as ``model``. Never contains ``/``: ``namespace/name`` is
#: reserved for SLMSpecialists addressed directly, so no policy can shadow one.
MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$"
#: ``namespace/name`` of an object, as the router configuration identifies it.
OBJECT_ID = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
SpecialistName = Annotated[str, Field(min_length=1, max_length=52, pattern=SPECIALIST_NAME)]
ConfigKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY)]
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=IDENTIFIER)]
ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=MODEL_NAME)]
ObjectId = Annotated[str, Field(min_length=3, max_length=317, pattern=OBJECT_ID)]


def object_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def split_id(ident: str) -> tuple[str, str]:
    """``namespace/name`` -> (namespace, name); ValueError on anything else."""
    namespace, sep, name = ident.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"not a namespace/name id: {ident!r}")
    return namespace, name
