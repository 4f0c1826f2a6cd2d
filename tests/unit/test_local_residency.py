"""The pure parts of local scale to zero (``slmfleet up``): the policy a local specialist
scales by, and the router configuration the loop writes."""

from __future__ import annotations

from pathlib import Path

from slmfleet.autoscale.decide import ScalePolicy
from slmfleet.local.fleet import load_fleet, local_router_config
from slmfleet.local.residency import local_policy, with_scaled_to_zero, write_config
from slmfleet.router.snapshot import parse_config

RETAIL = Path(__file__).resolve().parents[2] / "examples" / "retail-support"


def test_locally_a_model_is_loaded_or_not():
    spec = ScalePolicy(min_replicas=0, max_replicas=4, target_in_flight=2, latency_p95_ms=400,
                       scale_to_zero_after_s=60)  # fmt: skip
    local = local_policy(spec)
    assert (local.min_replicas, local.max_replicas) == (0, 1)
    assert local.scale_to_zero_after_s == 60 and local.target_in_flight == 2
    at_least_one = local_policy(ScalePolicy(3, 8, 2, 400))
    assert (at_least_one.min_replicas, at_least_one.max_replicas) == (1, 1)


def test_the_written_configuration_says_what_the_operator_would(tmp_path):
    config = local_router_config(load_fleet(RETAIL), "127.0.0.1:9001")
    gid = "retail-support/generalist"
    zero = with_scaled_to_zero(config, {gid})
    by_id = {s.id: s for s in zero.specialists}
    assert not by_id[gid].ready and by_id[gid].scaled_to_zero
    assert all(s.ready and not s.scaled_to_zero for i, s in by_id.items() if i != gid)
    assert zero.policies == config.policies
    path = tmp_path / "router.json"
    write_config(path, zero)
    assert parse_config(path.read_bytes()) == zero  # what the router reads back
    assert not (tmp_path / "router.tmp").exists()
    back = with_scaled_to_zero(zero, set())
    assert all(s.ready and not s.scaled_to_zero for s in back.specialists)
