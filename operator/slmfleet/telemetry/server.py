"""``slmfleet review``: the review API and console as a process of their own, next to
the routers (same store), and ``slmfleet review export``: labelled data as JSON lines.

    slmfleet review serve --store sqlite:///var/lib/slmfleet/decisions.db \\
        --reviewers reviewers.yaml --queues queues.yaml --port 8090
    slmfleet review export --store ... --since 0 > labelled.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TextIO

import orjson

from .settings import (
    SettingsError,
    decision_log_from_env,
    load_queues,
    load_reviewers,
    review_from_env,
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    env = os.environ.get
    p = sub.add_parser("review", help="the review console and API, or export labelled data")
    verbs = p.add_subparsers(dest="review_command", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="serve the review API and console")
    export = verbs.add_parser("export", help="labelled data (reviews + feedback) as JSON lines")
    for q in (serve, export):
        q.add_argument(
            "--store",
            default=env("SLMFLEET_DECISION_STORE"),
            help="decision store URL (env SLMFLEET_DECISION_STORE)",
        )
        q.add_argument(
            "--password-file",
            default=env("SLMFLEET_DECISION_STORE_PASSWORD_FILE"),
            help="PostgreSQL password file",
        )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument(
        "--reviewers", default=env("SLMFLEET_REVIEWERS_FILE"), help="reviewers file (YAML)"
    )
    serve.add_argument(
        "--queues", default=env("SLMFLEET_REVIEW_QUEUES_FILE"), help="queues file (YAML)"
    )
    serve.add_argument("--public-url", default=env("SLMFLEET_PUBLIC_URL", ""))
    export.add_argument("--since", type=float, default=0.0, help="Unix time (exclusive)")
    export.add_argument("--limit", type=int, default=100_000)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if not args.store:
        print("error: --store (or SLMFLEET_DECISION_STORE) is required", file=sys.stderr)
        return 2
    try:
        if args.review_command == "export":
            return export(args, out)
        return serve(args)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def export(args: argparse.Namespace, out: TextIO) -> int:
    from .store import open_store

    store = open_store(args.store, password_file=args.password_file)
    try:
        for ex in store.labelled(args.since, args.limit):
            out.write(orjson.dumps(ex.as_dict()).decode() + "\n")
    finally:
        store.close()
    return 0


def _client_auth():  # type: ignore[no-untyped-def]
    """The router's client API keys (SLMFLEET_API_KEYS_FILE / SLMFLEET_API_KEYS) guard
    /v1/feedback and /v1/cases/* here too; without keys they are open, as on the router."""
    from ..router.app import Settings, load_api_keys

    keys = load_api_keys(
        os.environ.get("SLMFLEET_API_KEYS_FILE"), os.environ.get("SLMFLEET_API_KEYS")
    )
    if keys is None:
        return None
    settings = Settings(api_keys=keys)

    def authorized(scope):  # type: ignore[no-untyped-def]
        for k, v in scope["headers"]:
            if k == b"authorization":
                token = v.decode("latin-1")
                return token[:7].lower() == "bearer " and token[7:].strip() in settings.api_keys
        return False

    return authorized


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .runtime import Telemetry

    log_settings = dataclasses.replace(
        decision_log_from_env(), store_url=args.store, password_file=args.password_file
    )
    review = dataclasses.replace(
        review_from_env(),
        reviewers=load_reviewers(args.reviewers),
        queues=load_queues(args.queues),
        public_url=args.public_url.rstrip("/"),
    )
    tel = Telemetry(
        log_settings=log_settings, review_settings=review, authorize_client=_client_auth()
    )
    print(f"slmfleet review: console at http://{args.host}:{args.port}/review", flush=True)
    uvicorn.run(
        tel.http,  # type: ignore[arg-type]
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    return 0
