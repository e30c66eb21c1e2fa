"""A stand-in for an operator's `--auth-verifier`: what a JWT check against an authorization
server would report, for fixed tokens (the tests start servers with this directory importable)."""

from __future__ import annotations

from mcp.server.auth.provider import AccessToken

RESOURCE = "https://tools.example.com/mcp"

_TOKENS = {
    "oauth-token-for-this-server": (RESOURCE, ["statefulmcp:call"]),
    "oauth-token-for-another-one": ("https://elsewhere.example/mcp", ["statefulmcp:call"]),
}


class Verifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        found = _TOKENS.get(token)
        if found is None:
            return None
        resource, scopes = found
        return AccessToken(token=token, client_id="oauth-client", scopes=scopes, resource=resource)
