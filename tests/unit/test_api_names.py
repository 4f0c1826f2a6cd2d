"""Names are names: the API models refuse what the API server refuses, the same way.

Each hostile value below is something a tenant could write; the same patterns are in the
CRDs (tests/integration/test_hostile_tenants.py proves the API server refuses them).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slmfleet.api.policy import RouterPolicySpec
from slmfleet.api.regex import RE2_CEL_RULE, compile_re2, re2_problem
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.clients.kube import object_path

MODEL = {"uri": "hf://org/m", "backend": "python"}


def policy(**spec):
    return RouterPolicySpec.model_validate({"specialists": {"names": ["a"]}, **spec})


def external(**ext):
    return [
        {"name": "small", "routed": True},
        {"name": "big", "external": {"baseUrl": "https://api.example.com/v1", "model": "m", **ext}},
    ]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cascade": external(apiKey={"name": "../../etc", "key": "passwd"})}, "apiKey.name"),
        ({"cascade": external(apiKey={"name": "llm", "key": "/etc/passwd"})}, "apiKey.key"),
        ({"cascade": external(apiKey={"name": "llm", "key": ".."})}, "apiKey.key"),
        ({"cascade": external(apiKey={"name": "llm", "key": "../token"})}, "apiKey.key"),
        ({"cascade": external(apiKey={"name": "Other-NS/llm", "key": "t"})}, "apiKey.name"),
        ({"modelName": "other-team/billing"}, "modelName"),
        ({"modelName": "bad\nname"}, "modelName"),
        ({"modelName": "x" * 129}, "modelName"),
        ({"specialists": {"names": ["../x"]}}, "names"),
        (
            {
                "routing": {
                    "rules": [{"name": "r\r\nX-Evil: 1", "keywords": ["a"], "specialist": "a"}]
                }
            },
            "rules.0.name",
        ),
        (
            {"routing": {"rules": [{"name": "r", "regex": "(?=lookahead)", "specialist": "a"}]}},
            "regex",
        ),
        ({"routing": {"rules": [{"name": "r", "regex": "(a)\\1", "specialist": "a"}]}}, "regex"),
        (
            {"routing": {"rules": [{"name": "r", "keywords": ["k" * 129], "specialist": "a"}]}},
            "keywords",
        ),
        (
            {
                "cascade": [
                    {
                        "name": "t",
                        "routed": True,
                        "accept": {"validators": [{"name": "v", "regex": "(?<=x)y"}]},
                    }
                ]
            },
            "regex",
        ),
        (
            {
                "cascade": [
                    {
                        "name": "t",
                        "routed": True,
                        "accept": {
                            "validators": [
                                {"name": "v", "jsonSchema": {"$ref": "https://evil.example/s.json"}}
                            ]
                        },
                    }
                ]
            },
            "jsonSchema",
        ),
        (
            {
                "cascade": [
                    {
                        "name": "t",
                        "routed": True,
                        "accept": {"labelThresholds": {f"l{i}": 0.5 for i in range(300)}},
                    }
                ]
            },
            "labelThresholds",
        ),
        (
            {"cascade": [{"name": "t", "routed": True, "accept": {"labelThresholds": {"a": 1.5}}}]},
            "labelThresholds",
        ),
        ({"cascade": [{"name": "t", "human": {"queue": "q w"}}]}, "queue"),
        ({"cascade": external(), "fallback": {"onError": "../big"}}, "onError"),
        (
            {
                "cascade": [
                    {"name": "t", "external": {"baseUrl": "https://user:pw@host/v1", "model": "m"}}
                ]
            },
            "baseUrl",
        ),
        (
            {
                "cascade": [
                    {"name": "t", "external": {"baseUrl": "https://host/v1?x=1", "model": "m"}}
                ]
            },
            "baseUrl",
        ),
        (
            {
                "cascade": [
                    {"name": "t", "external": {"baseUrl": "file:///etc/passwd", "model": "m"}}
                ]
            },
            "baseUrl",
        ),
    ],
)
def test_policy_refuses_hostile_names(spec, field):
    with pytest.raises(ValidationError) as err:
        policy(**spec)
    assert field.split(".")[-1] in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"domain": {"examplesFrom": {"name": "../../kube-system/cm", "key": "k"}}}, "name"),
        ({"domain": {"examplesFrom": {"name": "cm", "key": "../x"}}}, "key"),
        ({"domain": {"examples": ["x" * 1025]}}, "examples"),
        ({"domain": {"examples": ["x"] * 2001}}, "examples"),
        ({"domain": {"labels": ["bad label"]}}, "labels"),
        ({"model": {**MODEL, "parameters": {"bad key": "v"}}}, "parameters"),
        ({"model": {**MODEL, "parameters": {f"k{i}": "v" for i in range(65)}}}, "parameters"),
        ({"model": {**MODEL, "uri": "hf://org/m\n--dest=/"}}, "uri"),
        ({"model": {**MODEL, "credentials": {"name": "tok", "key": "/root/.ssh/id_rsa"}}}, "key"),
        ({"model": MODEL, "serving": {"image": "img with spaces"}}, "image"),
    ],
)
def test_specialist_refuses_hostile_names(spec, field):
    body = {"model": MODEL, **spec}
    with pytest.raises(ValidationError) as err:
        SLMSpecialistSpec.model_validate(body)
    assert field in str(err.value), str(err.value)


def test_ordinary_names_still_pass():
    spec = policy(
        modelName="llama3:8b-chat.v2",
        routing={"rules": [{"name": "refunds_v2", "regex": r"(?i)\brefund\b", "specialist": "a"}]},
        cascade=external(apiKey={"name": "llm-api.keys", "key": ".token_1"}),
    )
    assert spec.model_name == "llama3:8b-chat.v2"
    SLMSpecialistSpec.model_validate(
        {"model": {**MODEL, "uri": "pvc://models/retail/orders"},
         "domain": {"examplesFrom": {"name": "ex.v1", "key": "lines.txt"}}}
    )  # fmt: skip


def test_re2_is_linear_and_refuses_what_it_cannot_run():
    assert re2_problem("(a+)+$") is None  # catastrophic for backtracking engines, fine for RE2
    matcher = compile_re2("(a+)+$")
    assert matcher.search("a" * 100_000 + "b") is None
    assert "lookaround" not in RE2_CEL_RULE  # the rule is a compile, not a list of features
    for pattern in ("(?=x)", "(?<!x)y", "(a)\\1", "a{1001}", "x" * 1025):
        assert re2_problem(pattern), pattern


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("team", "../kube-system"),
        ("team", "a/b"),
        ("..", "x"),
        ("team", "x?watch=1"),
        ("team", "%2e%2e"),
        ("Team", "x"),
        ("team", ""),
    ],
)
def test_client_refuses_to_build_a_path_from_a_non_name(namespace, name):
    with pytest.raises(ValueError):
        object_path("ConfigMap", namespace, name)


def test_client_paths_for_names():
    assert object_path("ConfigMap", "team", "ex.v1") == "/api/v1/namespaces/team/configmaps/ex.v1"
    assert (
        object_path("Role", "t", "r") == "/apis/rbac.authorization.k8s.io/v1/namespaces/t/roles/r"
    )
