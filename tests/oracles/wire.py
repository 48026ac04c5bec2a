"""Every request a GatewayClient sends in a test is checked against the official OpenAPI.

:func:`openapi_checked_requests` (an autouse fixture wherever it is imported)
adds an httpx request hook to each GatewayClient made during the test: the hook
reads the request as it goes on the wire (method, path, Content-Type, the
multipart parts or JSON) and checks it with :mod:`oracles.openapi`. The test
fails at teardown, naming every mismatch. The simulator checks the same
requests with its own rules: two judges, neither of them the client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from bridge.gateway import GatewayClient

from oracles.openapi import check_request


class WireCheck:
    """The mismatches seen by the hooks of one test, and how many requests were checked."""

    def __init__(self):
        self.mismatches: list[str] = []
        self.checked = 0

    def hook_for(self, base_url: str):
        base_path = urlsplit(base_url).path.rstrip("/") + "/"

        async def on_request(request) -> None:
            body = await request.aread()
            path = request.url.raw_path.decode("ascii").split("?", 1)[0]
            self.checked += 1
            if not path.startswith(base_path):
                self.mismatches.append(f"{request.method} {path}: outside the base path {base_path}")
                return
            self.mismatches.extend(check_request(request.method, "/" + path[len(base_path):],
                                                 request.headers.get("content-type"), body))

        return on_request


@pytest.fixture(autouse=True)
def openapi_checked_requests(monkeypatch):
    """Check what every GatewayClient of the test sends; fail the test on a mismatch."""
    check = WireCheck()
    made = GatewayClient.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        # The client's own httpx.AsyncClient: the hook sees the request as sent, retries included.
        self._http.event_hooks["request"].append(check.hook_for(self.base_url))

    monkeypatch.setattr(GatewayClient, "__init__", init)
    yield check
    assert not check.mismatches, "requests that do not match the official OpenAPI:\n" + "\n".join(
        check.mismatches)
