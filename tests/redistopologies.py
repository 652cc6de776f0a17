"""Redis beyond one server, for the tests: a TLS server with a private CA, a 3-master Redis Cluster,
and a Sentinel group (one master, its replicas, three Sentinels), all real `redis-server` processes
on free loopback ports, with their files in a folder of the caller's.

Each has `url` (the store URL the service is configured with), `settings` (the [store] settings
that go with it) and `client()` (a raw redis-py client for checks and cleanup); `stop()` ends every
process it started.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from support import free_port

from bench.baoserver import stop_process
from bench.certs import issue, make_ca
from jwks_service.configparts import RedisSettings

SENTINEL_SERVICE = "jwksmaster"


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)", pytrace=False)
    return binary


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Sequence[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p} ---\n{p.read_text(errors='replace')[-1500:]}" for p in logs if p.exists())
            pytest.fail(f"{what} within {timeout}s\n{tails}", pytrace=False)
        time.sleep(0.05)


def answers(client: redis.Redis | RedisCluster, *command: str) -> object:
    """One command's reply, on a client closed afterwards."""
    try:
        return client.execute_command(*command)
    finally:
        client.close()


class Node:
    """One redis-server (or Sentinel) process on a free port: `args` are its own options."""

    def __init__(self, workdir: Path, name: str, args: Sequence[str] = (), *, port: int | None = None) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port() if port is None else port
        self.args = list(args)
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.password: str | None = None  # what client() logs in with

    def start(self, *, conf: Path | None = None, sentinel: bool = False) -> None:
        argv = [redis_binary(), *([str(conf)] if conf else []), *(["--sentinel"] if sentinel else [])]
        argv += ["--bind", "127.0.0.1", "--dir", str(self.dir), "--logfile", str(self.log)]
        if not sentinel:
            argv += ["--port", str(self.port), "--save", "", "--appendonly", "no", *self.args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2, decode_responses=True, **kw
        )  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class TlsRedis:
    """redis-server speaking TLS only, with a certificate for 127.0.0.1 and localhost from a CA made here."""

    def __init__(self, workdir: Path) -> None:
        self.ca = make_ca(workdir)
        cert = issue(self.ca, workdir, stem="redis")
        tls_port = free_port()
        self.node = Node(
            workdir,
            "tls",
            [
                "--tls-port", str(tls_port),
                "--tls-cert-file", str(cert.cert_file),
                "--tls-key-file", str(cert.key_file),
                "--tls-ca-cert-file", str(self.ca.file),
                "--tls-auth-clients", "no",
                "--bind", "127.0.0.1 127.0.0.2",  # 127.0.0.2: an address the certificate does not name
            ],
            port=0,
        )  # fmt: skip
        self.port = tls_port
        self.url = f"rediss://127.0.0.1:{tls_port}/0"
        self.settings = RedisSettings(ca_file=str(self.ca.file))

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca.file), decode_responses=True
        )

    def start(self) -> None:
        self.node.start()
        try:
            wait_for(
                f"TLS redis-server on port {self.port} ready",
                lambda: bool(answers(self.client(), "PING")),
                10,
                [self.node.log],
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.node.stop()


class ClusterRedis:
    """A Redis Cluster of `masters` masters and no replicas (the slots split evenly by redis-cli)."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.nodes = []
        for i in range(masters):
            bus = free_port()  # cluster-port: the default (port + 10000) may not be a valid port
            node = Node(workdir, f"cluster{i}", ["--cluster-enabled", "yes", "--cluster-port", str(bus)])
            node.args += ["--cluster-config-file", str(node.dir / "nodes.conf"), "--cluster-node-timeout", "2000"]
            self.nodes.append(node)
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        self.settings = RedisSettings()

    def client(self) -> RedisCluster:
        seeds = [ClusterNode("127.0.0.1", n.port) for n in self.nodes]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=seeds, decode_responses=True)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        logs = [n.log for n in self.nodes]
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            wait_for(f"cluster node {n.port} up", lambda n=n: bool(answers(n.client(), "PING")), 10, logs)
        nodes = [f"127.0.0.1:{n.port}" for n in self.nodes]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}", pytrace=False)

        def ok() -> bool:
            return all("cluster_state:ok" in str(answers(n.client(), "CLUSTER", "INFO")) for n in self.nodes)

        wait_for("cluster state ok on every node", ok, 20, logs)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class SentinelRedis:
    """One master, `replicas` replicas of it, and `sentinels` Sentinels (quorum 2) watching it as
    SENTINEL_SERVICE; a master is down after `down_after_ms` without an answer."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        appendonly: bool = False,
        password: str = "",
    ) -> None:
        """`password`: of every server and Sentinel (requirepass; masterauth, auth-pass), and in `url`."""
        persistence = ["--repl-diskless-sync-delay", "0"]
        persistence += ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else []
        persistence += ["--requirepass", password, "--masterauth", password] if password else []
        self.password = password
        self.master = Node(workdir, "master", persistence)
        self.replicas = [
            Node(workdir, f"replica{i}", [*persistence, "--replicaof", "127.0.0.1", str(self.master.port)])
            for i in range(replicas)
        ]
        self.sentinels = [Node(workdir, f"sentinel{i}") for i in range(sentinels)]
        self.down_after_ms = down_after_ms
        for n in [*self.nodes, *self.sentinels]:
            n.password = password or None
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{f':{password}@' if password else ''}{hosts}/{SENTINEL_SERVICE}/0"
        self.settings = RedisSettings()

    @property
    def nodes(self) -> list[Node]:
        return [self.master, *self.replicas]

    def logs(self) -> list[Path]:
        return [n.log for n in [*self.nodes, *self.sentinels]]

    def master_port(self) -> int:
        """The master's port as the first Sentinel answering names it."""
        for s in self.sentinels:
            try:
                _, port = answers(s.client(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)  # type: ignore[misc]
                return int(port)
            except (redis.RedisError, TypeError, ValueError):
                continue
        raise AssertionError("no Sentinel names a master")

    def node_on(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def client(self) -> redis.Redis:
        """The current master, asked of the Sentinels."""
        return self.node_on(self.master_port()).client()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for n in self.nodes:
            n.start()

        def linked() -> bool:
            info = answers(self.master.client(), "INFO", "replication")
            return isinstance(info, dict) and int(info.get("connected_slaves", 0)) == len(self.replicas)

        wait_for("replicas linked to the master", linked, 15, self.logs())
        for s in self.sentinels:
            conf = s.dir / "sentinel.conf"  # Sentinel rewrites its own file: one each
            conf.write_text(
                f"port {s.port}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
                + (
                    f"requirepass {self.password}\nsentinel auth-pass {SENTINEL_SERVICE} {self.password}\n"
                    if self.password
                    else ""
                )
            )
            s.start(conf=conf, sentinel=True)

        def watching() -> bool:
            for s in self.sentinels:
                state = answers(s.client(), "SENTINEL", "MASTER", SENTINEL_SERVICE)
                fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else dict(state)  # type: ignore[call-overload]
                if int(fields["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
                if int(fields["num-slaves"]) < len(self.replicas):
                    return False
            return True

        wait_for("every Sentinel knowing the others and the replicas", watching, 30, self.logs())

    def stop(self) -> None:
        for n in [*self.sentinels, *self.nodes]:
            n.stop()
