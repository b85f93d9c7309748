"""GitHub in: the door, POST /github/webhook.

Each delivery is, in this order: read (up to GitHub's 25 MB, past aiohttp's 1 MiB default), verified
(`X-Hub-Signature-256` with gidgethub's sansio `Event.from_http`: a forged, unsigned or wrongly signed request is
401 and nothing of it is recorded), routed once into the item Shepherd acts on (adapters/github/routes.py),
recorded in the delivery ledger under `X-GitHub-Delivery`, acknowledged (GitHub wants a 2xx within 10 s), and only
then processed (adapters/github/receiver.py, adapters/github/handlers.py). A redelivery of a delivery done or in
hand is acknowledged and does nothing; of one that failed, is processed again. `ping` is answered.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import gidgethub
from aiohttp import web
from gidgethub import sansio

from adapters.github.auth import GitHubApp, GitHubAuth
from adapters.github.handlers import Handlers
from adapters.github.permissions import GitHubPermissions
from adapters.github.receiver import SOURCE, Receiver, stored
from adapters.github.routes import route
from core.channels.conversations import Conversations
from core.commands.grammar import CommandRegistry
from core.commands.registry import build_registry
from core.people.access import Role
from core.people.trust import TrustRules
from core.shepherd import Shepherd

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps a webhook payload at 25 MB
CHUNK = 256 * 1024
_DELIVERY = re.compile(r"[A-Za-z0-9-]{1,100}")  # a GUID; GitHub Enterprise's are the same shape
_EVENT = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class GitHubConfig:
    webhook_secret: str | None
    org_id: str
    handle: str = "shepherd"  # /shepherd and @shepherd
    label: str = "shepherd"
    trusted: frozenset[str] = field(default_factory=frozenset)  # SHEPHERD_GITHUB_TRUSTED, lower-case
    review: str = "trusted"  # trusted | all | off
    incidents: bool = True
    default_role: Role = Role.VIEWER
    admins: frozenset[str] = field(default_factory=frozenset)  # GitHub logins that are admins (lower-case)
    api_url: str = "https://api.github.com"
    token: str | None = field(default=None, repr=False)  # SHEPHERD_GITHUB_TOKEN (GitHubAuth's, never shown)
    app: GitHubApp | None = field(default=None, repr=False)  # GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY instead

    @property
    def rules(self) -> TrustRules:
        return TrustRules(self.trusted)


def _strict(raw: bytes | bytearray, payload: dict[str, Any]) -> bool:
    """Whether the payload is JSON as the standard has it: Python's reader (gidgethub's) also takes NaN and
    Infinity, which no store can keep (PostgreSQL refuses them) and GitHub never sends. Looked at only when such
    a word is in the body at all (it mostly is not, or only inside a string)."""
    if b"NaN" not in raw and b"Infinity" not in raw:
        return True
    try:
        json.dumps(payload, allow_nan=False)
    except ValueError:
        return False
    return True


def _problem(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


class GitHubInbound:
    def __init__(self, shepherd: Shepherd, config: GitHubConfig, auth: GitHubAuth, *,
                 registry: CommandRegistry | None = None) -> None:
        self.config = config
        self.ledger = shepherd.ledger
        conversations = Conversations(shepherd, registry or build_registry())
        permissions = GitHubPermissions(auth) if auth.configured else None
        self.handlers = Handlers(conversations, shepherd.projects, config, auth, permissions, self._replay)
        self.receiver = Receiver(self.handlers.handle, shepherd.ledger)

    async def start(self) -> None:
        await self.receiver.start()

    async def stop(self) -> None:
        await self.receiver.stop()

    async def idle(self) -> None:
        """Returns when the deliveries acknowledged so far have been processed (or given up on for now)."""
        await self.receiver.idle()

    async def sweep(self) -> int:
        return await self.receiver.sweep()

    async def _replay(self, key: str) -> dict[str, Any] | None:
        row = await self.ledger.get(SOURCE, key)
        return row.payload if row is not None else None

    # --- HTTP ------------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /github/webhook."""
        secret = self.config.webhook_secret
        if not secret:
            return _problem(404, "github_not_configured", "set GITHUB_WEBHOOK_SECRET to receive GitHub webhooks")
        if (request.content_length or 0) > MAX_BODY:
            return _problem(413, "payload_too_large", f"a webhook payload is at most {MAX_BODY} bytes")
        raw = bytearray()
        while chunk := await request.content.read(CHUNK):  # not request.read(): the app's 1 MiB limit
            raw += chunk
            if len(raw) > MAX_BODY:
                return _problem(413, "payload_too_large", f"a webhook payload is at most {MAX_BODY} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers.pop("x-hub-signature", None)  # SHA-1 is not accepted: only X-Hub-Signature-256 verifies
        signature = headers.get("x-hub-signature-256", "")
        if not signature.startswith("sha256="):
            return _problem(401, "invalid_signature", "the request carries no X-Hub-Signature-256 signature")
        try:
            event = sansio.Event.from_http(headers, bytes(raw), secret=secret)
        except gidgethub.ValidationFailure:
            return _problem(401, "invalid_signature", "X-Hub-Signature-256 does not match the body signed with "
                                                      "this webhook's secret (GITHUB_WEBHOOK_SECRET)")
        except gidgethub.BadRequest as exc:
            return _problem(415 if int(exc.status_code) == 415 else 400, "malformed_payload",
                            "the body is not JSON (set the webhook's content type to application/json)")
        except RecursionError:  # json.loads recurses once per level: `[[[[…` within 25 MB is a RecursionError
            return _problem(400, "malformed_payload", "the JSON is nested too deeply")
        except (KeyError, ValueError):  # no X-GitHub-Event or X-GitHub-Delivery, or a body that is not UTF-8
            return _problem(400, "malformed_payload", "X-GitHub-Event and X-GitHub-Delivery are required")
        name, key, payload = event.event, event.delivery_id, event.data
        if not _EVENT.fullmatch(name) or not _DELIVERY.fullmatch(key):
            return _problem(400, "malformed_payload", "X-GitHub-Event or X-GitHub-Delivery is not GitHub's")
        if not isinstance(payload, dict):
            return _problem(400, "malformed_payload", "the payload is not a JSON object")
        if not _strict(raw, payload):
            return _problem(400, "malformed_payload", "the payload holds NaN or Infinity, which are not JSON")
        item = route(name, payload, key)
        # the ledger keeps what processing needs again; of a delivery Shepherd leaves alone, only its kind
        kept = stored(name, payload) if item is not None else {"event": name, "action": str(payload.get("action"))}
        if not await self.ledger.receive(SOURCE, key, self.config.org_id, kept):
            log.info("GitHub: delivery %s came before; acknowledged, not processed again", key)
            return web.json_response({"ok": True, "delivery": key, "processed": False}, status=200)
        self.receiver.accepted(key, item)
        if name == "ping":
            return web.json_response({"ok": True, "pong": True, "zen": str(payload.get("zen", ""))[:200]})
        return web.json_response({"ok": True, "delivery": key}, status=202 if item is not None else 200)
