"""``python -m slmfleet.router`` / ``slmfleet-router``: serve the router with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..budget.fromenv import ledger_from_env
from ..budget.tokens import TokenCounter, counter_for
from ..telemetry.runtime import Telemetry
from ..telemetry.settings import SettingsError
from . import defences
from .accounting import LedgerAccounting
from .app import RouterApp, Settings, load_api_keys
from .source import ConfigMapSource, FileSource
from .triton.discovery import EndpointSlices, default_access, in_cluster_access


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="slmfleet-router", description=__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--config",
        default=env("SLMFLEET_ROUTER_CONFIG"),
        help="router.json path, polled for changes (env SLMFLEET_ROUTER_CONFIG)",
    )
    src.add_argument(
        "--configmap",
        default=env("SLMFLEET_ROUTER_CONFIGMAP"),
        help="NAMESPACE/NAME: watch the configuration fragments labelled "
        "slmfleet.io/router-config=NAME in NAMESPACE (env SLMFLEET_ROUTER_CONFIGMAP)",
    )
    p.add_argument("--configmap-key", default=env("SLMFLEET_ROUTER_CONFIGMAP_KEY", "fragment.json"))
    p.add_argument("--host", default=env("SLMFLEET_ROUTER_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env("SLMFLEET_ROUTER_PORT", "8080")))
    p.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between checks of --config"
    )
    p.add_argument(
        "--api-keys-file",
        default=env("SLMFLEET_API_KEYS_FILE"),
        help="file with one API key per line (a mounted Secret); "
        "env SLMFLEET_API_KEYS adds comma-separated keys",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(env("SLMFLEET_MAX_BODY_BYTES", str(2 * 1024 * 1024))),
    )
    p.add_argument(
        "--shared-stream-max-tokens",
        type=int,
        default=int(env("SLMFLEET_SHARED_STREAM_MAX_TOKENS", "0")),
        help="non-streamed requests capped at this many output tokens share a Pod's few "
        "gRPC streams (not cancellable in Triton one by one); 0 (default): every request "
        "a stream to itself while it runs; -1: every non-streamed request shares",
    )
    p.add_argument("--max-messages", type=int, default=int(env("SLMFLEET_MAX_MESSAGES", "256")))
    p.add_argument(
        "--discovery",
        choices=["auto", "kubernetes", "off"],
        default=env("SLMFLEET_ROUTER_DISCOVERY", "auto"),
        help="find the Pods behind each specialist from its Service's EndpointSlices "
        "(kubernetes: in-cluster credentials or the kubeconfig; auto: only in a cluster; "
        "off: use the endpoint's DNS name) (env SLMFLEET_ROUTER_DISCOVERY)",
    )
    p.add_argument(
        "--artifact-root",
        default=env("SLMFLEET_ARTIFACT_ROOT", "") or None,
        help="folder where a specialist's pvc://CLAIM/PATH model artifact is readable as "
        "NAMESPACE/CLAIM/PATH: ONNX classifiers' tokenizer.json and labels "
        "(env SLMFLEET_ARTIFACT_ROOT)",
    )
    p.add_argument(
        "--ledger-url",
        default=env("SLMFLEET_LEDGER_URL"),
        help="redis:// or rediss:// URL of the spend ledger every router replica shares "
        "(Redis or Valkey; password in SLMFLEET_LEDGER_PASSWORD); unset: this process "
        "keeps its own windows (env SLMFLEET_LEDGER_URL; see docs/budgets.md)",
    )
    p.add_argument(
        "--tokenizer-file",
        default=env("SLMFLEET_TOKENIZER_FILE"),
        help="tokenizer.json that counts tokens a backend does not report (default: the "
        "bundled MiniLM tokenizer; env SLMFLEET_TOKENIZER_FILE)",
    )
    p.add_argument("--log-level", default=env("SLMFLEET_LOG_LEVEL", "info"))
    p.add_argument(
        "--no-access-log", action="store_true", help="drop the per-request decision log line"
    )
    defences.add_arguments(p)
    return p


def make_app(args: argparse.Namespace) -> RouterApp:
    if args.config:
        source = FileSource(args.config, interval_s=args.poll_interval)
    elif args.configmap:
        ns, _, name = args.configmap.partition("/")
        if not ns or not name:
            raise SystemExit("--configmap must be NAMESPACE/NAME")
        source = ConfigMapSource(ns, name, key=args.configmap_key)
    else:
        raise SystemExit("one of --config or --configmap is required")
    settings = Settings(
        max_body_bytes=args.max_body_bytes,
        max_messages=args.max_messages,
        api_keys=load_api_keys(args.api_keys_file, os.environ.get("SLMFLEET_API_KEYS")),
        shared_stream_max_tokens=args.shared_stream_max_tokens,
        artifact_root=args.artifact_root,
    )
    environ = dict(os.environ)
    environ["SLMFLEET_LEDGER_URL"] = args.ledger_url or ""
    try:
        ledger = ledger_from_env(environ)
    except ValueError as exc:
        raise SystemExit(f"ledger: {exc}") from None
    try:
        # SLMFLEET_DECISION_*, SLMFLEET_REVIEW_*, SLMFLEET_REVIEWERS_FILE, OTEL_*.
        telemetry = Telemetry.from_env()
    except (SettingsError, ValueError, OSError) as exc:
        raise SystemExit(f"telemetry settings: {exc}") from None
    return RouterApp(
        settings=settings,
        source=source,
        discovery=make_discovery(args.discovery),
        external=defences.external_clients(args),
        accounting=LedgerAccounting(ledger),
        counter=make_counter(args.tokenizer_file),
        telemetry=telemetry,
    )


def make_counter(tokenizer_file: str | None) -> TokenCounter:
    """The tokenizer that counts what a backend does not (see tiers/plan.py)."""
    if tokenizer_file:
        if not os.path.isfile(tokenizer_file):
            raise SystemExit(f"--tokenizer-file {tokenizer_file}: no such file")
        return counter_for(tokenizer_file)
    from .embed import EmbeddingUnavailable, model_dir

    try:
        return counter_for(model_dir() / "tokenizer.json")
    except (EmbeddingUnavailable, ImportError):  # no embed extra: the byte bound counts
        return counter_for(None)


def make_discovery(mode: str) -> EndpointSlices | None:
    """The EndpointSlice watcher the mode asks for, or None (DNS names as they are)."""
    if mode == "off":
        return None
    access = in_cluster_access() if mode == "auto" else default_access()
    if access is None:
        if mode == "kubernetes":
            raise SystemExit("--discovery kubernetes: no in-cluster credentials or kubeconfig")
        return None
    return EndpointSlices(access)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stdout)
    if args.no_access_log:
        logging.getLogger("slmfleet.router.access").setLevel(logging.WARNING)
    import uvicorn

    app = defences.wrap(make_app(args), args)
    defences.start_metrics(args)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=defences.http_protocol(args),
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
