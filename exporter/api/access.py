"""Who is calling, and what they may do.

In Azure, App Service Authentication (Microsoft Entra ID) signs the user in and passes them as the
``X-MS-CLIENT-PRINCIPAL`` header (base64 JSON with ``claims``). That header is only trustworthy
when the platform itself set it, so it is read only when the platform says authentication is on
(``WEBSITE_AUTH_ENABLED``) or in the local runner's explicit development mode.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ..config import Settings
from ..domain import Connection

PRINCIPAL_HEADER = "x-ms-client-principal"
ROLE_ADMIN = "Admin"
ROLE_CONTRIBUTOR = "Contributor"
_ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")


class AccessError(Exception):
    def __init__(self, status: int, title: str, detail: str):
        self.status, self.title, self.detail = status, title, detail
        super().__init__(detail)


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles

    @property
    def is_contributor(self) -> bool:
        return ROLE_CONTRIBUTOR in self.roles

    def may_use(self, connection: Connection) -> bool:
        return self.is_admin or (self.is_contributor and connection.allow_contributors)

    def may_see_work_of(self, connection: Connection | None) -> bool:
        """A run is seen by who may use the connection it was made with (an Admin, once it is removed)."""
        return self.is_admin or (connection is not None and self.may_use(connection))


def encode_principal(name: str, roles: list[str]) -> str:
    """Build an X-MS-CLIENT-PRINCIPAL value, as the platform does (used by the CLI and tests)."""
    claims = [{"typ": "name", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    body = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(body).encode()).decode()


DEV_ADMIN_PRINCIPAL = encode_principal("local-admin@dev", [ROLE_ADMIN])


def resolve_caller(headers: dict[str, str], settings: Settings) -> Caller:
    """The signed-in caller, or AccessError (401 no principal, 500 when identity cannot be trusted)."""
    if not (settings.platform_auth_enabled or settings.dev_mode):
        raise AccessError(
            500,
            "Authentication is not configured",
            "App Service Authentication is off (WEBSITE_AUTH_ENABLED is not true), so caller identities cannot "
            "be trusted and every management call is refused. Turn on Microsoft Entra ID authentication for "
            "the function app (see docs/deploy.md).",
        )
    raw = next((v for k, v in headers.items() if k.lower() == PRINCIPAL_HEADER), None)
    if not raw:
        raise AccessError(401, "Not signed in", "Sign in with Microsoft Entra ID to use this API.")
    try:
        data = json.loads(base64.b64decode(raw, validate=True))
        claims = data.get("claims") or []
        role_typ = data.get("role_typ")
        roles = frozenset(
            c["val"] for c in claims if isinstance(c, dict) and (c.get("typ") in _ROLE_CLAIMS or c.get("typ") == role_typ)
        )
        name = next((c["val"] for c in claims if isinstance(c, dict) and c.get("typ") in _NAME_CLAIMS), "unknown")
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise AccessError(401, "Not signed in", "The client principal header could not be read.") from None
    return Caller(name=str(name), roles=roles)


def require_admin(caller: Caller, action: str) -> None:
    if not caller.is_admin:
        raise AccessError(403, "Forbidden", f"Only an Admin may {action}.")


def require_member(caller: Caller) -> None:
    if not (caller.is_admin or caller.is_contributor):
        raise AccessError(
            403, "Forbidden", "Your account has neither the Admin nor the Contributor role of this app."
        )


def require_use_of(caller: Caller, connection: Connection | None, action: str, action_when_removed: str) -> None:
    """The caller may act on something that uses ``connection``; once the connection is removed, only
    an Admin may (a Contributor's right came from the connection)."""
    require_member(caller)
    if connection is not None:
        require_use(caller, connection, action)
    else:
        require_admin(caller, action_when_removed)


def require_use(caller: Caller, connection: Connection, action: str) -> None:
    require_member(caller)
    if not caller.may_use(connection):
        raise AccessError(
            403,
            "Forbidden",
            f"Connection {connection.display_name!r} is for admins only; a Contributor may not {action}. An Admin "
            "can allow contributors on a connection when creating it (allowContributors).",
        )
