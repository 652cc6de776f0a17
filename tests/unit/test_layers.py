"""The layers of jwks_service/ (ARCHITECTURE.md), read from the source with `ast`: nothing is imported or run.

A module imports only from its own layer or lower ones, the SDK is a stack of its own that imports only the
core, and no imports form a circle. Imports inside functions and under ``if TYPE_CHECKING:`` count as well:
a lazy import is how a circle hides. The SDK's own distribution (sdk-dist/) holds exactly the SDK and the
core modules it imports, and those import nothing but the standard library and its dependencies.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import SDK_DIST, sdk_distribution_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "jwks_service"

CORE, ADAPTERS, SERVICES, EDGES = 1, 2, 3, 4
SDK = "sdk"  # a stack of its own, over the core
LAYER_NAMES = {CORE: "1 core", ADAPTERS: "2 adapters", SERVICES: "3 services", EDGES: "4 edges", SDK: "sdk"}

# Where each module sits; an entry for a package covers its modules, unless they have their own.
# A new module needs a place here (and in ARCHITECTURE.md).
LAYERS: dict[str, int | str] = {
    # 1 core: rules and records. No store, network or file I/O; time comes in as `now` or a Clock.
    "jwks_service": CORE,  # the package itself: __version__
    "jwks_service.errors": CORE,
    "jwks_service.clock": CORE,
    "jwks_service.model": CORE,
    "jwks_service.algorithms": CORE,
    "jwks_service.config": CORE,
    "jwks_service.configparts": CORE,
    "jwks_service.adoption": CORE,
    "jwks_service.plan": CORE,
    "jwks_service.addresses": CORE,
    "jwks_service.crypto": CORE,
    "jwks_service.jws": CORE,
    "jwks_service.claims": CORE,
    "jwks_service.tokens": CORE,
    "jwks_service.jwks": CORE,
    "jwks_service.lifecycle": CORE,
    "jwks_service.events": CORE,
    "jwks_service.repeats": CORE,
    "jwks_service.issuer": CORE,
    "jwks_service.keycache": CORE,
    "jwks_service.jwkset": CORE,
    "jwks_service.assertions": CORE,
    "jwks_service.requestid": CORE,
    # 2 adapters: the ports (Protocols) to the world outside, and what implements them.
    "jwks_service.stores": ADAPTERS,
    "jwks_service.stores.redis_credentials": ADAPTERS,
    "jwks_service.stores.redis_connect": ADAPTERS,
    "jwks_service.stores.redis_scripts": ADAPTERS,
    "jwks_service.backends": ADAPTERS,
    "jwks_service.kek": ADAPTERS,
    "jwks_service.kek_transit": ADAPTERS,
    "jwks_service.vaultapi": ADAPTERS,
    "jwks_service.vault_auth": ADAPTERS,
    "jwks_service.batching": ADAPTERS,
    "jwks_service.files": ADAPTERS,
    "jwks_service.audit_sinks": ADAPTERS,
    "jwks_service.tls": ADAPTERS,
    "jwks_service.jwks_fetch": ADAPTERS,
    "jwks_service.logs": ADAPTERS,
    # 3 services: where the core meets the adapters.
    "jwks_service.audit": SERVICES,
    "jwks_service.clients": SERVICES,
    "jwks_service.gate": SERVICES,
    "jwks_service.throttle": SERVICES,
    "jwks_service.client_keys": SERVICES,
    "jwks_service.snapshot": SERVICES,
    "jwks_service.rotation": SERVICES,
    "jwks_service.issuance": SERVICES,
    "jwks_service.service": SERVICES,
    "jwks_service.scheduler": SERVICES,
    "jwks_service.store_warnings": SERVICES,
    "jwks_service.backup": SERVICES,
    "jwks_service.backup_checks": SERVICES,
    "jwks_service.backup_merge": SERVICES,
    "jwks_service.views": SERVICES,
    "jwks_service.operations": SERVICES,
    "jwks_service.planning": SERVICES,
    "jwks_service.runtime": SERVICES,
    "jwks_service.fetchers": SERVICES,
    # 4 edges: parse input, call a service, render its answer.
    "jwks_service.http": EDGES,
    "jwks_service.cli": EDGES,
    "jwks_service.__main__": EDGES,
    # The SDK: verifiers and token clients for other services, with none of the server's dependencies.
    "jwks_service.sdk": SDK,
}

# Imports that break the layers today and are another piece of work's to remove. Each names its issue; the
# last test fails once one is no longer there, so that the list only shrinks.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

# Client libraries that do I/O: the core does without them (configuration parsing included).
IO_LIBRARIES = frozenset(
    {"hvac", "requests", "redis", "httpx", "httpcore", "aiohttp", "starlette", "uvicorn", "anyio", "prometheus_client"}
    | {"sqlite3", "socket", "ssl"}
)


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a package's __init__ when the name is not a module)
    where: str  # path:line
    statement: str

    def __str__(self) -> str:
        return f"{self.where}: {self.statement}"


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def read_imports(
    root: Path, modules: Mapping[str, Path], texts: Mapping[str, str] | None = None
) -> tuple[list[Import], list[Import]]:
    """The imports of the package's own modules, and its imports of other top-level packages; `texts`
    stands in for the source of some modules."""
    own: list[Import] = []
    foreign: list[Import] = []
    for name, path in modules.items():
        source = (texts or {}).get(name)
        source = path.read_text(encoding="utf-8") if source is None else source
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(source, filename=str(path))):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found = Import(name, alias.name, where, f"import {alias.name}")
                    (own if alias.name.split(".")[0] == PACKAGE else foreign).append(found)
            elif isinstance(node, ast.ImportFrom):
                dots = "." * node.level
                statement = f"from {dots}{node.module or ''} import {', '.join(a.name for a in node.names)}"
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                if module.split(".")[0] != PACKAGE:
                    foreign.append(Import(name, module, where, statement))
                    continue
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    target = submodule if submodule in modules else module
                    if target != name:
                        own.append(Import(name, target, where, statement))
    return own, foreign


def layer_of(module: str) -> int | str | None:
    """The layer of the longest entry of LAYERS that is `module` or one of its packages."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def may_import(source: int | str, target: int | str) -> bool:
    if source == target:
        return True
    if source == SDK:
        return target == CORE
    if target == SDK:
        return False
    assert isinstance(source, int) and isinstance(target, int)
    return target < source


def layer_breaks(imports: Iterable[Import], known: set[tuple[str, str]]) -> list[str]:
    breaks = []
    for imp in imports:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is None or target is None or (imp.source, imp.target) in known:
            continue
        if not may_import(source, target):
            breaks.append(
                f"{imp} ({imp.source} in layer {LAYER_NAMES[source]} imports {imp.target} in layer"
                f" {LAYER_NAMES[target]})"
            )
    return breaks


def circles(imports: Iterable[Import]) -> list[list[Import]]:
    """One circle through each import that closes one (a depth-first search's back edges)."""
    graph: dict[str, list[Import]] = {}
    for imp in imports:
        graph.setdefault(imp.source, []).append(imp)
    found: list[list[Import]] = []
    done: set[str] = set()
    path: list[Import] = []
    on_path: dict[str, int] = {}  # module -> its position on the current path

    def visit(module: str) -> None:
        on_path[module] = len(path)
        for imp in graph.get(module, []):
            if imp.target in on_path:
                found.append([*path[on_path[imp.target] :], imp])
            elif imp.target not in done:
                path.append(imp)
                visit(imp.target)
                path.pop()
        del on_path[module]
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return found


def describe(circle: list[Import]) -> str:
    chain = " -> ".join([circle[0].source, *(imp.target for imp in circle)])
    return chain + "\n" + "\n".join(f"    {imp}" for imp in circle)


MODULES = find_modules(ROOT)
OWN, FOREIGN = read_imports(ROOT, MODULES)


def test_every_module_has_a_layer() -> None:
    missing = sorted(name for name in MODULES if layer_of(name) is None)
    assert not missing, f"place these modules in LAYERS here and in ARCHITECTURE.md: {missing}"


def test_no_import_goes_up_a_layer() -> None:
    breaks = layer_breaks(OWN, KNOWN_EXCEPTIONS)
    assert not breaks, "imports that break the layers of ARCHITECTURE.md:\n" + "\n".join(breaks)


def test_no_import_circle() -> None:
    found = circles(OWN)
    assert not found, "import circles:\n" + "\n".join(describe(c) for c in found)


def test_the_core_loads_no_io_library() -> None:
    loads = [f"{imp}" for imp in FOREIGN if layer_of(imp.source) == CORE and imp.target.split(".")[0] in IO_LIBRARIES]
    assert not loads, "the core does no I/O, yet imports:\n" + "\n".join(loads)


def test_known_exceptions_are_still_needed() -> None:
    for pair in sorted(KNOWN_EXCEPTIONS):
        imports = [imp for imp in OWN if (imp.source, imp.target) == pair]
        assert imports, f"{pair[0]} no longer imports {pair[1]}: remove it from KNOWN_EXCEPTIONS"
        assert layer_breaks(imports, set()), f"{pair} no longer breaks a layer: remove it from KNOWN_EXCEPTIONS"


# ----- the jwks-service-sdk distribution (sdk-dist/): the SDK and the core modules it imports ---------------

# Besides the standard library and the distribution's dependencies, what a module of it may import: the
# middleware needs the `starlette` extra.
SDK_EXTRA_IMPORTS = {"jwks_service.sdk.starlette": {"starlette"}}


def sdk_distribution() -> set[str]:
    """The modules that sdk-dist/sdk_build.py puts into the wheel (its [tool.jwks-service-sdk] list)."""
    shipped = {path.resolve() for path in sdk_distribution_files().values()}
    return {name for name, path in MODULES.items() if path in shipped}


def imported_by(roots: Iterable[str], imports: Iterable[Import]) -> set[str]:
    """`roots` and what they import, transitively, with the packages that hold each (imported first)."""
    graph: dict[str, list[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, []).append(imp.target)
    found: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in found:
            found.add(module)
            parts = module.split(".")
            todo += [".".join(parts[:end]) for end in range(1, len(parts))]
            todo += graph.get(module, [])
    return found


def sdk_distribution_gaps(own: list[Import], shipped: set[str]) -> list[str]:
    """What the SDK imports (naming each import) that the distribution lacks, and what it holds for nothing."""
    needed = imported_by([name for name in MODULES if layer_of(name) == SDK], own)
    gaps = []
    for name in sorted(needed - shipped):
        why = list(dict.fromkeys(str(imp) for imp in own if imp.target == name and imp.source in needed))
        why = why or ["a package of its modules"]
        gaps += [f"{reason}: {name} is not in jwks-service-sdk (sdk-dist/pyproject.toml)" for reason in why]
    unused = sorted(shipped - needed)
    return gaps + [f"{name} is in jwks-service-sdk, yet the SDK does not import it" for name in unused]


SDK_SHIPPED = sdk_distribution()


def test_the_sdk_distribution_holds_what_the_sdk_imports() -> None:
    gaps = sdk_distribution_gaps(OWN, SDK_SHIPPED)
    assert not gaps, "the SDK's distribution and its imports disagree:\n" + "\n".join(gaps)
    assert "jwks_service.sdk.verifier" in SDK_SHIPPED
    assert "jwks_service.jws" in SDK_SHIPPED


def test_the_sdk_distribution_imports_only_its_dependencies() -> None:
    project = tomllib.loads((SDK_DIST / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # Their import names are their distribution names: httpx, cryptography, joserfc.
    dependencies = {re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
    loads = [
        str(imp)
        for imp in FOREIGN
        if imp.source in SDK_SHIPPED
        and (top := imp.target.split(".")[0]) not in sys.stdlib_module_names
        and top not in dependencies | SDK_EXTRA_IMPORTS.get(imp.source, set())
    ]
    assert not loads, f"jwks-service-sdk depends on {sorted(dependencies)} only, yet:\n" + "\n".join(loads)


# ----- the checker itself, on the package with one import added to one module (in memory) -----------------


def edited(module: str, line: str) -> tuple[list[Import], list[Import]]:
    """The package's imports, had `module` (a path under jwks_service/) ended with `line`."""
    name = f"{PACKAGE}.{module.removesuffix('.py').replace('/', '.')}"
    text = MODULES[name].read_text(encoding="utf-8") + f"\n{line}\n"
    own, foreign = read_imports(ROOT, {name: MODULES[name]}, {name: text})
    return [i for i in OWN if i.source != name] + own, [i for i in FOREIGN if i.source != name] + foreign


def test_a_circle_through_the_model_is_named() -> None:
    own, _ = edited("model.py", "from .config import Settings")
    found = [describe(c) for c in circles(own)]
    assert found, "model -> config -> model went unnoticed"
    assert any("jwks_service/model.py:" in text and "from .config import Settings" in text for text in found)


@pytest.mark.parametrize(
    ("module", "line", "named"),
    [
        (
            "lifecycle.py",
            "from .stores import Store",
            "lifecycle in layer 1 core imports jwks_service.stores",
        ),
        ("stores/sqlite.py", "from ..service import KeyService", "layer 2 adapters imports jwks_service.service"),
        ("service.py", "from .http.app import create_app", "layer 3 services imports jwks_service.http.app"),
        (
            "sdk/cache.py",
            "from ..stores import Store",
            "sdk.cache in layer sdk imports jwks_service.stores",
        ),
        ("clients.py", "from .sdk.errors import SDKError", "layer 3 services imports jwks_service.sdk.errors"),
    ],
)
def test_an_import_up_a_layer_is_named(module: str, line: str, named: str) -> None:
    own, _ = edited(module, f"def later() -> None:\n    {line}")
    today = layer_breaks(OWN, KNOWN_EXCEPTIONS)
    added = [b for b in layer_breaks(own, KNOWN_EXCEPTIONS) if b not in today]
    assert len(added) == 1 and named in added[0] and line in added[0], added


def test_an_io_library_in_the_core_is_named() -> None:
    _, foreign = edited("config.py", "import hvac")
    loads = [f"{imp}" for imp in foreign if layer_of(imp.source) == CORE and imp.target in IO_LIBRARIES]
    assert len(loads) == 1 and loads[0].startswith("jwks_service/config.py:") and loads[0].endswith(": import hvac")


def test_a_core_import_new_to_the_sdk_is_named() -> None:
    line = "from ..tokens import encode_token"
    own, _ = edited("sdk/rules.py", f"def later() -> None:\n    {line}")
    gaps = sdk_distribution_gaps(own, SDK_SHIPPED)
    named = [gap for gap in gaps if gap.startswith("jwks_service/sdk/rules.py:") and line in gap]
    assert len(named) == 1 and "jwks_service.tokens is not in jwks-service-sdk" in named[0], gaps
