"""A local web dashboard of rushhpc networks: ``rushhpc dashboard`` (needs the ``dashboard`` extra).

- `rushhpc.ui.dashboard.app`: the Starlette app (`create_app`) and its endpoints
- `rushhpc.ui.dashboard.data`: what the page shows, read through `Network` views
- `rushhpc.ui.dashboard.security`: host check, access token, CSRF rules of stop requests
- ``static/``: the page, its script and stylesheet, and the vendored plotting library (uPlot)

See docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:  # starlette is imported only when the app is asked for
    if name == "create_app":
        from rushhpc.ui.dashboard.app import create_app

        return create_app
    raise AttributeError(name)
