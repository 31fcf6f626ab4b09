"""Which hosts are this machine: shared by the daemon (bind safety, admin and browser checks)
and memproxyctl (whether the registry file may be edited directly)."""
from __future__ import annotations

import ipaddress

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets and a trailing dot allowed)."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
