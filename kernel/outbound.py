"""Requests Encours makes to addresses people give it (ERP webhook endpoints): never, unless a
setting allows it, to this machine or a private network (SSRF: a URL that reaches the cloud
metadata service, the database or an admin port behind the firewall)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit


class UnsafeUrl(ValueError):
    """A URL Encours will not send to; the message says why."""


def parse_http_url(url: str) -> SplitResult:
    """The parts of an http(s) URL with a host, or UnsafeUrl."""
    if len(url) > 2000 or any(ch.isspace() for ch in url):
        raise UnsafeUrl("a URL has at most 2000 characters and no spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("the URL must start with https:// (or http://) and name a host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry a user name or password")
    if port == 0:
        raise UnsafeUrl("the URL's port must be 1 to 65535")
    return parts


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_public(url: str, *, allow_private: bool) -> SplitResult:
    """The URL's parts when every address its host resolves to is public (or `allow_private`);
    UnsafeUrl otherwise, including a host that does not resolve."""
    parts = parse_http_url(url)
    if allow_private:
        return parts
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeUrl(f"the host {host} cannot be resolved ({error})") from None
    refused = sorted(str(a) for a in addresses if _private(str(a)))
    if refused:
        raise UnsafeUrl(f"the host {host} is a private or local address ({', '.join(refused)}); "
                        "Encours sends only to public addresses")
    return parts
