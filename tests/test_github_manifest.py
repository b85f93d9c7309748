"""manifests/github-app.yaml is the one the routing table derives: an event the table handles is subscribed to,
with the permission it needs."""

from __future__ import annotations

from pathlib import Path

import yaml

from adapters.github.manifest import EXAMPLE_URL, manifest
from adapters.github.routes import ROUTES

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


def test_the_manifest_is_derived_from_the_routing_table() -> None:
    on_disk = yaml.safe_load((MANIFESTS / "github-app.yaml").read_text())
    assert on_disk == manifest(EXAMPLE_URL), "regenerate: python -m adapters.github.manifest > manifests/…"
    assert on_disk["hook_attributes"]["url"] == f"{EXAMPLE_URL}/github/webhook"


def test_every_routed_event_is_subscribed_with_its_permission() -> None:
    data = manifest()
    for route in ROUTES:
        assert route.event in data["default_events"]
        assert data["default_permissions"].get(route.permission) in ("read", "write")
    perms = data["default_permissions"]
    assert perms["issues"] == perms["pull_requests"] == perms["contents"] == "write"
    assert perms["checks"] == perms["metadata"] == "read"
