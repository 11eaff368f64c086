"""Network ranges: the unit in which attackers rent addresses."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=65_536)  # every event asks; addresses repeat
def network_range(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """The /24 (IPv4) or /64 (IPv6) range that holds `ip`, as CIDR text."""
    address = ipaddress.ip_address(ip)
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
