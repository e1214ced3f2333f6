"""A Redis Cluster of the tests' own: ``redis-server`` processes on free private ports,
joined with ``redis-cli --cluster create``; the machine's shared Redis is never touched.

Three masters and one replica each. ``cluster-node-timeout`` is short (2 s), so a killed
master's replica takes over within a few seconds. Nothing is saved to disk.
"""

from __future__ import annotations

import atexit
import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis
from polling import poll
from services import missing

#: Bounds for starting, joining and failing over: generous for a loaded 2-core machine.
START_WAIT = 30.0
#: Short, so a failover takes a few seconds; not shorter, so that a CPU stall on a loaded
#: machine does not pass for a dead node.
NODE_TIMEOUT_MS = 2000


class PrivateCluster:
    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.programs = [shutil.which("redis-server"), shutil.which("redis-cli")]
        if None in self.programs:
            missing("redis-server and redis-cli are needed: this test starts a Redis Cluster")
        self.count = masters * (1 + replicas)
        self.replicas = replicas
        self.folder = Path(tempfile.mkdtemp(prefix="caraway-cluster-"))
        self.ports: list[int] = []
        while len(self.ports) < self.count:
            port = _cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Every node as a start node, so the client finds the cluster with any one dead."""
        return self.url_of(len(self.ports))

    def url_of(self, nodes: int) -> str:
        """The URL naming the first ``nodes`` nodes (the client reads the rest)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:nodes]) + "/"

    def start(self) -> PrivateCluster:
        server, cli = self.programs
        assert server is not None
        assert cli is not None
        for port in self.ports:
            self.procs[port] = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(self.folder / f"nodes-{port}.conf"),
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(self.folder)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            poll(
                lambda port=port: _info(port, "server") or not self.running(port),
                START_WAIT,
                f"redis-server on {port}",
            )
            assert self.running(port), f"redis-server on port {port} exited"

        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=START_WAIT,
        )  # fmt: skip
        poll(self._settled, START_WAIT, "the cluster to be ok with every replica in sync")
        return self

    def _settled(self) -> bool:
        """Every node says ok, and every replica has been told its master and finished its
        first sync: ``--cluster create`` returns before its CLUSTER REPLICATE calls take
        effect, and a replica promoted before its sync would come up empty."""
        if any(_info(p, "cluster").get("cluster_state") != "ok" for p in self.ports):
            return False
        roles = [_info(port, "replication") for port in self.ports]
        replicas = [r for r in roles if r.get("role") == "slave"]
        masters = [r for r in roles if r.get("role") == "master"]
        return (
            len(replicas) == self.count - self.count // (1 + self.replicas)
            and all(r.get("master_link_status") == "up" for r in replicas)
            and all(int(m.get("connected_slaves", 0)) == self.replicas for m in masters)
        )

    def masters(self) -> list[int]:
        """The ports of the live masters that serve slots."""
        return [
            port for port in self.ports
            if self.running(port) and _info(port, "replication").get("role") == "master"
        ]  # fmt: skip

    def delete_prefixed(self, prefix: str) -> None:
        """Delete every key under ``prefix`` on every master (SCAN MATCH, node by node)."""
        for port in self.masters():
            client = redis.Redis(port=port)
            try:
                for key in client.scan_iter(match=f"{prefix}*", count=1000):
                    client.delete(key)
            finally:
                client.close()

    def wait_replicated(self, master: int, key: str) -> None:
        """Until the replica of ``master`` has every write made there so far: a write of our
        own to ``key`` (a key of one of its slots), then WAIT for one replica to have it.
        Replication is asynchronous, so what a master acknowledged and died before passing
        on is lost with it; a fault test kills a master that is caught up."""
        client = redis.Redis(port=master, socket_timeout=START_WAIT)
        try:
            client.set(key, "replicated?", px=60_000)
            acked = client.execute_command("WAIT", 1, int(START_WAIT * 1000))
        finally:
            client.close()
        assert int(acked) == 1, f"the replica of {master} did not catch up"

    def running(self, port: int) -> bool:
        return self.procs[port].poll() is None

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, no save."""
        proc = self.procs[port]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(START_WAIT)

    def wait_failover(self, dead: int) -> None:
        """Until a replica of the dead master took its slots: every live node says the
        cluster is ok and no longer counts ``dead`` as a master."""

        def taken_over(port: int) -> bool:
            if _info(port, "cluster").get("cluster_state") != "ok":
                return False
            client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
            try:
                nodes = client.execute_command("CLUSTER NODES")
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            finally:
                client.close()
            # redis-py parses CLUSTER NODES into {address: {flags, slots, ...}}
            entry = next((v for k, v in dict(nodes).items() if k.endswith(f":{dead}")), {})
            return "fail" in str(entry.get("flags", "")) and not entry.get("slots")

        live = [port for port in self.ports if self.running(port)]
        poll(lambda: all(taken_over(p) for p in live), START_WAIT, "a replica to take over")

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.folder, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it, so at most 55535) is free too."""
    while True:
        port = random.randint(20000, 45000)
        if all(_bindable(p) for p in (port, port + 10000)):
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _info(port: int, section: str) -> dict[str, str]:
    """``INFO <section>`` (``CLUSTER INFO`` for "cluster") of one node; {} when it is down."""
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        if section == "cluster":  # redis-py parses CLUSTER INFO into a dict
            reply = client.execute_command("CLUSTER INFO")
            return {str(k): str(v) for k, v in dict(reply).items()}
        return {str(k): str(v) for k, v in client.info(section).items()}
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return {}
    finally:
        client.close()


_SHARED: PrivateCluster | None = None


def shared_cluster() -> PrivateCluster:
    """One cluster for the whole run (started on first use, stopped at exit); tests keep
    apart by key prefix and never kill its nodes."""
    global _SHARED
    if _SHARED is None:
        cluster = PrivateCluster()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        atexit.register(cluster.stop)
        _SHARED = cluster
    return _SHARED


@contextlib.contextmanager
def own_cluster() -> Iterator[PrivateCluster]:
    """A cluster for one test that may kill its nodes."""
    cluster = PrivateCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
