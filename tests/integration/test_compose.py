"""The deployment files (Dockerfile, docker-compose.yml, .dockerignore, deploy/) agree with the code.

Docker cannot run here, so the files are read, not run: services, ports, paths and settings are
checked against each other and against the code itself (the configuration loader, the CLI parser, the
app's routes). The pieces that need no Docker (kek-init's script, the replica's command and health check,
Redis with the compose arguments) also run on loopback, in the slow test at the end.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from support import PROJECT_ROOT, free_port, wait_until

from jwks_service.addresses import split_listen
from jwks_service.cli import GRACEFUL_SHUTDOWN_SECONDS, build_parser, cmd_serve, uvicorn_proxy_options
from jwks_service.config import Settings, load_settings, parse_duration
from jwks_service.http import create_app
from jwks_service.kek import KEK_BYTES, load_kek
from jwks_service.runtime import Runtime

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
HAPROXY_CFG = PROJECT_ROOT / "deploy" / "haproxy.cfg"

REPLICAS = ("jwks-1", "jwks-2", "jwks-3")
SERVICES = {"redis", "openbao", "kek-init", *REPLICAS, "proxy"}  # the services issue 4 names
REDIS_DEFAULT_PORT = 6379
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ANY_ADDRESS = {"0.0.0.0", "::", "[::]"}  # noqa: S104 - what the replicas must listen on inside a container


# --- Reading the files ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def unescape(value: str) -> str:
    """Compose interpolation of a value without variables: ``$$`` is a literal ``$``."""
    return value.replace("$$", "$")


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    out = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            source, target, *mode = item.split(":")
            out.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
        else:
            out.append(Mount(str(item.get("source", "")), str(item["target"]), bool(item.get("read_only", False))))
    return out


def mount_at(service: Mapping[str, Any], target: str) -> Mount:
    """The mount holding the container path `target` (the deepest one)."""
    found = [m for m in mounts(service) if PurePosixPath(target).is_relative_to(m.target)]
    assert found, f"nothing is mounted at {target} (mounts: {mounts(service)})"
    return max(found, key=lambda m: len(m.target))


def host_path(service: Mapping[str, Any], target: str) -> Path:
    """Where the container path `target` of a bind mount is in this checkout."""
    m = mount_at(service, target)
    assert m.bind, f"{target} is in the volume {m.source}, not a file of the repository"
    return (PROJECT_ROOT / m.source / PurePosixPath(target).relative_to(m.target)).resolve()


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: int | None
    container_port: int


def published(service: Mapping[str, Any]) -> list[Published]:
    out = []
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            port = item.get("published")
            out.append(Published(str(item.get("host_ip", "")), int(port) if port else None, int(item["target"])))
            continue
        parts = str(item).split("/")[0].split(":")
        ip = parts[0] if len(parts) == 3 else ""
        host = parts[-2] if len(parts) >= 2 else ""
        out.append(Published(ip, int(host) if host else None, int(parts[-1])))
    return out


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: str(spec.get("condition", "service_started")) for name, spec in deps.items()}


@dataclass(frozen=True)
class Dockerfile:
    base_images: list[str]
    env: dict[str, str]  # of the final stage
    expose: list[int]
    user: str
    cmd: list[str]
    healthcheck: list[str]
    run: list[str]
    copy_sources: list[str]  # from the build context (not --from=stage)


def dockerfile() -> Dockerfile:
    """The instructions, continuation lines joined and comment lines dropped, as Docker reads them."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final = instructions[last_from:]
    env: dict[str, str] = {}
    for word, rest in final:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    (cmd,) = [json.loads(rest) for word, rest in final if word == "CMD"]
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    health_cmd = json.loads(health.split(" CMD ", 1)[1])
    copies = []
    for word, rest in instructions:
        if word == "COPY" and not rest.startswith("--from"):
            copies.extend(shlex.split(rest)[:-1])
    (user,) = [rest for word, rest in final if word == "USER"]
    return Dockerfile(
        base_images=[rest.split()[0] for word, rest in instructions if word == "FROM"],
        env=env,
        expose=[int(p.split("/")[0]) for word, rest in final if word == "EXPOSE" for p in rest.split()],
        user=user,
        cmd=cmd,
        healthcheck=health_cmd,
        run=[rest for word, rest in instructions if word == "RUN"],
        copy_sources=copies,
    )


def replica_command(name: str) -> list[str]:
    """What a replica runs: its compose command, else the image's CMD."""
    service = services()[name]
    assert "entrypoint" not in service, "the replicas run the image's entry point (jwks-service)"
    command = service.get("command")
    if command is None:
        return dockerfile().cmd
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def serve_args(name: str) -> Any:
    """The replica's command parsed by the CLI's own parser."""
    command = replica_command(name)
    assert command[0] == "jwks-service", f"{command}: the replicas run the jwks-service command"
    return build_parser().parse_args(command[1:])


def container_env(name: str) -> dict[str, str]:
    """The replica's environment: the image's ENV, then the compose file's."""
    return {**dockerfile().env, **environment(services()[name])}


def replica_settings(name: str, *, with_env: bool = True) -> Settings:
    """What the replica loads: its --config (found in this checkout through its bind mount) and its environment."""
    args = serve_args(name)
    assert getattr(args, "config", None), f"{name} must name its configuration file with --config"
    env = container_env(name) if with_env else {}
    return load_settings(str(host_path(services()[name], args.config)), environ=env)


def listen_port(name: str) -> int:
    args = serve_args(name)
    return split_listen(args.listen or replica_settings(name).listen)[1]


def haproxy() -> dict[tuple[str, str], list[str]]:
    """Sections ("backend", "jwks") -> their lines, comments dropped."""
    sections: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CFG.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            kind, _, name = line.partition(" ")
            current = sections.setdefault((kind, name.strip()), [])
        else:
            current.append(line.strip())
    return sections


def proxy_frontend() -> tuple[int, list[str]]:
    """The frontend's bind port and the lines of its default backend."""
    sections = haproxy()
    (frontend,) = [lines for (kind, _), lines in sections.items() if kind == "frontend"]
    (bind,) = [line for line in frontend if line.startswith("bind ")]
    port = int(bind.split()[1].rsplit(":", 1)[1])
    (default,) = [line.split()[1] for line in frontend if line.startswith("default_backend ")]
    return port, sections[("backend", default)]


def upstreams() -> dict[str, tuple[str, int]]:
    """The proxy's servers: name -> (host, port)."""
    _, backend = proxy_frontend()
    out = {}
    for line in backend:
        if line.startswith("server "):
            _, name, address, *_ = line.split()
            host, _, port = address.rpartition(":")
            out[name] = (host, int(port))
    return out


def proxy_health_path(backend: list[str] | None = None) -> str:
    if backend is None:
        _, backend = proxy_frontend()
    assert "option httpchk" in backend, "the proxy checks its upstreams over HTTP"
    (send,) = [line.split() for line in backend if line.startswith("http-check send ")]
    uri = send[send.index("uri") + 1]
    defaults = [line.split() for line in backend if line.startswith("default-server ")]
    servers = [line.split() for line in backend if line.startswith("server ")]
    assert all("check" in words for words in servers) or any("check" in words for words in defaults), (
        "every upstream server is health-checked"
    )
    return uri


def kek_init_script() -> str:
    command = services()["kek-init"]["command"]
    assert command[:2] == ["sh", "-euc"], "kek-init runs one sh script, stopping at the first error"
    return unescape(command[2])


@pytest.fixture
def app_routes(runtime: Runtime) -> set[tuple[str, str]]:
    app = create_app(runtime=runtime, background=False)
    return {(method, route.path) for route in app.routes for method in (getattr(route, "methods", None) or ())}


# --- The services ------------------------------------------------------------------------------------------


def test_every_service_the_issue_names_exists() -> None:
    assert SERVICES <= set(services()), f"missing: {sorted(SERVICES - set(services()))}"


def test_compose_needs_no_variables_from_the_user() -> None:
    """`docker compose up` with nothing generated by hand: every variable has a default, every literal $ is $$."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    unescaped = re.sub(r"\$\$", "", text)
    for match in re.finditer(r"\$(\{[^}]*\}|\w+)", unescaped):
        assert re.fullmatch(r"\{\w+:-[^}]+\}", match.group(1)), f"{match.group(0)} has no default"
    assert "$" not in re.sub(r"\$\{\w+:-[^}]+\}", "", unescaped), "a lone $ would be interpolated by compose"


def test_replicas_share_one_image_config_kek_and_redis() -> None:
    svc = services()
    volumes = compose().get("volumes") or {}
    first = svc[REPLICAS[0]]
    for name in REPLICAS:
        service = svc[name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (PROJECT_ROOT / context / dockerfile_name).resolve() == DOCKERFILE
        assert service.get("image") == first.get("image")
        assert sorted(mounts(service), key=str) == sorted(mounts(first), key=str), f"{name} mounts differ"
        assert environment(service) == environment(first), f"{name}: environment differs"

        config = host_path(service, serve_args(name).config)
        assert config.is_file() and config.is_relative_to(PROJECT_ROOT / "deploy"), config

        settings = replica_settings(name)
        kek = mount_at(service, settings.kek_file)
        assert not kek.bind and kek.source in volumes, f"the KEK lives in a named volume, not {kek.source}"
        assert kek.read_only, "the replicas only read the KEK"

    assert len({replica_settings(n).store_url for n in REPLICAS}) == 1
    assert len({replica_settings(n).kek_file for n in REPLICAS}) == 1
    assert len({replica_settings(n).issuer for n in REPLICAS}) == 1


@pytest.mark.parametrize("name", REPLICAS)
def test_replica_configuration_passes_validation(name: str) -> None:
    settings = replica_settings(name)  # raises ConfigError (one line per problem) if refused
    assert not settings.embedded, "replicas share Redis; the embedded SQLite mode is for one process"

    url = urlsplit(settings.store_url)
    assert url.scheme == "redis"
    assert url.hostname == "redis" and url.hostname in services(), "store.url names the compose service"
    assert (url.port or REDIS_DEFAULT_PORT) == redis_port()

    proxy = proxy_published()
    issuer = urlsplit(settings.issuer)
    assert issuer.hostname in LOOPBACK, "the issuer is the proxy as this machine reaches it"
    assert (issuer.port or {"http": 80, "https": 443}[issuer.scheme]) == proxy.host_port

    kek_volume = mount_at(services()[name], settings.kek_file)
    assert PurePosixPath(settings.kek_file).is_relative_to(kek_volume.target)
    assert PurePosixPath(settings.kek_file) != PurePosixPath(kek_volume.target)

    # The file and the environment say the same: nothing drifts between deploy/jwks.toml and compose.
    file_only = replica_settings(name, with_env=False)
    assert (file_only.issuer, file_only.store_url, file_only.kek_file) == (
        settings.issuer,
        settings.store_url,
        settings.kek_file,
    )


def test_cli_in_a_replica_container_reads_the_same_configuration() -> None:
    """`docker compose exec jwks-1 jwks-service clients create ...` (no --config) must reach the Redis the
    servers use, not the embedded SQLite defaults of an empty container."""
    args = build_parser().parse_args(["clients", "create", "demo", "--scope", "read", "--audience", "api"])
    assert not getattr(args, "config", None)
    for name in REPLICAS:
        env = container_env(name)
        assert env.get("JWKS_CONFIG") == serve_args(name).config, "JWKS_CONFIG names the file the server reads"
        env["JWKS_CONFIG"] = str(host_path(services()[name], env["JWKS_CONFIG"]))
        assert load_settings(None, environ=env) == replica_settings(name)


# --- Ports ---------------------------------------------------------------------------------------------------


def redis_port() -> int:
    command = [str(c) for c in services()["redis"].get("command") or []]
    return int(command[command.index("--port") + 1]) if "--port" in command else REDIS_DEFAULT_PORT


def proxy_published() -> Published:
    bind_port, _ = proxy_frontend()
    (port,) = [p for p in published(services()["proxy"]) if p.container_port == bind_port]
    return port


def test_replica_listen_port_is_the_one_exposed_published_and_proxied() -> None:
    image = dockerfile()
    upstream = upstreams()
    assert set(upstream) == set(REPLICAS), "the proxy balances over exactly the three replicas"
    host_ports = []
    for name in REPLICAS:
        args = serve_args(name)
        assert args.func is cmd_serve
        host, port = split_listen(args.listen or replica_settings(name).listen)
        assert host in ANY_ADDRESS, f"{name} listens on {host}: unreachable from the proxy"
        assert split_listen(replica_settings(name).listen)[1] == port, "deploy/jwks.toml listen agrees with --listen"
        assert port in image.expose
        assert upstream[name] == (name, port), f"the proxy sends {name}'s traffic to {upstream[name]}"
        (debug,) = published(services()[name])
        assert debug.container_port == port
        assert debug.host_ip in LOOPBACK, "debug ports bypass the proxy: this machine only"
        host_ports.append(debug.host_port)
    assert len(set(host_ports)) == len(REPLICAS) and None not in host_ports, host_ports
    assert proxy_published().host_port not in host_ports


def test_proxy_publishes_the_issuer_port() -> None:
    issuer = urlsplit(replica_settings(REPLICAS[0]).issuer)
    port = proxy_published()
    assert port.host_port == (issuer.port or {"http": 80, "https": 443}[issuer.scheme])
    proxy = services()["proxy"]
    config = [m for m in mounts(proxy) if m.bind]
    assert any((PROJECT_ROOT / m.source).resolve() == HAPROXY_CFG for m in config), "the proxy reads deploy/"
    assert set(depends_on(proxy)) == set(REPLICAS)


def test_proxy_passes_client_addresses_only_it_may_set() -> None:
    """Client authentication is throttled per source address: behind the proxy that must be the client's, and
    only the proxy may claim one: each replica's [http] trusted_proxies is exactly the proxy's fixed address
    (X-Forwarded-For from anyone else is ignored), and no FORWARDED_ALLOW_IPS is left (`serve` ignores it)."""
    defaults = haproxy()[("defaults", "")]
    _, backend = proxy_frontend()
    assert "option forwardfor" in defaults + backend
    networks = services()["proxy"]["networks"]
    (proxy_ip,) = [ipaddress.ip_address(spec["ipv4_address"]) for spec in networks.values()]
    (network,) = networks
    subnets = [ipaddress.ip_network(c["subnet"]) for c in compose()["networks"][network]["ipam"]["config"]]
    assert any(proxy_ip in subnet for subnet in subnets)
    for name in REPLICAS:
        assert network in services()[name]["networks"]
        assert "FORWARDED_ALLOW_IPS" not in container_env(name), "ignored by serve: use [http] trusted_proxies"
        trusted = replica_settings(name).trusted_proxies
        assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(proxy_ip)]
        assert replica_settings(name, with_env=False).trusted_proxies == trusted, "set in deploy/jwks.toml"
        assert uvicorn_proxy_options(replica_settings(name)) == {
            "proxy_headers": True,
            "forwarded_allow_ips": [str(proxy_ip)],
        }


def test_redis_and_openbao_stay_on_this_machine() -> None:
    """Redis is not published beyond loopback (best: not at all); OpenBao's dev root token is well known."""
    for port in published(services()["redis"]):
        assert port.host_ip in LOOPBACK, f"Redis published beyond loopback: {port}"
    for name, service in services().items():
        for port in published(service):
            assert port.container_port != redis_port() or port.host_ip in LOOPBACK, name
    for port in published(services()["openbao"]):
        assert port.host_ip in LOOPBACK


# --- Health checks ---------------------------------------------------------------------------------------


def test_health_checks_hit_real_routes(app_routes: set[tuple[str, str]]) -> None:
    image = dockerfile()
    check = image.healthcheck
    assert check[:2] == ["python", "-c"], "python:3.11-slim has no curl: the check is Python"
    compile(check[2], "HEALTHCHECK", "exec")
    (url,) = re.findall(r"https?://[^'\"\s]+", check[2])
    parts = urlsplit(url)
    assert ("GET", parts.path) in app_routes
    assert parts.hostname in LOOPBACK
    assert parts.port == split_listen(image.cmd[image.cmd.index("--listen") + 1])[1]

    path = proxy_health_path()
    assert ("GET", path) in app_routes
    assert path == "/readyz", "the proxy routes to replicas that are ready"
    # /readyz is 503 while Redis is down, when every replica still signs and serves the JWKS from memory:
    # then the proxy must route by liveness instead, to the same servers, rather than drop them all.
    sections = haproxy()
    (frontend,) = [lines for (kind, _), lines in sections.items() if kind == "frontend"]
    (fallback,) = [line.split() for line in frontend if line.startswith("use_backend ")]
    _, default = proxy_frontend()
    (default_name,) = [name for (kind, name), lines in sections.items() if kind == "backend" and lines == default]
    assert fallback[2:] == ["if", "{", "nbsrv(" + default_name + ")", "eq", "0", "}"], fallback
    live = sections[("backend", fallback[1])]
    assert proxy_health_path(live) == "/healthz"
    assert [line for line in live if line.startswith("server ")] == [
        line for line in default if line.startswith("server ")
    ], "the fallback has the same servers"


def test_every_service_healthy_dependency_has_a_health_check() -> None:
    svc = services()
    for name, service in svc.items():
        for dep, condition in depends_on(service).items():
            assert dep in svc, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                has_own = bool(svc[dep].get("healthcheck", {}).get("test"))
                from_image = "build" in svc[dep] and bool(dockerfile().healthcheck)
                assert has_own or from_image, f"{name} waits for {dep} to be healthy; {dep} has no health check"
    redis_check = svc["redis"]["healthcheck"]["test"]
    assert redis_check[-2:] == ["redis-cli", "ping"]


# --- The image -------------------------------------------------------------------------------------------


def test_dockerfile_cmd_is_a_real_cli_invocation() -> None:
    image = dockerfile()
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert image.cmd[0] in scripts, "the CMD runs the package's console script"
    args = build_parser().parse_args(image.cmd[1:])
    assert args.func is cmd_serve
    assert args.workers == 1, "one process per container: scale with replicas"
    assert args.config == image.env["JWKS_CONFIG"]
    assert split_listen(args.listen)[1] in image.expose


def test_image_is_slim_unprivileged_and_without_dev_extras() -> None:
    image = dockerfile()
    assert image.base_images and all(b.startswith("python:3.11-slim") for b in image.base_images)
    assert image.user not in ("", "root", "0") and not image.user.startswith(("root:", "0:"))
    installs = [r for r in image.run if "pip install" in r or "pip wheel" in r]
    assert installs and not any("[dev]" in r or "-e " in r for r in installs)
    uid = re.search(r"useradd\b[^&]*--uid (\d+)", " ".join(image.run))
    gid = re.search(r"groupadd\b[^&]*--gid (\d+)", " ".join(image.run))
    assert uid and gid
    # The KEK is mode 0600: only its owner, the image's user, may read it.
    assert environment(services()["kek-init"])["KEK_OWNER"] == f"{uid.group(1)}:{gid.group(1)}"


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: nothing enters the build context unless named"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for source in dockerfile().copy_sources:
        assert source.rstrip("/") in allowed, f"COPY {source} is not in the build context"
        assert (PROJECT_ROOT / source).exists()
    assert not allowed & {"var", ".venv", ".git", "deploy"}, "no KEK, store, venv or history in the image"


# --- Redis, the KEK and OpenBao -------------------------------------------------------------------------


def test_redis_persists_every_write() -> None:
    redis = services()["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    command = [str(c) for c in redis["command"]]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    # always: a write is on disk before Redis acknowledges it, so a killed Redis loses no key.
    assert command[command.index("--appendfsync") + 1] == "always"
    (data,) = [m for m in mounts(redis) if m.target == "/data"]  # redis:7's working directory
    assert not data.bind and data.source in (compose().get("volumes") or {}) and not data.read_only


def test_replicas_start_after_redis_and_the_kek() -> None:
    svc = services()
    for name in REPLICAS:
        deps = depends_on(svc[name])
        assert deps.get("redis") == "service_healthy"
        assert deps.get("kek-init") == "service_completed_successfully"
    kek_init = svc["kek-init"]
    assert str(kek_init.get("restart", "no")) == "no", "kek-init is one-shot"
    env = environment(kek_init)
    writer = mount_at(kek_init, env["KEK_FILE"])
    assert not writer.read_only
    for name in REPLICAS:
        settings = replica_settings(name)
        reader = mount_at(svc[name], settings.kek_file)
        assert reader.source == writer.source, "kek-init writes the volume the replicas read"
        assert PurePosixPath(env["KEK_FILE"]).relative_to(writer.target) == PurePosixPath(
            settings.kek_file
        ).relative_to(reader.target), "kek-init writes the file the replicas read"


def test_kek_init_creates_a_kek_our_loader_accepts_and_never_replaces_it(tmp_path: Path) -> None:
    kek = tmp_path / "volume" / "kek"
    kek.parent.mkdir()
    env = {
        **os.environ,
        **environment(services()["kek-init"]),
        "KEK_FILE": str(kek),
        "KEK_OWNER": f"{os.getuid()}:{os.getgid()}",
    }
    script = kek_init_script()
    subprocess.run(["sh", "-euc", script], env=env, check=True, capture_output=True, timeout=30)
    assert kek.stat().st_mode & 0o777 == 0o600
    loaded = load_kek(str(kek), create=False)
    assert len(loaded.key) == KEK_BYTES
    first = kek.read_bytes()
    subprocess.run(["sh", "-euc", script], env=env, check=True, capture_output=True, timeout=30)
    assert kek.read_bytes() == first, "a second start keeps the KEK (replacing it would lose every key)"
    assert list(kek.parent.iterdir()) == [kek], "no temporary file left behind"


def test_openbao_runs_in_dev_mode_with_a_token_from_the_environment() -> None:
    bao = services()["openbao"]
    assert bao["image"].split(":")[0] == "openbao/openbao"
    assert [str(c) for c in bao["command"]][:2] == ["server", "-dev"]
    token = environment(bao)["BAO_DEV_ROOT_TOKEN_ID"]
    assert re.fullmatch(r"\$\{\w+:-[^}]+\}", token), "the dev root token comes from the environment, with a default"
    assert any(p.container_port == 8200 and p.host_port == 8200 for p in published(bao))
    for name in REPLICAS:
        assert "openbao" not in depends_on(services()[name]), "the replicas do not use OpenBao yet"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed: its own check is skipped")
def test_haproxy_accepts_its_configuration() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- On loopback -----------------------------------------------------------------------------------------


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.running.append((proc, log))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for proc, log in self.running:
            self.stop(proc)
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_stack_without_docker(tmp_path: Path, processes: Processes) -> None:
    """Redis with the compose arguments, kek-init's script, a replica with the image's CMD, ENV and health
    check: a client created as `docker compose exec` would gets tokens, and a killed Redis loses nothing."""
    from jwks_service.stores.redis import RedisStore

    redis_port_local = free_port()
    redis_cmd = [str(c) for c in services()["redis"]["command"]]
    redis_argv = [
        shutil.which("redis-server") or "redis-server",
        *redis_cmd[1:],
        *("--port", str(redis_port_local), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
    ]
    redis_url = f"redis://127.0.0.1:{redis_port_local}/0"

    def start_redis() -> subprocess.Popen[bytes]:
        proc = processes.start("redis", redis_argv)
        store = RedisStore(redis_url)
        try:
            wait_until(lambda: store.revision() is not None, timeout=10)
        finally:
            store.close()
        return proc

    redis_proc = start_redis()

    kek = tmp_path / "kek-volume" / "kek"
    kek.parent.mkdir()
    kek_env = {**os.environ, "KEK_FILE": str(kek), "KEK_OWNER": f"{os.getuid()}:{os.getgid()}"}
    subprocess.run(["sh", "-euc", kek_init_script()], env=kek_env, check=True, capture_output=True, timeout=30)

    name = REPLICAS[0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}
    env |= container_env(name)
    env |= {
        "JWKS_CONFIG": str(host_path(services()[name], container_env(name)["JWKS_CONFIG"])),
        "JWKS_STORE__URL": redis_url,  # the compose service, here on loopback
        "JWKS_SECRETS__KEK_FILE": str(kek),
        "JWKS_ISSUER": f"http://127.0.0.1:{port}",
    }
    args = serve_args(name)  # the replica's command, as the CLI parses it; paths and port made local
    config = str(host_path(services()[name], args.config))
    argv = [sys.executable, "-m", "jwks_service", "serve", "--config", config, "--listen", f"127.0.0.1:{port}"]
    server = processes.start(name, [*argv, "--workers", str(args.workers)], env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=30)

    check = dockerfile().healthcheck
    container_url = re.findall(r"https?://[^'\"\s]+", check[2])[0]
    local_check = [sys.executable, "-c", check[2].replace(container_url, base + urlsplit(container_url).path)]
    assert subprocess.run(local_check, capture_output=True, timeout=30, check=False).returncode == 0

    created = subprocess.run(
        [sys.executable, "-m", "jwks_service", "clients", "create", "demo", "--scope", "read", "--audience", "api"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    client_id = re.search(r"client_id:\s+(\S+)", created.stdout)
    secret = re.search(r"client_secret:\s+(\S+)", created.stdout)
    assert client_id and secret, created.stdout
    token = httpx.post(
        f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id[1], secret[1]), timeout=10
    )
    assert token.status_code == 200, token.text
    assert not (tmp_path / "var").exists(), "nothing fell back to the embedded SQLite store"

    def state() -> tuple[list[tuple[str, str, str]], list[str]]:
        store = RedisStore(redis_url)
        try:
            keys = sorted((ks.name, k.kid, k.state.value) for ks in store.list_keysets() for k in ks.keys)
            return keys, sorted(c.client_id for c in store.list_clients())
        finally:
            store.close()

    before = state()
    assert before[0] and before[1] == [client_id[1]]
    processes.stop(redis_proc, kill=True)  # a crash: no shutdown, no final save
    start_redis()
    assert state() == before, "Redis came back without some of its keys"

    processes.stop(server)
    assert subprocess.run(local_check, capture_output=True, timeout=30, check=False).returncode != 0


def test_replicas_drain_longer_than_the_proxy_takes_to_notice() -> None:
    """On SIGTERM a replica answers /healthz 503 for its drain period before it stops (serve --drain):
    the proxy must have taken it out of rotation by then (fall failed checks, inter apart, each up to
    `timeout check`), and Docker must not SIGKILL it before the drain and the graceful shutdown end."""
    _, backend = proxy_frontend()
    (default,) = [line.split() for line in backend if line.startswith("default-server ")]

    def seconds(value: str) -> float:  # HAProxy time: 500ms, 2s
        return float(value[:-2]) / 1000 if value.endswith("ms") else float(value.removesuffix("s"))

    inter = seconds(default[default.index("inter") + 1])
    fall = int(default[default.index("fall") + 1])
    (check,) = [line.split() for line in haproxy()[("defaults", "")] if line.startswith("timeout check ")]
    notice = fall * inter + seconds(check[2])
    for name in REPLICAS:
        drain = parse_duration(serve_args(name).drain, "--drain")
        assert drain >= notice, f"{name}: --drain {drain}s, the proxy may take {notice}s to notice"
        grace = parse_duration(services()[name].get("stop_grace_period", "10s"), "stop_grace_period")
        assert grace > drain + GRACEFUL_SHUTDOWN_SECONDS, f"{name}: stop_grace_period {grace}s"
