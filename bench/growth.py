"""How the cost grows: issuance and the JWKS against what the service holds, and store operations.

- issuance (``POST /oauth/token`` over HTTP, wrk, one worker) against the number of registered
  clients (created in bulk through the store before the server starts, not over HTTP); the load
  cycles through up to 1,000 of them, so the client cache is exercised too;
- issuance against the number of keysets (each client bound to its own keyset, the load cycling
  through them);
- issuance, the JWKS over HTTP and the JWKS rendered in process (``jwks.render_jwks``) against the
  number of live keys in the JWKS (forced rotations of one keyset with a long ``verify_window``);
- Redis commands per token (``INFO commandstats`` deltas while wrk issues tokens through one server
  on a Redis store, less the same server's idle traffic: its revision poll and scheduler) and per
  forced rotation against the number of replicas (1, 3, 6 processes on one Redis).

The design says issuance costs the same whatever the number of clients and keysets, and needs no
store command per token: those curves should be flat. Each point is short (``seconds`` of wrk).

    python bench/growth.py [--quick] [--json F] [--png F]
    python bench/growth.py --per-token 1,10,1000 [--json F]   # only Redis commands per token
    python bench/growth.py --clients 100000 [--json F]         # only issuance against registered clients
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import sign
from baoserver import free_port, stop_process
from httpbench import _WRK_DONE, Progress, Request, _lua_string, our_server, run_load, wrk_path
from newconn import cpu_seconds

LOAD_CLIENTS = 1_000  # at most this many distinct clients take turns in a load


@dataclass(frozen=True)
class Sizes:
    clients: tuple[int, ...]
    keysets: tuple[int, ...]
    keys: tuple[int, ...]
    replicas: tuple[int, ...]
    seconds: float  # of wrk per point
    rotations: int  # per replica count
    connections: int = 32
    busy_clients: int = LOAD_CLIENTS  # Redis commands per token: also with this many clients taking turns


FULL = Sizes((10, 1_000, 10_000, 100_000), (1, 10, 100), (3, 10, 25, 50), (1, 3, 6), 3.0, 6)
QUICK = Sizes((10, 200), (1, 3), (3, 6), (1, 2), 1.0, 2, 8, 50)


# ----- setup: configuration, bulk clients, Redis ---------------------------------------------------


def _config(base: str, store_url: str, kek: Path, keysets: Sequence[str], verify_window: str = "") -> str:
    text = f'issuer = "{base}"\n[store]\nurl = "{store_url}"\n[secrets]\nkek_file = "{kek}"\n'
    for name in keysets:
        text += f'[keysets.{name}]\nalg = "ES256"\ntoken_ttl = "15m"\n'
        if verify_window:
            text += f'verify_window = "{verify_window}"\n'
    return text


@contextmanager
def _runtime(config: Path) -> Iterator[Any]:
    """The service's runtime in this process (store, KEK, keys), as `serve` builds it, without a server."""
    from jwks_service.config import load_settings
    from jwks_service.runtime import build_runtime

    rt = build_runtime(load_settings(str(config), environ={}))
    try:
        yield rt
    finally:
        rt.close()


def add_clients(rt: Any, count: int, keysets: Sequence[str], sample: int = LOAD_CLIENTS) -> list[str]:
    """`count` clients written straight to the store (one secret for all, each its own id and keyset);
    returns the Basic credentials of up to `sample` of them, spread over the ones added."""
    from jwks_service.clients import generate_client_id, generate_secret
    from jwks_service.model import Client, SecretHash

    secret = generate_secret()
    digest = rt.clients.digest(secret)
    now = time.time()
    step = max(1, count // sample)
    auths: list[str] = []
    for i in range(count):
        client = Client(
            generate_client_id(), f"bulk-{i}", ("read",), ("api",), keysets[i % len(keysets)], 900, now,
            (SecretHash(digest, now),),
        )  # fmt: skip
        rt.store.put_client(client)
        if i % step == 0 and len(auths) < sample:
            auths.append("Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode())
    return auths


@contextmanager
def redis_server(work: Path) -> Iterator[tuple[str, Any]]:
    """A private redis-server on a free loopback port, no persistence; (url, client)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        client.close()
        stop_process(proc)


def commandstats(client: Any) -> dict[str, int]:
    """Calls per Redis command so far, without the ones this measurement makes (INFO, CONFIG)."""
    stats = client.info("commandstats")
    out = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {k: v for k, v in out.items() if k not in ("info", "config|resetstat", "config", "ping")}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


# ----- load ---------------------------------------------------------------------------------------


def wrk_tokens(url: str, auths: Sequence[str], seconds: float, connections: int, work: Path) -> dict[str, float]:
    """wrk POSTs client_credentials requests to `url`, each with the next of `auths` in turn."""
    table = ",".join(_lua_string(a) for a in auths)
    script = work / "tokens.lua"
    script.write_text(
        f"local auths = {{{table}}}\nlocal i = 0\n"
        'local body = "grant_type=client_credentials"\n'
        "request = function()\n  i = i % #auths + 1\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded", '
        '["Authorization"] = auths[i]}, body)\nend\n' + _WRK_DONE,
        encoding="utf-8",
    )
    duration = max(1, round(seconds))
    cmd = [str(wrk_path()), "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            elapsed = data["duration_us"] / 1e6
            return {
                "requests": data["requests"],
                "seconds": elapsed,
                "errors": data["errors"] + data["status"],
                "rps": data["requests"] / elapsed,
                "p50_ms": data["p50_us"] / 1e3,
                "p99_ms": data["p99_us"] / 1e3,
            }
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip()[-500:]}")


def _issuance(server: Any, auths: Sequence[str], sizes: Sizes, work: Path, settle: float = 1.0) -> dict[str, float]:
    """Tokens/s right after the start (``startup_rps``: the server still loads every client record
    in the background), then, after `settle` seconds more of load, the steady rate and the server's
    CPU per token (steadier than the rate on a shared machine)."""
    url = server.base + "/oauth/token"
    startup = wrk_tokens(url, auths, sizes.seconds, sizes.connections, work)
    wrk_tokens(url, auths, settle, sizes.connections, work)  # warm: every client looked up, startup done
    cpu = cpu_seconds([server.pid])
    point = wrk_tokens(url, auths, sizes.seconds, sizes.connections, work)
    used = cpu_seconds([server.pid]) - cpu
    point["server_cpu"] = round(used / point["seconds"], 3)
    point["cpu_us_per_token"] = round(used / max(1, point["requests"]) * 1e6, 1)
    point["startup_rps"] = startup["rps"]
    return point


def _server(
    work: Path, name: str, store_url: str, kek: Path, keysets: Sequence[str], verify_window: str = ""
) -> tuple[ExitStack, Any]:
    """A `serve` process (not started yet) on the given store and keysets, and what stops it."""
    stack = ExitStack()
    server = stack.enter_context(our_server(work / name))
    server.config.write_text(_config(server.base, store_url, kek, keysets, verify_window), encoding="utf-8")
    return stack, server


# ----- the curves ---------------------------------------------------------------------------------


def issuance_vs_clients(sizes: Sizes, work: Path, say: Progress) -> list[dict[str, Any]]:
    folder = work / "clients"
    folder.mkdir()
    config = folder / "jwks.toml"
    db, kek = folder / "jwks.db", folder / "kek"
    points: list[dict[str, Any]] = []
    registered = 0
    auths: list[str] = []
    for count in sizes.clients:
        started = time.perf_counter()
        with _runtime(_write(config, _config("http://127.0.0.1", f"sqlite:///{db}", kek, ["default"]))) as rt:
            added = add_clients(rt, count - registered, ["default"])
            listed = time.perf_counter()
            rt.clients.remember_all()  # what a starting server reads in the background, page by page
            listed = time.perf_counter() - listed
        registered = count
        auths = (auths + added)[-LOAD_CLIENTS:]
        say(f"growth: {count:,} clients registered ({time.perf_counter() - started:.1f} s); issuing")
        stack, server = _server(work, f"clients-{count}", f"sqlite:///{db}", kek, ["default"])
        with stack:
            server.start()
            point = _issuance(server, auths, sizes, work, settle=min(60.0, max(1.0, 2 * listed)))
        points.append({"clients": count, "load_clients": len(auths), "list_clients_s": round(listed, 2), **point})
    return points


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def issuance_vs_keysets(sizes: Sizes, work: Path, say: Progress) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for count in sizes.keysets:
        folder = work / f"keysets-{count}"
        folder.mkdir()
        names = [f"ks{i}" for i in range(count)]
        db, kek = folder / "jwks.db", folder / "kek"
        with _runtime(_write(folder / "setup.toml", _config("http://127.0.0.1", f"sqlite:///{db}", kek, names))) as rt:
            auths = add_clients(rt, count, names)
        say(f"growth: {count} keysets; issuing")
        stack, server = _server(work, f"keysets-{count}-server", f"sqlite:///{db}", kek, names)
        with stack:
            server.start()
            point = _issuance(server, auths, sizes, work)
        points.append({"keysets": count, **point})
    return points


def vs_live_keys(sizes: Sizes, work: Path, say: Progress) -> list[dict[str, Any]]:
    import httpx

    from jwks_service.jwks import render_jwks

    folder = work / "keys"
    folder.mkdir()
    db, kek = folder / "jwks.db", folder / "kek"
    config = _write(folder / "setup.toml", _config("http://127.0.0.1", f"sqlite:///{db}", kek, ["default"], "30d"))
    points: list[dict[str, Any]] = []
    auths: list[str] = []
    for target in sizes.keys:
        with _runtime(config) as rt:
            if not auths:
                auths = add_clients(rt, 1, ["default"])
            for _ in range(LOAD_CLIENTS):  # bounded: each forced rotation adds one previous key
                if len(render_jwks(rt.store.list_keysets()).kids) >= target:
                    break
                rt.keys.rotate("default", force=True, actor="bench")
            keysets = rt.store.list_keysets()
            rendered = render_jwks(keysets)
            render_rate = max(sign._rate(partial(render_jwks, keysets), 0.2) for _ in range(3))
        say(f"growth: {len(rendered.kids)} live keys; issuing and serving the JWKS")
        stack, server = _server(work, f"keys-{target}", f"sqlite:///{db}", kek, ["default"], "30d")
        with stack:
            server.start()
            served = len(httpx.get(server.base + "/.well-known/jwks.json").json()["keys"])
            point = _issuance(server, auths, sizes, work)
            jwks = run_load(
                "jwks",
                "ours",
                1,
                Request("GET", server.base + "/.well-known/jwks.json"),
                connections=sizes.connections,
                seconds=sizes.seconds,
                pids=[server.pid],
                workdir=work,
                generator="wrk",
            )
        points.append(
            {
                "keys": served,
                "jwks_bytes": len(rendered.body),
                "render_per_s": render_rate,
                "issuance_rps": point["rps"],
                "issuance_p99_ms": point["p99_ms"],
                "jwks_rps": jwks.rps,
                "jwks_p99_ms": jwks.p99_ms,
                "errors": point["errors"] + jwks.errors,
            }
        )
    return points


def _redis_setup(folder: Path, url: str, replicas: int = 0) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    kek = folder / "kek"
    if not kek.exists():
        kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n", encoding="utf-8")
        os.chmod(kek, 0o600)
    return kek, _write(folder / "setup.toml", _config("http://127.0.0.1", url, kek, ["default"]))


def store_ops_per_token(sizes: Sizes, work: Path, say: Progress, clients: int = 1) -> dict[str, Any]:
    """Redis commands per token through one server, `clients` clients taking turns. The failure
    throttle's counters are not read while the server's background read of the failing keys (once a
    second, `throttle.FailingKeys`) is fresh and names none of a request's keys, however many clients
    take turns; the read itself is idle traffic (one ZRANGEBYSCORE a second)."""
    with redis_server(work) as (url, redis):
        kek, config = _redis_setup(work / f"ops-token-{clients}", url)
        with _runtime(config) as rt:
            auths = add_clients(rt, clients, ["default"])
        stack, server = _server(work, f"ops-token-{clients}-server", url, kek, ["default"])
        with stack:
            server.start()
            token_url = server.base + "/oauth/token"
            wrk_tokens(token_url, auths, 1.0, sizes.connections, work)  # warm
            say(f"growth: Redis commands while idle, then while issuing ({clients} client(s) taking turns)")
            before, t0 = commandstats(redis), time.perf_counter()
            time.sleep(sizes.seconds)
            idle = _delta(before, commandstats(redis))
            idle_seconds = time.perf_counter() - t0
            before = commandstats(redis)
            load = wrk_tokens(token_url, auths, sizes.seconds, sizes.connections, work)
            busy = _delta(before, commandstats(redis))
    tokens = load["requests"] - load["errors"]
    idle_rate = sum(idle.values()) / idle_seconds
    extra = sum(busy.values()) - idle_rate * load["seconds"]
    return {
        "clients": clients,
        "tokens": tokens,
        "seconds": load["seconds"],
        "rps": load["rps"],
        "idle_commands_per_s": idle_rate,
        "idle_by_command": idle,
        "load_by_command": busy,
        "commands_per_token": max(0.0, extra) / tokens if tokens else 0.0,
        "raw_commands_per_token": sum(busy.values()) / tokens if tokens else 0.0,
    }


def store_ops_per_rotation(sizes: Sizes, work: Path, say: Progress) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for replicas in sizes.replicas:
        with redis_server(work) as (url, redis):
            kek, config = _redis_setup(work / f"rot-{replicas}", url)
            stacks = []
            try:
                with _runtime(config) as rt:
                    for i in range(replicas):
                        stack, server = _server(work, f"rot-{replicas}-{i}", url, kek, ["default"])
                        stacks.append(stack)
                        server.start()
                    say(f"growth: {replicas} replica(s) on one Redis: idle, then {sizes.rotations} forced rotations")
                    time.sleep(1.0)
                    before, t0 = commandstats(redis), time.perf_counter()
                    time.sleep(sizes.seconds)
                    idle = _delta(before, commandstats(redis))
                    idle_rate = sum(idle.values()) / (time.perf_counter() - t0)
                    before, t0 = commandstats(redis), time.perf_counter()
                    for _ in range(sizes.rotations):
                        rt.keys.rotate("default", force=True, actor="bench")
                        time.sleep(0.5)  # every replica reloads before the next one
                    time.sleep(0.5)
                    busy = _delta(before, commandstats(redis))
                    window = time.perf_counter() - t0
            finally:
                for stack in stacks:
                    stack.close()
        extra = sum(busy.values()) - idle_rate * window
        points.append(
            {
                "replicas": replicas,
                "rotations": sizes.rotations,
                "idle_commands_per_s": idle_rate,
                "commands_per_rotation": max(0.0, extra) / sizes.rotations,
                "load_by_command": busy,
                "window_s": round(window, 2),
            }
        )
    return points


def run_growth(sizes: Sizes = FULL, progress: Progress | None = None) -> dict[str, Any]:
    say = progress or (lambda msg: None)
    doc: dict[str, Any] = {"sizes": sizes.__dict__, "started": time.strftime("%H:%M:%S UTC", time.gmtime())}
    if wrk_path() is None:
        doc["notes"] = ["not measured: wrk is not on PATH (apt-get install wrk)"]
        return doc
    with tempfile.TemporaryDirectory(prefix="jwks-bench-growth-") as tmp:
        work = Path(tmp)
        doc["clients"] = issuance_vs_clients(sizes, work, say)
        doc["keysets"] = issuance_vs_keysets(sizes, work, say)
        doc["keys"] = vs_live_keys(sizes, work, say)
        doc["per_token"] = [store_ops_per_token(sizes, work, say, n) for n in (1, sizes.busy_clients)]
        doc["per_rotation"] = store_ops_per_rotation(sizes, work, say)
    doc["finished"] = time.strftime("%H:%M:%S UTC", time.gmtime())
    return doc


# ----- report -------------------------------------------------------------------------------------


def markdown(g: dict[str, Any]) -> list[str]:
    out = [f"## How cost grows (one worker, wrk, {g['sizes']['seconds']:g} s a point; {g['started']})", ""]
    out += [f"- {n}" for n in g.get("notes", [])]
    if "clients" not in g:
        return [*out, ""]
    out.append(
        "Issuance against registered clients (the load takes turns over up to 1,000 of them; first seconds: "
        "right after the start, while the server reads every client record in the background; steady: after "
        "that, twice as long as reading them all took in this process):"
    )
    head = "| tokens/s | p99 ms | server CPU | CPU µs/token | errors |"
    out += ["", f"| clients | first seconds, tokens/s {head}", "|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {p['clients']:,} | {p['startup_rps']:,.0f} {_cells(p)}" for p in g["clients"]]
    out += ["", "Issuance against keysets (one client per keyset, taking turns):", ""]
    out += [f"| keysets {head}", "|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {p['keysets']} {_cells(p)}" for p in g["keysets"]]
    out += ["", "Against live keys in the JWKS (one ES256 keyset, forced rotations, verify_window 30d):", ""]
    out += ["| keys | JWKS bytes | renders/s (in process) | JWKS req/s | tokens/s |", "|---:|---:|---:|---:|---:|"]
    out += [
        f"| {p['keys']} | {p['jwks_bytes']:,} | {p['render_per_s']:,.0f} | {p['jwks_rps']:,.0f} | "
        f"{p['issuance_rps']:,.0f} |"
        for p in g["keys"]
    ]
    out += per_token_table(g["per_token"])
    out += [
        "",
        "Redis commands per forced rotation (the writer's and every replica's reload), beyond idle traffic:",
        "",
        "| replicas | commands/rotation | idle commands/s |",
        "|---:|---:|---:|",
    ]
    out += [
        f"| {p['replicas']} | {p['commands_per_rotation']:.1f} | {p['idle_commands_per_s']:.1f} |"
        for p in g["per_rotation"]
    ]
    return [*out, ""]


def per_token_table(points: Sequence[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "Redis commands per token (one server on a Redis store; beyond its idle traffic: the revision poll,"
        " the read of failing keys):",
        "",
        "| clients taking turns | tokens | tokens/s | commands/token | idle commands/s | commands under load |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    out += [
        f"| {t['clients']:,} | {t['tokens']:,} | {t['rps']:,.0f} | {t['commands_per_token']:.4f} | "
        f"{t['idle_commands_per_s']:.1f} | "
        + ", ".join(f"{k} {v}" for k, v in sorted(t["load_by_command"].items()))
        + " |"
        for t in points
    ]
    return out


def _cells(p: dict[str, Any]) -> str:
    return (
        f"| {p['rps']:,.0f} | {p['p99_ms']:.2f} | {p['server_cpu']:.2f} | {p['cpu_us_per_token']:,.0f} | "
        f"{p['errors']} |"
    )


def _rate_and_cpu(ax: Any, xs: Sequence[float], points: Sequence[dict[str, Any]], xlabel: str) -> None:
    ax.plot(xs, [p["rps"] for p in points], marker="o", label="tokens/s")
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="tokens/s")
    ax.set_ylim(bottom=0)
    cpu = ax.twinx()
    cpu.plot(xs, [p["cpu_us_per_token"] for p in points], marker="x", linestyle="--", color="tab:red")
    cpu.set_ylabel("server CPU µs per token (dashed)", color="tab:red")
    cpu.set_ylim(bottom=0)


def chart(g: dict[str, Any], path: Path) -> bool:
    if "clients" not in g:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _rate_and_cpu(axes[0][0], [p["clients"] for p in g["clients"]], g["clients"], "registered clients")
    axes[0][0].set_title("Issuance against registered clients (up to 1,000 take turns)", fontsize=10)
    _rate_and_cpu(axes[0][1], [p["keysets"] for p in g["keysets"]], g["keysets"], "keysets")
    axes[0][1].set_title("Issuance against keysets (flat = as designed)")
    ax = axes[1][0]
    keys = [p["keys"] for p in g["keys"]]
    ax.plot(keys, [p["issuance_rps"] for p in g["keys"]], marker="o", label="tokens/s")
    ax.plot(keys, [p["jwks_rps"] for p in g["keys"]], marker="s", label="JWKS req/s (HTTP)")
    ax.plot(keys, [p["render_per_s"] for p in g["keys"]], marker="x", label="JWKS renders/s (in process)")
    ax.set_yscale("log")
    ax.set(xlabel="live keys in the JWKS", ylabel="per second (log)", title="Against live keys")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    reps = g["per_rotation"]
    ax.plot([p["replicas"] for p in reps], [p["commands_per_rotation"] for p in reps], marker="o")
    ax.set(
        xlabel="replicas on one Redis",
        ylabel="Redis commands per rotation",
        title="Store ops per rotation; per token: "
        + ", ".join(f"{t['commands_per_token']:.2f} ({t['clients']} cl.)" for t in g["per_token"]),
    )
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/growth.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 s a point")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument("--png", metavar="PATH", help="write the chart to PATH")
    p.add_argument(
        "--per-token",
        metavar="N[,N...]",
        help="only Redis commands per token, with each of these numbers of clients taking turns (e.g. 1,10,1000)",
    )
    p.add_argument(
        "--clients",
        metavar="N[,N...]",
        help="only issuance against these numbers of registered clients (e.g. 100000: the first seconds after a start)",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    say = lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True)  # noqa: E731
    sizes = QUICK if args.quick else FULL
    if args.clients:
        if wrk_path() is None:
            print("not measured: wrk is not on PATH (apt-get install wrk)")
            return 1
        started = time.strftime("%H:%M:%S UTC", time.gmtime())
        sizes = replace(sizes, clients=tuple(int(n) for n in args.clients.split(",")))
        with tempfile.TemporaryDirectory(prefix="jwks-bench-growth-") as tmp:
            points = issuance_vs_clients(sizes, Path(tmp), say)
        print(f"## Issuance against registered clients (one worker, wrk, {sizes.seconds:g} s a point; {started})")
        print("\n| clients | first seconds, tokens/s | tokens/s | p99 ms | server CPU | CPU µs/token | errors |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(f"| {p['clients']:,} | {p['startup_rps']:,.0f} {_cells(p)}" for p in points))
        if args.json:
            Path(args.json).write_text(json.dumps({"started": started, "clients": points}, indent=2) + "\n")
        return 0
    if args.per_token:
        if wrk_path() is None:
            print("not measured: wrk is not on PATH (apt-get install wrk)")
            return 1
        started = time.strftime("%H:%M:%S UTC", time.gmtime())
        with tempfile.TemporaryDirectory(prefix="jwks-bench-growth-") as tmp:
            counts = [int(n) for n in args.per_token.split(",")]
            points = [store_ops_per_token(sizes, Path(tmp), say, n) for n in counts]
        print(f"## Redis commands per token (one worker, wrk, {sizes.seconds:g} s a point; {started})")
        print("\n".join(per_token_table(points)))
        if args.json:
            Path(args.json).write_text(json.dumps({"started": started, "per_token": points}, indent=2) + "\n")
        return 0
    g = run_growth(sizes, say)
    print("\n".join(markdown(g)))
    if args.json:
        Path(args.json).write_text(json.dumps(g, indent=2) + "\n", encoding="utf-8")
    if args.png:
        chart(g, Path(args.png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
