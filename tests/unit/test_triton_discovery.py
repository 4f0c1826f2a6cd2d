"""EndpointSlices to replica addresses, and endpoint names to Services."""

from __future__ import annotations

import pytest

from slmfleet.router.triton.discovery import ServiceRef, ready_addresses, service_of


@pytest.mark.parametrize(
    ("endpoint", "ref"),
    [
        ("billing-triton.shop.svc:8001", ServiceRef("shop", "billing-triton", 8001)),
        ("a.b.svc.cluster.local:8001", ServiceRef("b", "a", 8001)),
        ("a.b.svc.cluster.local.:9", ServiceRef("b", "a", 9)),
        ("127.0.0.1:8001", None),
        ("triton:8001", None),
        ("a.b.svc", None),  # no port
        ("A.b.svc:1", None),  # not a DNS label
        ("a.b.example.com:8001", None),
    ],
)
def test_service_of(endpoint, ref):
    assert service_of(endpoint) == ref


def slice_(endpoints, ports=({"name": "grpc", "port": 8001},), kind="IPv4"):
    return {"addressType": kind, "ports": list(ports), "endpoints": endpoints}


def ep(*addrs, **conditions):
    return {"addresses": list(addrs), "conditions": conditions}


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        ([], []),
        (
            [slice_([ep("10.0.0.2", ready=True), ep("10.0.0.1")])],
            ["10.0.0.1:8001", "10.0.0.2:8001"],
        ),
        ([slice_([ep("10.0.0.1", ready=False)])], []),  # not ready
        ([slice_([ep("10.0.0.1", ready=True, terminating=True)])], []),  # going away: drain
        (
            [
                slice_(
                    [ep("10.0.0.1")],
                    ports=[{"name": "http", "port": 8000}, {"name": "grpc", "port": 9001}],
                )
            ],
            ["10.0.0.1:9001"],  # the named gRPC port, whatever its number
        ),
        ([slice_([ep("10.0.0.1")], ports=[{"port": 7000}])], ["10.0.0.1:7000"]),  # the only one
        (
            [slice_([ep("10.0.0.1")], ports=[{"name": "a", "port": 1}, {"name": "b", "port": 2}])],
            [],  # no gRPC port to be found
        ),
        ([slice_([ep("fd00::1")], kind="IPv6")], ["[fd00::1]:8001"]),
        ([slice_([ep("pod.example")], kind="FQDN")], []),
        (
            [slice_([ep("10.0.0.1")]), slice_([ep("10.0.0.1"), ep("10.0.0.3")])],
            ["10.0.0.1:8001", "10.0.0.3:8001"],  # de-duplicated across slices
        ),
    ],
)
def test_ready_addresses(slices, expected):
    assert ready_addresses(slices, 8001) == expected
