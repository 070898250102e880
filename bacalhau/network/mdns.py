"""mDNS discovery: advertise this node as `_bacalhau._tcp.local.` and report the other nodes.

Zeroconf is bound to the one interface that carries `host` (IPv4 or IPv6 only, never both), so
nothing is multicast anywhere else. Records are told apart by the `id` in their TXT record, not
by their instance name, so a renamed instance (a name clash) is still recognised.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from bacalhau.errors import BacalhauError

SERVICE_TYPE = "_bacalhau._tcp.local."
_HINT = "mDNS needs multicast on the interface of --host"
_HOST_HINT = "give --host the IP address of one interface"
_RESOLVE_TIMEOUT_MS = 3000

log = logging.getLogger(__name__)


class MdnsError(BacalhauError):
    """mDNS could not be started on the interface of --host."""

    def __init__(self, message: str, *, hint: str = _HINT) -> None:
        super().__init__(message, hint=hint)


class MdnsDiscovery:
    """Advertise one node over mDNS; call `on_found(node_id, "HOST:PORT")` for each other node.

    `on_found` runs on the event loop thread, once per node and again when its address changes.
    """

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        api_version: str,
        on_found: Callable[[str, str], None],
    ) -> None:
        try:
            self._ip = ipaddress.ip_address(host)
        except ValueError:
            raise MdnsError(f"mDNS needs an IP address, not {host!r}", hint=_HOST_HINT) from None
        if self._ip.is_unspecified:
            raise MdnsError(f"mDNS cannot advertise the wildcard address {host}", hint=_HOST_HINT)
        self._version = IPVersion.V4Only if self._ip.version == 4 else IPVersion.V6Only
        self._node_id = node_id
        self._on_found = on_found
        # The last 16 characters of a base58 peer ID are random enough to tell nodes apart.
        suffix = node_id[-16:]
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{suffix}.{SERVICE_TYPE}",
            port=port,
            properties={"id": node_id, "v": api_version},
            server=f"bacalhau-{suffix}.local.",
            parsed_addresses=[str(self._ip)],
        )
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._found: dict[str, str] = {}  # node ID -> "HOST:PORT" last reported
        self._names: dict[str, str] = {}  # service name -> node ID
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind to the interface of `host`, start browsing and advertise this node.

        Raises MdnsError when zeroconf cannot open its sockets or register the service.
        """
        if self._aiozc is not None:
            return
        try:
            self._aiozc = AsyncZeroconf(interfaces=[str(self._ip)], ip_version=self._version)
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
            )
            await self._aiozc.async_register_service(self._info, allow_name_change=True)
        except (OSError, ZeroconfError) as e:
            await self.stop()
            raise MdnsError(f"mDNS on {self._ip} failed: {e}") from e

    async def stop(self) -> None:
        """Say goodbye on the network and close the sockets; safe to call twice."""
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._aiozc is not None:
            aiozc, self._aiozc = self._aiozc, None
            try:
                await aiozc.async_close()
            except (OSError, ZeroconfError) as e:
                log.warning("mDNS close on %s: %s", self._ip, e)

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            node_id = self._names.pop(name, None)
            if node_id is not None:
                self._found.pop(node_id, None)
            return
        if name == self._info.name:
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.warning("mDNS: resolving a peer failed: %r", e)

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zeroconf, _RESOLVE_TIMEOUT_MS):
            log.debug("mDNS: no answer for %s", name)
            return
        raw_id = info.properties.get(b"id")
        addresses = info.parsed_scoped_addresses(self._version)
        if not raw_id or not addresses or info.port is None:
            return
        node_id = raw_id.decode(errors="replace")
        if node_id == self._node_id:
            return
        ip = addresses[0]
        address = f"[{ip}]:{info.port}" if ":" in ip else f"{ip}:{info.port}"
        self._names[name] = node_id
        if self._found.get(node_id) != address:
            self._found[node_id] = address
            self._on_found(node_id, address)
