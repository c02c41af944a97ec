"""Host-local IP address management for pod sandboxes, like the CNI `host-local` plugin.

Each allocation is one file `<dir>/<ip>` holding the owner's id, created with O_EXCL so two
allocations can never hand out the same address, and so the state survives a kubelet restart.
The first address of the range is the bridge's gateway; network and broadcast addresses are skipped.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


class IpamExhausted(Exception):
    """No free address left in the pod CIDR."""


class HostLocalIpam:
    def __init__(self, directory: str | os.PathLike[str], cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        self.directory = Path(directory) / str(self.network).replace("/", "_")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next = 2  # where the next search starts, so addresses are not reused at once
        # The files are the truth (shared with other processes through O_EXCL); this map only saves
        # reading every file on each allocation.
        self._owners: dict[str, str] = self._scan()

    def _scan(self) -> dict[str, str]:
        owners = {}
        for path in self.directory.iterdir():
            try:
                owners[path.read_text()] = path.name
            except OSError:
                continue
        return owners

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def allocate(self, owner: str) -> str:
        existing = self.owned_by(owner)
        if existing:
            return existing
        size = self.network.num_addresses
        for offset in range(size):
            host = (self._next - 2 + offset) % max(size - 3, 1) + 2
            if host >= size - 1:
                continue
            address = str(self.network.network_address + host)
            try:
                fd = os.open(self.directory / address, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as file:
                file.write(owner)
            self._owners[owner] = address
            self._next = host + 1
            return address
        raise IpamExhausted(f"no free address left in {self.network}")

    def owned_by(self, owner: str) -> str | None:
        address = self._owners.get(owner)
        if address is not None and (self.directory / address).exists():
            return address
        return None

    def release(self, owner: str) -> None:
        address = self._owners.pop(owner, None)
        if address is None:
            self._owners = self._scan()  # allocated by an earlier process: look at the files
            address = self._owners.pop(owner, None)
        if address is not None:
            (self.directory / address).unlink(missing_ok=True)

    def allocated(self) -> dict[str, str]:
        """address -> owner"""
        result = {}
        for path in self.directory.iterdir():
            try:
                result[path.name] = path.read_text()
            except OSError:
                continue
        return result
