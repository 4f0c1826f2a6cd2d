"""``slmfleet``: run a fleet of small language models from its manifests.

slmfleet up PATH [--port 8080]     the fleet on this machine: real Triton with CPU
                                   stand-ins, the real router, an OpenAI endpoint
slmfleet up --cluster PATH         a local control plane (fake GPU nodes), the
                                   operator, the fleet applied and watched to Ready
slmfleet validate PATH             check the manifests, show what runs locally
slmfleet standins DIR PATH         write the stand-in model code a pvc:// claim holds
slmfleet crds                      print the CustomResourceDefinitions
slmfleet review serve|export       the review console and API; labelled data as JSON lines
slmfleet calibrate OUTCOMES        reliability, ECE and calibrators from labelled outcomes
slmfleet learn PATH OUTCOMES ...   thresholds from stated risk, re-learned routing, a
                                   reviewable proposal (see docs/learning.md)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..local.fleet import (
    FleetManifests,
    LocalFleet,
    ManifestError,
    export_stand_ins,
    load_fleet,
    stand_ins,
)
from ..local.residency import Change
from ..local.telemetry import LocalTelemetry
from .console import Console, Stop, shielded, stop_on_signals

# -- slmfleet up (local) --------------------------------------------------------------------------


def describe(fleet: FleetManifests, say: Console) -> None:
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    counts = ", ".join(
        [
            n(len(fleet.specialists), "specialist", "specialists"),
            n(len(fleet.policies), "router policy", "router policies"),
            n(len(fleet.budgets), "budget", "budgets"),
        ]
    )
    say(f"Fleet {fleet.namespace}: {counts}")
    width = max(len(s.name) for s in fleet.specialists)
    for choice in stand_ins(fleet):
        say(f"  {choice.model:<{width}}  {choice.why}")
    if fleet.skipped:
        say(f"  (not needed locally: {', '.join(fleet.skipped)})")


def sample_question(fleet: FleetManifests) -> str:
    """A request the first policy routes to a specialist: a domain example of one."""
    policy = fleet.policies[0]
    for item in fleet.specialists:
        selector = policy.spec.specialists.selector
        chosen = item.name in policy.spec.specialists.names or (
            selector is not None and selector.matches(dict(item.labels))
        )
        if chosen and item.spec.domain.examples:
            return item.spec.domain.examples[0]
    return "Hello! What can you help me with?"


def usage_text(url: str, model: str, question: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}]})
    return f"""\
Try it with the OpenAI Python SDK (pip install openai):

    from openai import OpenAI

    client = OpenAI(base_url="{url}", api_key="not-needed-locally")
    raw = client.chat.completions.with_raw_response.create(
        model="{model}",
        messages=[{{"role": "user", "content": {json.dumps(question)}}}],
    )
    print(raw.parse().choices[0].message.content)
    print({{k: v for k, v in raw.headers.items() if k.startswith("x-slmfleet-")}})

or with curl (the x-slmfleet-* headers say how the request was routed):

    curl -si {url}/chat/completions -H 'content-type: application/json' \\
      -d {shlex.quote(body)}
"""


def local_telemetry(args: argparse.Namespace) -> LocalTelemetry:
    from ..local.manifests import default_namespace
    from ..local.telemetry import default_state_dir, prepare

    namespace = args.namespace or default_namespace(args.path)
    state = Path(args.state_dir) if args.state_dir else default_state_dir(namespace)
    reviewers = Path(args.reviewers) if args.reviewers else None
    return prepare(state, args.store, reviewers)


def telemetry_text(fleet: LocalFleet) -> str:
    """Where decisions, feedback and review cases go, and how to reach them."""
    t = fleet.telemetry
    if t is None or t.store_url is None:
        return "Decision log off (--store off): review cases are log lines.\n"
    base = fleet.url.removesuffix("/v1")
    lines = [
        f"Decisions, feedback and review cases: {t.store_url}",
        f"  feedback: POST {fleet.url}/feedback with the x-slmfleet-request-id of a response",
        f"  review console: {base}/review",
    ]
    if t.reviewer_key_file is not None:
        lines.append(f"  (reviewer 'local', every queue; key in {t.reviewer_key_file})")
    return "\n".join(lines) + "\n"


def request_line(record: dict[str, Any]) -> str:
    route = record.get("route") or "-"
    how = record.get("route_source") or ""
    escalations = ",".join(record.get("escalations") or [])
    parts = [
        f"  {record.get('policy')}",
        f"route={route}" + (f" ({how} {record.get('confidence')})" if how else ""),
        f"tier={record.get('tier')}",
        f"target={record.get('target')}",
    ]
    if escalations:
        parts.append(f"escalations={escalations}")
    if record.get("human_review"):
        parts.append(f"human-review={record['human_review']}")
        if record.get("review_case"):
            parts.append(f"case={record['review_case']}")
    parts.append(f"status={record.get('status')} {record.get('duration_ms', 0):.0f}ms")
    return "  ".join(parts)


def ledger_dir(args: argparse.Namespace) -> Path | None:
    """Where ``--redis`` keeps the spend ledger: ``--redis-dir``, else a folder per fleet
    under the user's cache (so the spend outlives one ``slmfleet up``); None: no Redis."""
    if not getattr(args, "redis", False):
        return None
    if args.redis_dir:
        return Path(args.redis_dir)
    name = args.namespace or Path(args.path).resolve().name or "fleet"
    return Path.home() / ".cache" / "slmfleet" / "ledger" / name


def residency_line(change: Change) -> str:
    """A specialist scaled to zero (model unloaded) or back (loaded), locally."""
    if change.loaded:
        return (f"  {change.sid}: scaled from zero, model loaded in {change.seconds:.1f}s "
                f"({change.reason}: {change.message})")  # fmt: skip
    return f"  {change.sid}: scaled to zero, model unloaded ({change.reason}: {change.message})"


def up_local(args: argparse.Namespace, say: Console) -> int:
    fleet_path = Path(args.path)
    try:
        telemetry = local_telemetry(args)
        fleet = LocalFleet(
            fleet_path,
            port=args.port,
            host=args.host,
            namespace=args.namespace,
            progress=say,
            startup_timeout=args.startup_timeout,
            replicas=getattr(args, "replicas", 1),
            telemetry=telemetry,
            ledger_dir=ledger_dir(args),
        )
    except (ManifestError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    describe(fleet.fleet, say)
    code = 0
    with stop_on_signals():
        try:
            fleet.start()
            url = fleet.url
            models = fleet.model_names()
            say()
            say(f"slmfleet is serving at {url}")
            question = sample_question(fleet.fleet)
            example = next(
                (s for s in fleet.fleet.specialists if question in s.spec.domain.examples),
                fleet.fleet.specialists[0],
            )
            say(f"Models: {', '.join(models)}  (and every specialist by id, e.g. "
                f"{example.namespace}/{example.name})")  # fmt: skip
            say()
            say(usage_text(url, models[0], question))
            say(telemetry_text(fleet))
            say("Requests are shown below as they arrive. Press Ctrl-C to stop.")
            fleet.on_request = lambda rec: say(request_line(rec))
            fleet.on_residency = lambda change: say(residency_line(change))
            while True:
                time.sleep(0.5)
                problem = fleet.failure()
                if problem:
                    say(f"error: {problem}")
                    code = 1
                    break
        except Stop as sig:
            say()
            say(f"{sig}: stopping the router and Triton...")
        except (RuntimeError, OSError, ManifestError) as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            with shielded(say):
                fleet.stop()
    say("Stopped." if code == 0 else "Stopped after an error.")
    return code


# -- other commands ------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, say: Console) -> int:
    try:
        fleet = load_fleet(args.path, args.namespace)
        from ..local.fleet import local_router_config

        config = local_router_config(fleet, "127.0.0.1:8001")
    except ManifestError as exc:
        say(f"error: {exc}")
        return 2
    describe(fleet, say)
    for policy in config.policies:
        tiers = " -> ".join(t.name for t in policy.cascade)
        say(f"  model {policy.model_name}: {len(policy.specialists)} specialists; cascade {tiers}")
    say("valid")
    return 0


def cmd_standins(args: argparse.Namespace, say: Console) -> int:
    try:
        fleet = load_fleet(args.path, args.namespace)
    except ManifestError as exc:
        say(f"error: {exc}")
        return 2
    written = export_stand_ins(fleet, Path(args.dest), claim=args.claim)
    for directory in written:
        say(f"wrote {directory}/ (model.py, standin.py)")
    if not written:
        say("no python-backend stand-ins with a pvc:// URI in these manifests")
        return 1
    say(f"Copy {args.dest} into the claim's root; the fetcher reads pvc://CLAIM/PATH from it.")
    return 0


def cmd_crds(args: argparse.Namespace, say: Console) -> int:
    from ..crdgen import render_all

    say("\n---\n".join(text.rstrip("\n") for _, text in sorted(render_all().items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slmfleet",
        description="Run a fleet of small language models from its manifests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run a fleet locally (Triton + router) or, with --cluster, on a local cluster",
        description="Serve the fleet in PATH (a folder of manifests) on this machine.",
    )
    up.add_argument("path", metavar="PATH", help="folder (or file) of manifests")
    up.add_argument("--port", type=int, default=8080, help="router port (default 8080)")
    up.add_argument("--host", default="127.0.0.1", help="router address (default 127.0.0.1)")
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="Triton servers to run locally (each serves every model; the router balances "
        "over them; default 1)",
    )
    up.add_argument(
        "--namespace", help="namespace of the fleet (default: the folder's name)", default=None
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="start a local control plane (fake GPU nodes), run the operator, apply the "
        "fleet and show it going Ready",
    )
    up.add_argument(
        "--startup-timeout", type=float, default=300.0, help="seconds to wait for readiness"
    )
    up.add_argument(
        "--store",
        default=None,
        help="decision store URL (sqlite:///FILE or postgresql://...), or off; default: a "
        "SQLite file in the state directory",
    )
    up.add_argument(
        "--state-dir",
        default=None,
        help="where the local decision store and reviewer key live (default "
        "$SLMFLEET_STATE_DIR or ~/.local/state/slmfleet/NAMESPACE)",
    )
    up.add_argument(
        "--reviewers",
        default=None,
        help="reviewers file (YAML list of {name, keySha256, queues}); default: one local "
        "reviewer with a generated key",
    )
    up.add_argument(
        "--gpu-nodes", type=int, default=2, help="fake GPU nodes with --cluster (default 2)"
    )
    up.add_argument(
        "--redis",
        action="store_true",
        help="keep Budget spend in a local redis-server (the Debian package), as a cluster "
        "keeps it for every router replica: it survives restarts of `slmfleet up`; with "
        "--cluster the operator reports it in Budget.status (default: the router's own "
        "in-process ledger)",
    )
    up.add_argument(
        "--redis-dir",
        default=None,
        help="data folder of --redis (default ~/.cache/slmfleet/ledger/<namespace>)",
    )

    val = sub.add_parser("validate", help="validate manifests and show the local mapping")
    val.add_argument("path", metavar="PATH")
    val.add_argument("--namespace", default=None)

    st = sub.add_parser(
        "standins", help="write the stand-in model code for the fleet's pvc:// claim"
    )
    st.add_argument("dest", metavar="DIR", help="directory to write (the claim's root)")
    st.add_argument("path", metavar="PATH", help="folder of manifests")
    st.add_argument("--claim", default=None, help="only URIs of this claim")
    st.add_argument("--namespace", default=None)

    sub.add_parser("crds", help="print the CustomResourceDefinitions (YAML)")

    from ..telemetry.server import add_parser as add_review

    add_review(sub)
    from .learn import add_parsers as add_learning

    add_learning(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = Console()
    try:
        return _dispatch(args, say)
    except BrokenPipeError:  # `slmfleet crds | head`
        return 0


def _dispatch(args: argparse.Namespace, say: Console) -> int:
    if args.command == "up":
        if args.cluster:
            from .cluster import up_cluster

            return up_cluster(args, say)
        return up_local(args, say)
    if args.command == "review":
        from ..telemetry.server import run as review

        return review(args)
    from .learn import cmd_calibrate, cmd_learn

    handler = {
        "validate": cmd_validate,
        "standins": cmd_standins,
        "crds": cmd_crds,
        "calibrate": cmd_calibrate,
        "learn": cmd_learn,
    }
    return handler[args.command](args, say)


if __name__ == "__main__":
    sys.exit(main())
