"""The plain KEK file: created whole or not at all, once, whoever races to create it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jwks_service.errors import ConfigError
from jwks_service.kek import load_kek


def test_a_reader_sees_no_file_or_the_whole_kek_at_every_step_of_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that looks after each system call of the creation (the worst moments it could pick)
    finds either no file or a complete KEK, never an empty or partial one."""
    path = tmp_path / "var" / "kek"
    seen: list[str] = []

    def probe() -> None:
        if not path.exists():
            seen.append("absent")
            return
        try:
            load_kek(str(path), create=False)
        except ConfigError as exc:
            seen.append(f"broken: {exc.description}")
        else:
            seen.append("whole")

    def probing(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            probe()
            return result

        return call

    for name in ("open", "fdopen", "fsync", "link", "replace", "rename"):
        monkeypatch.setattr(os, name, probing(getattr(os, name)))
    loaded = load_kek(str(path), create=True)
    monkeypatch.undo()

    assert loaded.generated
    assert not [s for s in seen if s.startswith("broken")], seen
    assert seen[-1] == "whole"
    assert load_kek(str(path), create=False).key == loaded.key
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["kek"]  # no temporary file left behind


CREATOR = """
import json, os, sys, time
from jwks_service.kek import load_kek
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.0005)
kek = load_kek(path, create=True)
print(json.dumps({"key": kek.key.hex(), "generated": kek.generated}))
"""

READER = """
import json, os, sys, time
from jwks_service.errors import ConfigError
from jwks_service.kek import load_kek
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.0005)
bad, reads, deadline = [], 0, time.monotonic() + 10
while time.monotonic() < deadline:
    if not os.path.exists(path):
        continue
    try:
        key = load_kek(path, create=False).key.hex()
    except ConfigError as exc:
        bad.append(exc.description)
        continue
    reads += 1
    if reads >= 50:
        break
print(json.dumps({"bad": bad[:3], "key": key}))
"""


@pytest.mark.slow
def test_racing_creators_end_with_one_kek_that_all_use(tmp_path: Path) -> None:
    path = tmp_path / "var" / "kek"
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}

    def spawn(script: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(go)], env=env, stdout=subprocess.PIPE, text=True
        )

    readers = [spawn(READER) for _ in range(2)]
    creators = [spawn(CREATOR) for _ in range(6)]
    time.sleep(1.5)  # let every interpreter start and wait at the line
    go.touch()
    made = [json.loads(p.communicate(timeout=60)[0]) for p in creators]
    read = [json.loads(p.communicate(timeout=60)[0]) for p in readers]

    assert len({m["key"] for m in made}) == 1, made
    assert sum(m["generated"] for m in made) == 1, made
    for r in read:
        assert r["bad"] == [], r["bad"]
        assert r["key"] == made[0]["key"]
    assert load_kek(str(path), create=False).key.hex() == made[0]["key"]
