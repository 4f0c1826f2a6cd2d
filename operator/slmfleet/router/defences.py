"""The router's tenancy defences as command-line settings, and their assembly.

``__main__`` calls four functions, so the wiring stays in one place: the egress policy
and Secret resolver of the external tiers (:func:`external_clients`), the ASGI guard
(:func:`wrap`), the HTTP protocol with a header deadline (:func:`http_protocol`) and
the metrics server on its own port (:func:`start_metrics`). Every flag has an
environment variable, which is what the chart sets.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import egress, guard, secrets
from .external import ExternalClients


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = p.add_argument_group("secrets of external tiers")
    g.add_argument(
        "--secrets",
        default=env("SLMFLEET_SECRETS"),
        help="where apiKey Secret references resolve: 'kubernetes' (the API, as the "
        "router's ServiceAccount; the default with --configmap), 'dir:PATH' "
        "(PATH/<namespace>/<name>/<key>; slmfleet up) or 'none' (env SLMFLEET_SECRETS)",
    )
    g.add_argument(
        "--secrets-ttl",
        type=float,
        default=float(env("SLMFLEET_SECRETS_TTL_SECONDS", "30")),
        help="seconds a Secret read from the API is reused (rotation is picked up after it)",
    )
    g = p.add_argument_group("egress of external tiers (default: nothing allowed)")
    for flag, var, text in (
        ("--egress-allow-host", "SLMFLEET_EGRESS_ALLOW_HOSTS",
         "host an external tier may reach; *.example.com for subdomains"),
        ("--egress-allow-cidr", "SLMFLEET_EGRESS_ALLOW_CIDRS",
         "address range an external tier may connect to (private ones too)"),
        ("--cluster-cidr", "SLMFLEET_CLUSTER_CIDRS",
         "the cluster's Pod/Service ranges: refused unless an allowed CIDR has them"),
    ):  # fmt: skip
        g.add_argument(flag, action="append", default=_list(env(var)), help=f"{text} (env {var})")
    for flag, var, text in (
        ("--egress-allow-http", "SLMFLEET_EGRESS_ALLOW_HTTP", "allow plain http"),
        ("--egress-allow-private", "SLMFLEET_EGRESS_ALLOW_PRIVATE",
         "allow private addresses for allowed hosts"),
    ):  # fmt: skip
        g.add_argument(flag, action="store_true", default=_flag(var), help=f"{text} (env {var})")
    g = p.add_argument_group("request guard")
    for flag, kind, var, default, text in (
        ("--max-in-flight", int, "SLMFLEET_MAX_IN_FLIGHT", "1024",
         "API requests served at once (more: 503 + Retry-After); 0: no cap"),
        ("--rate-limit", float, "SLMFLEET_RATE_LIMIT_RPS", "0",
         "requests per second per valid API key, and for all requests without one "
         "together (more: 429 + Retry-After); 0: off"),
        ("--rate-burst", int, "SLMFLEET_RATE_LIMIT_BURST", "0",
         "burst per API key (0: twice the rate)"),
        ("--body-timeout", float, "SLMFLEET_BODY_TIMEOUT_SECONDS", "30",
         "seconds to receive a request body (408 after)"),
        ("--header-timeout", float, "SLMFLEET_HEADER_TIMEOUT_SECONDS", "10",
         "seconds to receive a request's headers (the connection closes after)"),
        ("--metrics-port", int, "SLMFLEET_METRICS_PORT", "0",
         "port of /metrics, away from the API (the chart sets 9090); 0: the API port"),
    ):  # fmt: skip
        g.add_argument(flag, type=kind, default=kind(env(var, default)), help=f"{text} (env {var})")
    g.add_argument("--metrics-host", default=env("SLMFLEET_METRICS_HOST"),
                   help="address /metrics listens on (default: --host)")  # fmt: skip


def secret_resolver(args: argparse.Namespace) -> secrets.SecretResolver:
    choice = args.secrets or ("kubernetes" if getattr(args, "configmap", None) else "none")
    if choice == "kubernetes":
        return secrets.KubeSecretResolver(ttl=args.secrets_ttl)
    if choice.startswith("dir:"):
        return secrets.DirectorySecretResolver(choice.removeprefix("dir:"))
    if choice == "none":
        return secrets.NoSecrets()
    raise SystemExit(f"--secrets must be kubernetes, dir:PATH or none, not {choice!r}")


def egress_policy(args: argparse.Namespace) -> egress.EgressPolicy:
    try:
        return egress.EgressPolicy.parse(
            args.egress_allow_host,
            args.egress_allow_cidr,
            allow_http=args.egress_allow_http,
            allow_private=args.egress_allow_private,
            cluster_cidrs=args.cluster_cidr,
        )
    except ValueError as exc:
        raise SystemExit(f"egress settings: {exc}") from None


def external_clients(args: argparse.Namespace) -> ExternalClients:
    return ExternalClients(egress_policy=egress_policy(args), secret_resolver=secret_resolver(args))


def guard_settings(args: argparse.Namespace) -> guard.GuardSettings:
    return guard.GuardSettings(
        max_in_flight=args.max_in_flight,
        rate_per_second=args.rate_limit,
        burst=args.rate_burst,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        metrics_on_api_port=args.metrics_port == 0,
    )


def wrap(app: Any, args: argparse.Namespace) -> guard.Guard:
    """The guard around the router; with API keys its rate limit keys by valid key."""
    keyed = app.settings.api_keys is not None
    return guard.Guard(app, guard_settings(args), authorized=app.authorized if keyed else None)


def http_protocol(args: argparse.Namespace) -> type:
    return guard.protocol(args.header_timeout)


def start_metrics(args: argparse.Namespace) -> None:
    """/metrics on its own port (a thread of prometheus_client's), unless it is 0."""
    if args.metrics_port:
        from prometheus_client import start_http_server

        from .metrics import REGISTRY

        start_http_server(args.metrics_port, args.metrics_host or args.host, registry=REGISTRY)
