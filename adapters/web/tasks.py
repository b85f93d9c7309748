"""The tasks pages."""

from __future__ import annotations

from adapters.web.ui import UiRoute

ROUTES: list[UiRoute] = []
