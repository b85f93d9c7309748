"""The Slack app manifests in manifests/ are the ones the command registry derives: a command added or
renamed shows up in Slack's hint, and the scopes match the calls Shepherd makes."""

from __future__ import annotations

from pathlib import Path

import yaml

from adapters.slack.manifest import EXAMPLE_URL, manifest, usage_hint
from core.commands.registry import build_registry

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


def test_http_manifest_is_derived_from_the_registry() -> None:
    on_disk = yaml.safe_load((MANIFESTS / "slack-app.yaml").read_text())
    assert on_disk == manifest(EXAMPLE_URL), "regenerate: python -m adapters.slack.manifest > manifests/slack-app.yaml"
    command = on_disk["features"]["slash_commands"][0]
    assert command["command"] == "/shepherd" and command["url"] == f"{EXAMPLE_URL}/slack/events"
    settings = on_disk["settings"]
    assert settings["event_subscriptions"]["request_url"] == settings["interactivity"]["request_url"] == command["url"]
    assert settings["socket_mode_enabled"] is False


def test_socket_mode_manifest_has_no_public_url() -> None:
    on_disk = yaml.safe_load((MANIFESTS / "slack-app-socket.yaml").read_text())
    assert on_disk == manifest(None), "regenerate: python -m adapters.slack.manifest --socket"
    assert on_disk["settings"]["socket_mode_enabled"] is True
    assert "url" not in on_disk["features"]["slash_commands"][0]
    assert "request_url" not in on_disk["settings"]["event_subscriptions"]


def test_every_command_is_in_the_slash_command_hint_and_every_event_has_its_scope() -> None:
    registry = build_registry()
    hint = usage_hint(registry)
    for spec in registry:
        assert spec.name.split()[0] in hint, f"`{spec.name}` is missing from the /shepherd hint"
    assert len(hint) <= 1000
    data = manifest()
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    needs = {"app_mention": "app_mentions:read", "message.channels": "channels:history",
             "message.groups": "groups:history", "message.im": "im:history", "message.mpim": "mpim:history"}
    for event in data["settings"]["event_subscriptions"]["bot_events"]:
        assert needs[event] in scopes
    assert {"commands", "chat:write", "users:read"} <= scopes


def test_slack_escapes_mentions_in_the_slash_command() -> None:
    """`/shepherd role @dave operator` arrives as `role <@U123|dave> operator`: dave is found by his Slack id,
    whether Shepherd has met him or not (unescaped, it is a bare `@dave`, unknown until he writes)."""
    for data in (manifest(), manifest(None)):
        assert data["features"]["slash_commands"][0]["should_escape"] is True
