"""http/listeners.py: SIGHUP reloads of the TLS certificate, coalesced while one runs."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from bench.certs import issue, make_ca
from jwks_service import tls
from jwks_service.http.listeners import TlsReload


def test_sighups_during_a_reload_make_one_more_reload_after_it(tmp_path: Path) -> None:
    cert = issue(make_ca(tmp_path), tmp_path)
    reload = TlsReload(
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), tls.check(str(cert.cert_file), str(cert.key_file))
    )
    runs: list[int] = []

    async def slow_reload() -> None:
        runs.append(len(runs))
        await asyncio.sleep(0.02)

    reload.reload = slow_reload  # type: ignore[method-assign]

    async def main() -> None:
        reload.signalled()
        reload.signalled()  # before the reload has begun: the same reload
        await asyncio.sleep(0.005)
        reload.signalled()
        reload.signalled()  # two signals during the reload: one more after it
        assert reload._task is not None
        await reload._task
        assert runs == [0, 1]
        reload.signalled()  # idle again: a signal reloads once
        await reload._task
        assert runs == [0, 1, 2]

    asyncio.run(main())


def test_a_reload_loads_the_files_again_into_the_same_context(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    first = issue(ca, tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    reload = TlsReload(context, tls.check(str(first.cert_file), str(first.key_file)))
    issue(ca, tmp_path, common_name="renewed")
    asyncio.run(reload.reload())
    assert reload.context is context
    assert reload.cert.subject == "CN=renewed"
    (tmp_path / "tls.crt").write_text("garbage")
    asyncio.run(reload.reload())
    assert reload.cert.subject == "CN=renewed"  # refused: the previous certificate stays
