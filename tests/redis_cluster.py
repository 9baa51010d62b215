"""A private Redis Cluster the tests own (§14): start, SIGKILL a node, wait for the failover,
move a slot live the way `redis-cli --cluster reshard` does, stop.

Every node gets two free ports (its own and its cluster bus port, `--cluster-port`: the
default bus port, port + 10000, would fall outside 65535 for most ephemeral ports) and its
own data directory (Redis 7 keeps the AOF in `<dir>/appendonlydir`). About 2 s to start.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.cluster import RedisCluster

from tests.redis_server import free_port


def _free_ports(count: int) -> list[int]:
    """`count` distinct unused ports (each check binds and releases one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` (Redis errors count as "not yet") until true, else RuntimeError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class RedisClusterHarness:
    """`masters` redis-servers in cluster mode, each with `replicas` replicas (0 or 1)."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server/redis-cli are not on PATH (apt-get install redis)")
        if masters < 3 or replicas not in (0, 1):
            raise ValueError("a cluster needs 3 or more masters, and 0 or 1 replica each")
        self.binary, self.cli = binary, cli
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        count = masters * (1 + replicas)
        both = _free_ports(2 * count)
        self.ports = both[:count]
        self.bus_ports = dict(zip(self.ports, both[count:], strict=True))
        self.dir = Path(tempfile.mkdtemp(prefix="injixo-test-cluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.slots_at_kill: dict[int, list[int]] = {}
        self.node_clients: dict[int, redis.Redis] = {}
        atexit.register(self.stop)  # a session ended by Ctrl-C or an error leaves no servers
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # --- start --------------------------------------------------------------------------

    def _start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            _wait(self.node(port).ping, 15, f"node {port} to answer")
        create = [
            self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}"
            )
        self.wait_ok(self.ports, timeout=30)
        if self.replicas:
            _wait(self._replicas_in_sync, 30, "every replica to be in sync")

    def start_node(self, port: int) -> None:
        """Start (or restart) one node on its port, bus port and data directory."""
        data = self.dir / str(port)
        data.mkdir(exist_ok=True)
        args = [
            self.binary, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-port", str(self.bus_ports[port]),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
            "--dir", str(data), "--appendonly", "yes", "--save", "",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once (default: after 5 s)
            "--loglevel", "warning",
        ]  # fmt: skip
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL)

    # --- clients ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """One node's URL (database 0): the client discovers the rest (REDIS_URL)."""
        return f"redis://127.0.0.1:{self.live_ports()[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (no redirections followed), kept until `stop`."""
        client = self.node_clients.get(port)
        if client is None:
            client = redis.Redis(port=port, socket_connect_timeout=2, socket_timeout=5)
            self.node_clients[port] = client
        return client

    def command(self, port: int, *args: object) -> Any:
        """One command on one node, its reply as redis-py parses it."""
        return self.node(port).execute_command(*args)  # type: ignore[no-untyped-call]

    def read(self, port: int, *args: object) -> Any:
        """A read command on one node, a replica too (READONLY first, on the same connection)."""
        with self.node(port).pipeline(transaction=False) as pipe:
            pipe.execute_command("READONLY")  # type: ignore[no-untyped-call]
            pipe.execute_command(*args)  # type: ignore[no-untyped-call]
            return pipe.execute()[1]

    def client(self) -> RedisCluster:
        """A new synchronous cluster client."""
        return RedisCluster(
            host="127.0.0.1", port=self.live_ports()[0], socket_connect_timeout=2, socket_timeout=5
        )

    def live_ports(self) -> list[int]:
        """Ports of the nodes whose process runs."""
        return [p for p in self.ports if self.procs[p].poll() is None]

    # --- layout -------------------------------------------------------------------------

    def _info(self, port: int, section: str) -> dict[str, Any]:
        info: dict[str, Any] = self.node(port).info(section)
        return info

    def cluster_info(self, port: int) -> dict[str, str]:
        """CLUSTER INFO of one node (`cluster_state`, `cluster_known_nodes`, ...)."""
        info: dict[str, str] = self.command(port, "CLUSTER INFO")
        return info

    def node_id(self, port: int) -> str:
        """A node's cluster id."""
        raw = self.command(port, "CLUSTER MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def masters(self) -> list[int]:
        """Ports of the live nodes that serve slots as masters."""
        return [p for p in self.live_ports() if self._info(p, "replication")["role"] == "master"]

    def slot_owner(self, slot: int) -> int:
        """Port of the master serving `slot` (as the first live node sees it)."""
        port = self.slot_owner_seen_by(self.live_ports()[0], slot)
        if port < 0:
            raise LookupError(f"slot {slot} is not served")
        return port

    def key_slot(self, key: str) -> int:
        """The cluster slot of a key (CLUSTER KEYSLOT)."""
        return int(self.command(self.live_ports()[0], "CLUSTER KEYSLOT", key))

    def master_for_key(self, key: str) -> int:
        """Port of the master holding `key`."""
        return self.slot_owner(self.key_slot(key))

    def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the live replicas of a master."""
        found = []
        for port in self.live_ports():
            info = self._info(port, "replication")
            if info["role"] == "slave" and int(info["master_port"]) == master_port:
                found.append(port)
        return found

    # --- waiting ------------------------------------------------------------------------

    def _state_ok(self, ports: list[int]) -> bool:
        for port in ports:
            info = self.cluster_info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            if info.get("cluster_known_nodes") != str(len(self.ports)):
                return False
        return bool(ports)

    def wait_ok(self, ports: list[int] | None = None, timeout: float = 30) -> None:
        """Until every given (default: every live) node says cluster_state:ok."""
        targets = ports if ports is not None else self.live_ports()
        _wait(lambda: self._state_ok(targets), timeout, "cluster_state:ok on every node")

    def _replicas_in_sync(self) -> bool:
        for port in self.live_ports():
            info = self._info(port, "replication")
            if info["role"] != "slave":
                continue
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                return False
        masters = self.masters()
        return all(
            self._info(m, "replication").get("connected_slaves") == self.replicas for m in masters
        )

    # --- faults -------------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, no final write (a master's slots are noted first,
        for `wait_failover`)."""
        proc = self.procs[port]
        if proc.poll() is not None:
            return
        others = [p for p in self.live_ports() if p != port]
        if others:
            self.slots_at_kill[port] = [
                int(start) for start, _end, master, *_ in self._slots(others[0])
                if int(master[1]) == port
            ]  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def wait_failover(self, dead_port: int, timeout: float = 30) -> int:
        """Until a replica of the killed master serves its slots in every live node's view
        and every live node says cluster_state:ok; returns the promoted node's port."""
        slots = self.slots_at_kill.get(dead_port)
        if not slots:
            raise ValueError(f"node {dead_port} was not a master killed by kill()")
        live = self.live_ports()
        promoted: list[int] = []

        def done() -> bool:
            owners = {self.slot_owner_seen_by(p, s) for p in live for s in slots}
            if len(owners) != 1 or dead_port in owners or -1 in owners:
                return False
            if not self._state_ok(live):
                return False
            promoted[:] = list(owners)
            return True

        _wait(done, timeout, f"a replica to take over from node {dead_port}")
        return promoted[0]

    def _slots(self, port: int) -> list[list[Any]]:
        """CLUSTER SLOTS of one node: [start, end, [host, port, id], replicas...] each."""
        return list(self.command(port, "CLUSTER SLOTS"))

    def slot_owner_seen_by(self, port: int, slot: int) -> int:
        """Port of the master serving `slot` in one node's view (-1: none)."""
        for start, end, master, *_ in self._slots(port):
            if int(start) <= slot <= int(end):
                return int(master[1])
        return -1

    # --- resharding ---------------------------------------------------------------------

    def migrate_slot(self, slot: int, dest_port: int, batch: int = 10, pause: float = 0.01) -> int:
        """Move `slot` to the master on `dest_port` live, as redis-cli does: IMPORTING on the
        destination, MIGRATING on the source, MIGRATE the keys in batches (with a pause, so
        concurrent traffic meets ASK and TRYAGAIN), then SETSLOT NODE on every master.
        Returns the number of keys moved."""
        source_port = self.slot_owner(slot)
        if source_port == dest_port:
            return 0
        source_id, dest_id = self.node_id(source_port), self.node_id(dest_port)
        self.command(dest_port, "CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        self.command(source_port, "CLUSTER SETSLOT", slot, "MIGRATING", dest_id)
        moved = 0
        while True:
            keys = self.command(source_port, "CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.command(
                source_port,
                "MIGRATE",
                "127.0.0.1",
                dest_port,
                "",
                0,
                5000,
                "REPLACE",
                "KEYS",
                *keys,
            )
            moved += len(keys)
            time.sleep(pause)
        # The destination first (it must own the slot before the source stops serving it).
        self.command(dest_port, "CLUSTER SETSLOT", slot, "NODE", dest_id)
        self.command(source_port, "CLUSTER SETSLOT", slot, "NODE", dest_id)
        for port in self.masters():
            if port not in (source_port, dest_port):
                self.command(port, "CLUSTER SETSLOT", slot, "NODE", dest_id)
        self._settle(slot, dest_port, dest_id)
        return moved

    def _settle(self, slot: int, dest_port: int, dest_id: str, timeout: float = 15) -> None:
        """Until every node sees `slot` on `dest_port` three polls in a row. (SETSLOT NODE
        bumps epochs without agreement: right after quick successive moves a node was seen
        to fall back to an older claim; telling it again settles it.)"""
        deadline, agreed = time.monotonic() + timeout, 0
        while agreed < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster: slot {slot} did not settle on {dest_port}")
            behind = [p for p in self.live_ports() if self.slot_owner_seen_by(p, slot) != dest_port]
            agreed = 0 if behind else agreed + 1
            for port in behind:
                if port in self.masters():
                    self.command(port, "CLUSTER SETSLOT", slot, "NODE", dest_id)
            time.sleep(0.03)

    # --- data and lifetime --------------------------------------------------------------

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for port in self.masters():
            self.node(port).flushall()

    def stop(self) -> None:
        """Stop every node and remove the data directories."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # nothing here needs a clean shutdown
        for proc in self.procs.values():
            proc.wait()
        for client in self.node_clients.values():
            client.close()
        self.node_clients.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> RedisClusterHarness:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
