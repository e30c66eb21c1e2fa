"""Which hosts a component may reach over `wasi:http`, and the checks that keep it to them.

Denied by default. A policy grants hosts by pattern, in `[network] allow`:

    "api.example.com"        that name, on ports 80 and 443
    "api.example.com:8080"   that name, on port 8080 only
    "*.example.com"          any name below example.com (not example.com itself), ports 80 and 443
    "example.com:*"          that name, any port
    "127.0.0.1:8080"         that address; `[::1]:8080` for IPv6

Names and addresses are matched separately: a wildcard never matches an address, and a request
naming an address matches only a grant of that exact address. A name is resolved once, by the
host, and every address it resolves to must be a public (globally routable) one; the request is
then sent to an address that was checked, never to the name again. So a grant for `example.com`
cannot be turned into a request to 127.0.0.1, a private network or a cloud metadata address by
a DNS answer that changes between the check and the connection (DNS rebinding). To reach a
loopback or private service, grant its address itself.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from statefulmcp._errors import NetworkDenied

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_DEFAULT_PORTS = (80, 443)


def _address(text: str) -> str | None:
    """The normalized address if `text` is an IP address (IPv6 without brackets), else None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _name(text: str) -> str:
    return text.lower().removesuffix(".")


@dataclass(frozen=True, slots=True)
class HostGrant:
    """One `[network] allow` entry: a name, `*.suffix` or address, and its ports."""

    pattern: str
    host: str
    ports: tuple[int, ...] | None
    """None: any port."""

    @property
    def is_address(self) -> bool:
        return _address(self.host) is not None

    @classmethod
    def parse(cls, pattern: str) -> HostGrant:
        """Raises ValueError with what is wrong, for the policy reader to place."""
        text = pattern.strip()
        if not text or "/" in text or "@" in text:
            raise ValueError(f"{pattern!r} is not a host pattern (say host, host:port or *.domain)")
        host, ports = _split(text, pattern)
        if host.startswith("*."):
            rest = host[2:]
            if not rest or "*" in rest or _address(rest) is not None:
                raise ValueError(
                    f"{pattern!r}: a wildcard stands for names below a domain, as in *.example.com"
                )
        elif "*" in host:
            raise ValueError(f"{pattern!r}: '*' may only be the first label (*.example.com) or the port")
        address = _address(host)
        return cls(pattern=pattern, host=address or _name(host), ports=ports)

    def matches(self, host: str, port: int) -> bool:
        """Whether a request to `host` (normalized by `split_authority`) on `port` is granted."""
        if self.ports is not None and port not in self.ports:
            return False
        if self.host.startswith("*."):
            return _address(host) is None and host.endswith(self.host[1:])
        return host == self.host


def _split(text: str, pattern: str) -> tuple[str, tuple[int, ...] | None]:
    """`host[:port]` -> host and ports (the default ones when left out, None for `*`)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if _address(host) is None or (rest and not rest.startswith(":")):
            raise ValueError(f"{pattern!r}: brackets hold an IPv6 address, as in [::1]:8080")
        port = rest[1:] if rest else None
    elif text.count(":") > 1:
        if _address(text) is None:
            raise ValueError(f"{pattern!r}: write an IPv6 address in brackets, as in [::1]:8080")
        return text, _DEFAULT_PORTS
    else:
        host, colon, port_text = text.partition(":")
        port = port_text if colon else None
    if port is None:
        return host, _DEFAULT_PORTS
    if port == "*":
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{pattern!r}: the port must be a number from 1 to 65535, or *")
    return host, (int(port),)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The hosts a component may reach, and the bounds of each request."""

    allow: tuple[HostGrant, ...] = ()
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def grant_for(self, host: str, port: int) -> HostGrant | None:
        return next((grant for grant in self.allow if grant.matches(host, port)), None)

    def describe(self) -> str | dict[str, object]:
        if not self.allow:
            return "denied"
        return {
            "allow": [grant.pattern for grant in self.allow],
            "timeout_seconds": self.timeout_seconds,
            "max_request_bytes": self.max_request_bytes,
            "max_response_bytes": self.max_response_bytes,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """A checked request: where it goes (the addresses that passed the check) and its bounds."""

    component: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    timeout_seconds: float
    max_request_bytes: int
    max_response_bytes: int

    @property
    def authority(self) -> str:
        """The `Host` header: the name as the component wrote it, the port when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_authority(authority: str, scheme: str) -> tuple[str, int]:
    """A request's authority as a normalized host and a port (the scheme's default if none)."""
    if not authority or "@" in authority:
        raise NetworkDenied(
            f"an outgoing request needs an authority of the form host[:port], not {authority!r}"
        )
    try:
        host, ports = _split(authority, authority)
    except ValueError:
        raise NetworkDenied(
            f"the authority {authority!r} of an outgoing request is not host[:port]"
        ) from None
    if ports is None or not host:
        raise NetworkDenied(f"the authority {authority!r} of an outgoing request is not host[:port]")
    port = ports[0] if len(ports) == 1 else (443 if scheme == "https" else 80)
    return _address(host) or _name(host), port


def _hint(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f'"{shown}"' if port in _DEFAULT_PORTS else f'"{shown}:{port}"'


def check(component: str, network: NetworkPolicy, scheme: str, authority: str) -> Target:
    """The checked target of a request, or `NetworkDenied` naming the host and what to grant.

    Resolves a granted name once (on the calling thread: the system resolver bounds how long)
    and checks every address it gives; the request then goes to those addresses only.
    """
    if scheme not in ("http", "https"):
        raise NetworkDenied(f"component {component!r} may send http and https requests only, not {scheme!r}")
    host, port = split_authority(authority, scheme)
    grant = network.grant_for(host, port)
    if grant is None:
        where = "has no [network] grants" if not network.allow else "has no [network] grant for it"
        raise NetworkDenied(
            f"outgoing request to {host}:{port} refused: component {component!r} {where}. To allow it, "
            f"add {_hint(host, port)} to `allow` in the [network] table of its policy, or grant it at run "
            "time with the grant_permissions tool"
        )
    addresses = (host,) if grant.is_address else _resolve(component, host, port)
    return Target(
        component=component,
        scheme=scheme,
        host=host,
        port=port,
        addresses=addresses,
        timeout_seconds=network.timeout_seconds,
        max_request_bytes=network.max_request_bytes,
        max_response_bytes=network.max_response_bytes,
    )


def _resolve(component: str, host: str, port: int) -> tuple[str, ...]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NetworkDenied(f"outgoing request to {host}:{port}: cannot resolve {host!r}: {exc}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        if not ipaddress.ip_address(address).is_global:
            raise NetworkDenied(
                f"outgoing request to {host}:{port} refused: {host!r} resolves to {address}, which is not a "
                f"public address, and a grant for a name reaches public addresses only (so a DNS answer "
                f"cannot point it at this machine or its network). To reach {address}, grant "
                f"{_hint(address, port)} itself"
            )
    if not addresses:
        raise NetworkDenied(f"outgoing request to {host}:{port}: {host!r} resolves to no address")
    return addresses
