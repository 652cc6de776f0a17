"""The build backend of jwks-service-sdk (PEP 517): setuptools, on a copy of the SDK's files.

setuptools puts every module of a package into the wheel; this distribution holds only `jwks_service.sdk` and the
core modules it imports, as `[tool.jwks-service-sdk]` in pyproject.toml lists them. So a build copies those files
from the repository's jwks_service/, unchanged, with this directory's own files, into a temporary directory and
has setuptools build there; nothing is written into the repository. An sdist holds that copy already and builds
in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OWN_FILES = ("pyproject.toml", "README.md", "MANIFEST.in", "sdk_build.py")  # what an sdist needs to build again


def files(repo: Path, config: Path = HERE / "pyproject.toml") -> dict[str, Path]:
    """Every file of the distribution's package, by its path in the wheel, and where it is under `repo`."""
    table = tomllib.loads(config.read_text(encoding="utf-8"))["tool"]["jwks-service-sdk"]
    found: dict[str, Path] = {}
    for package in table["packages"]:
        for path in sorted(repo.joinpath(*package.split(".")).rglob("*.py")):
            found[path.relative_to(repo).as_posix()] = path
    for module in table["core-modules"]:
        path = repo.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.is_file():
            raise FileNotFoundError(f"{module} (core-modules in {config}) is not a module under {repo}")
        found[path.relative_to(repo).as_posix()] = path
    return found


def stage(repo: Path, into: Path) -> None:
    """Lay out under `into` what setuptools builds the distribution from."""
    for name in OWN_FILES:
        shutil.copyfile(HERE / name, into / name)
    for relative, source in files(repo).items():
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


@contextmanager
def _build_directory() -> Iterator[None]:
    if (HERE / "jwks_service").is_dir():  # an unpacked sdist
        with chdir(HERE):
            yield
        return
    repo = HERE.parent
    if not (repo / "jwks_service" / "sdk").is_dir():
        raise RuntimeError(
            f"{repo / 'jwks_service'} is not there: build from sdk-dist/ in the repository (pip 21.3 or later builds"
            " a local directory in place)"
        )
    with tempfile.TemporaryDirectory(prefix="jwks-service-sdk-") as tmp:
        stage(repo, Path(tmp))
        with chdir(tmp):
            yield


def build_wheel(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    from setuptools import build_meta

    out = os.path.abspath(wheel_directory)
    with _build_directory():
        return str(build_meta.build_wheel(out, config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    from setuptools import build_meta

    out = os.path.abspath(sdist_directory)
    with _build_directory():
        return str(build_meta.build_sdist(out, config_settings))
