"""Labelled traffic for the learning tests: templated requests per label of the stand-in
fleet's two domain specialists, off-topic requests, and manifests serving them.

Texts are combinations of openings and phrasings, so hundreds of distinct requests
exist per label without any of them being a stand-in's own example.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import yaml

from slmfleet.local.models import BILLING_EXAMPLES, SHIPPING_EXAMPLES

OPENINGS = ["", "hi, ", "hello, ", "quick question: ", "please help: ", "urgent: ", "hey, "]

PHRASES: dict[tuple[str, str], list[str]] = {
    ("domain-billing", "refund"): [
        "I need my money back for the order I returned",
        "please refund the charge from last week",
        "I was billed twice and want a refund",
        "refund the cancelled subscription fee",
        "how long does a refund to my card take",
        "I returned the item, where is my refund",
    ],
    ("domain-billing", "invoice"): [
        "send me the invoice for March",
        "I cannot find my invoice in the account",
        "the invoice has the wrong company name",
        "I need an invoice with VAT for my business",
        "can I get a PDF copy of the invoice",
        "my invoice total looks wrong",
    ],
    ("domain-billing", "payment_method"): [
        "I want to change my credit card",
        "update the card I pay with",
        "can I pay with a bank transfer",
        "my card expired, add a new payment method",
        "remove my old card from the account",
        "switch my payment to PayPal",
    ],
    ("domain-shipping", "tracking"): [
        "where is my parcel right now",
        "the tracking page has not updated in days",
        "when will my package arrive",
        "my delivery is late, where is it",
        "track the shipment I ordered on Monday",
        "the courier says delivered but I have nothing",
    ],
    ("domain-shipping", "delivery_address"): [
        "ship my order to a different address",
        "I moved house, update the delivery address",
        "can the courier drop it at my office",
        "leave the parcel with my neighbour please",
        "change where my package is delivered",
        "deliver to the pickup point instead",
    ],
    ("domain-shipping", "damaged"): [
        "my parcel arrived broken",
        "the box was crushed and the glass inside shattered",
        "items were missing from the damaged package",
        "the delivery came soaked and ruined",
        "the package was torn open on arrival",
        "my order arrived smashed",
    ],
}

OFF_TOPIC = [
    "what will the weather be like tomorrow",
    "tell me a joke about cats",
    "who won the football match last night",
    "what is the capital of Australia",
    "write a poem about the sea",
    "how many calories are in an apple",
    "recommend a movie for tonight",
    "how do I boil an egg",
    "what time is it in Tokyo",
    "translate good morning into Spanish",
    "explain quantum computing simply",
    "what is the best way to learn guitar",
]


def labelled(seed: int = 0) -> list[tuple[str, str | None, str | None]]:
    """Every (text, specialist model or None for off-topic, label) once, shuffled."""
    out: list[tuple[str, str | None, str | None]] = []
    for (model, label), phrases in PHRASES.items():
        for opening, phrase in itertools.product(OPENINGS, phrases):
            out.append((opening + phrase, model, label))
    for opening, phrase in itertools.product(OPENINGS, OFF_TOPIC):
        out.append((opening + phrase, None, None))
    random.Random(seed).shuffle(out)
    return out


def manifests(namespace: str = "shop", **policy_spec: Any) -> list[dict[str, Any]]:
    """Specialists named like the shared Triton's stand-in models, and a policy over them
    (``policy_spec``: more fields of its spec, e.g. decisionLog)."""

    def specialist(name: str, examples: dict[str, list[str]] | None, desc: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"model": {"uri": f"pvc://models/{name}", "backend": "python"}}
        if examples:
            spec["domain"] = {
                "description": desc,
                "examples": [e for v in examples.values() for e in v],
                "labels": list(examples),
            }
        return {
            "apiVersion": "slmfleet.io/v1alpha1",
            "kind": "SLMSpecialist",
            "metadata": {"name": name, "labels": {"shop.example/role": "specialist"}},
            "spec": spec,
        }

    policy = {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": "support"},
        "spec": {
            "modelName": "support",
            "specialists": {"names": ["domain-billing", "domain-shipping"]},
            "routing": {"semantic": {"minConfidence": 0.3}},
            "cascade": [
                {
                    "name": "routed",
                    "routed": True,
                    "accept": {
                        "minAnswerConfidence": 0.5,
                        "labelThresholds": {"refund": 0.97},
                    },
                },
                {"name": "large", "specialist": "generalist"},
            ],
            "fallback": {"onUnknownDomain": "large"},
            **policy_spec,
        },
    }
    return [
        specialist("domain-billing", BILLING_EXAMPLES, "Billing: invoices, refunds, payments."),
        specialist("domain-shipping", SHIPPING_EXAMPLES, "Parcels, delivery and tracking."),
        specialist("generalist", None, ""),
        policy,
    ]


def write_manifests(folder: Path, namespace: str = "shop", **policy_spec: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = manifests(namespace, **policy_spec)
    (folder / "specialists.yaml").write_text(
        "# the shop's specialists\n" + yaml.safe_dump_all(docs[:3], sort_keys=False)
    )
    (folder / "policy.yaml").write_text(
        "# routing for the shop\n" + yaml.safe_dump(docs[3], sort_keys=False)
    )
    return folder


RISK = {
    "confidence": 0.95,
    "outOfDomain": {"minRecall": 0.7},
    "tiers": {
        "routed": {
            "default": {"maxErrorRate": 0.2},
            "labels": {"refund": {"maxErrorRate": 0.05}},
        }
    },
    "escalationCostUsd": {"routing": 0.002},
}
