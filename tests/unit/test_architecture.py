"""The architecture contract: every import in ``caraway/`` points down the layers of the README.

The check reads the source (``ast``), so it sees every import: at module level, inside function
bodies and under ``if TYPE_CHECKING:``. Imports for type checking count like any other: an
annotation naming a higher layer is a dependency on it all the same, even when Python never
runs the import. The few imports that still point upward are listed in ``ALLOWED`` with the
reason, and the list must stay exact (an entry that no longer matches fails too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import caraway

PACKAGE_DIR = Path(caraway.__file__).parent

# Lowest first, as in the README's "Layout". A module belongs to the first layer that lists it
# or one of its parent packages; ``caraway`` itself (the public API) sits above everything.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("utils", "exceptions", "states", "signals", "version")),
    ("wire and config", ("settings", "config", "serialization", "protocol", "schedules")),
    ("engine contracts", ("engines", "engines.base")),
    ("engines", ("engines.memory", "engines.sqlite", "engines.redis", "engines.amqp",
                 "engines.sql")),
    ("engine registry", ("engines.registry",)),
    ("app", ("app", "task", "registry", "request", "current", "routing", "queues", "result",
             "builtins", "security")),
    ("sending and running", ("calling", "canvas", "execution")),
    ("services", ("worker", "beat", "events", "control")),
    ("front ends", ("cli", "contrib", "__main__")),
    ("public API", ("",)),
]  # fmt: skip
ENGINE_PACKAGES = dict(LAYERS)["engines"]

# (importing module, imported module): why it may point upward for now. Apart from annotations
# and the module-level ``task -> canvas``, each is a lazy import
# in a function body, marked there with a "Lazy, an allow-listed upward import" comment.
_APP_API = (
    "Celery's app API (send_task, signature, Worker, worker_main, control) fronts the layers above"
)
_TASK_API = "Celery's Task API (delay, apply, s, chunks, retry, replace) fronts the layers above"
_BUILT_WITH_APP = (
    "annotation only: a backend is built with its app, as Celery's; a Protocol would remove it"
)
ALLOWED: dict[tuple[str, str], str] = {
    ("caraway.app", "caraway.calling"): _APP_API,
    ("caraway.app", "caraway.calling.async_api"): _APP_API,
    ("caraway.app", "caraway.canvas"): _APP_API,
    ("caraway.app", "caraway.cli.main"): _APP_API,
    ("caraway.app", "caraway.control"): _APP_API,
    ("caraway.app", "caraway.worker.worker"): _APP_API,
    ("caraway.builtins", "caraway.canvas"): (
        "the built-in tasks (chunks, unlock_chord) run canvas primitives"
    ),
    ("caraway.builtins", "caraway.canvas.chords"): (
        "the built-in tasks (chunks, unlock_chord) run canvas primitives"
    ),
    ("caraway.calling", "caraway.events.sent"): "task-sent events are sent with the message",
    ("caraway.engines.amqp.rpc_backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.engines.amqp.rpc_backend", "caraway.engines.registry"): (
        "one_url(); registry.py is being changed on another branch"
    ),
    ("caraway.engines.base.backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.engines.memory.backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.engines.redis.backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.engines.registry", "caraway.app"): (
        "annotation only; registry.py is being changed on another branch"
    ),
    ("caraway.engines.sql.backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.engines.sqlite.backend", "caraway.app"): _BUILT_WITH_APP,
    ("caraway.schedules", "caraway.app"): "annotation only: a schedule reads its app's timezone",
    ("caraway.schedules", "caraway.current"): (
        "a schedule without an app reads the current app's timezone"
    ),
    ("caraway.task", "caraway.calling"): _TASK_API,
    ("caraway.task", "caraway.calling.async_api"): _TASK_API,
    ("caraway.task", "caraway.canvas"): _TASK_API,
    ("caraway.task", "caraway.canvas.chain"): _TASK_API,
    ("caraway.task", "caraway.canvas.chords"): _TASK_API,
    ("caraway.task", "caraway.canvas.group"): _TASK_API,
    ("caraway.task", "caraway.execution"): _TASK_API,
}


@dataclass(frozen=True)
class Import:
    """One ``import`` statement's target, where it is, and how it runs."""

    module: str  # the importing module
    target: str  # the imported caraway module (a submodule when ``from x import sub``)
    path: str
    line: int
    where: str  # "module", "function" or "type-checking"


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """``caraway/engines/redis/broker.py`` -> ``caraway.engines.redis.broker``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of a caraway module: its longest listed prefix decides."""
    relative = module.removeprefix("caraway").removeprefix(".")
    best, best_length = len(LAYERS) - 1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = relative == prefix or relative.startswith(prefix + ".") or prefix == ""
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterator[str]:
    """The caraway modules one statement imports (``from pkg import sub`` names ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name.split(".")[0] == "caraway")
        return
    base = node.module or ""
    if node.level or base.split(".")[0] != "caraway":
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in known else base


def imports_in(source: str, module: str, path: str, known: set[str]) -> list[Import]:
    """Every import of a caraway module in ``source``, wherever it sits."""
    found: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, known):
                found.append(Import(module, target, path, node.lineno, where))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type-checking")
            for child in node.orelse:
                visit(child, where)
            return
        inner = "function" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else where
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=path), "module")
    return found


def broken_rule(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or None when it points down or sideways."""
    source, target = layer_of(imp.module), layer_of(imp.target)
    if target > source:
        return f"layer '{LAYERS[source][0]}' imports the higher layer '{LAYERS[target][0]}'"
    if source == target == LAYERS.index(("engines", ENGINE_PACKAGES)):
        mine, theirs = (_engine_package(m) for m in (imp.module, imp.target))
        if mine != theirs:
            return f"engine package '{mine}' imports another engine package '{theirs}'"
    return None


def _engine_package(module: str) -> str:
    return ".".join(module.split(".")[:3])


def violations(imports: list[Import], allowed: dict[tuple[str, str], str]) -> list[str]:
    """One line per upward import not in ``allowed``: ``file:line: module -> target: rule``."""
    return [
        f"{imp.path}:{imp.line}: {imp.module} -> {imp.target} ({imp.where}): {rule}"
        for imp in imports
        if (rule := broken_rule(imp)) and (imp.module, imp.target) not in allowed
    ]


def package_imports() -> list[Import]:
    modules = all_modules()
    known = set(modules)
    root = PACKAGE_DIR.parent
    return [
        imp
        for name, path in modules.items()
        for imp in imports_in(path.read_text(), name, str(path.relative_to(root)), known)
    ]


def test_no_module_imports_a_higher_layer() -> None:
    problems = violations(package_imports(), ALLOWED)

    assert problems == [], "upward imports:\n" + "\n".join(problems)


def test_every_allowed_upward_import_still_exists() -> None:
    """The allow-list shrinks as imports are fixed: a stale entry is an error."""
    upward = {(i.module, i.target) for i in package_imports() if broken_rule(i)}

    assert sorted(set(ALLOWED) - upward) == []


def test_every_module_has_a_layer_from_the_readme() -> None:
    modules = all_modules()

    assert layer_of("caraway") == len(LAYERS) - 1
    assert {m for m in modules if layer_of(m) == len(LAYERS) - 1} == {"caraway"}
    assert layer_of("caraway.engines.base.broker") < layer_of("caraway.engines.redis.broker")
    assert layer_of("caraway.engines.redis.broker") < layer_of("caraway.engines.registry")


# Files whose lazy imports are being reworked on another branch (engine capabilities); their
# function-body imports get their reason, or move up, when that lands.
LAZY_PENDING = {"caraway/canvas/chords.py", "caraway/beat/stores/__init__.py"}
LAZY_PENDING_IMPORTS = {("caraway/result.py", "caraway.engines.base.backend")}


def test_every_function_body_import_says_why_it_is_lazy() -> None:
    """Imports sit at module top; one left in a function says why on the line above it."""
    root = PACKAGE_DIR.parent
    unexplained = []
    for imp in package_imports():
        if imp.where != "function" or imp.path in LAZY_PENDING:
            continue
        if (imp.path, imp.target) in LAZY_PENDING_IMPORTS:
            continue
        above = (root / imp.path).read_text().splitlines()[imp.line - 2].strip()
        if not above.startswith("# Lazy"):
            unexplained.append(f"{imp.path}:{imp.line}: {imp.module} -> {imp.target}")

    assert unexplained == [], "move these to module top, or say why not:\n" + "\n".join(unexplained)


PLANTED = '''
"""A low module that reaches up to the worker, three ways."""
from typing import TYPE_CHECKING

from caraway.worker import job

if TYPE_CHECKING:
    from caraway.app import Caraway


def helper() -> None:
    from caraway.engines import redis
'''


def test_a_planted_upward_import_is_reported() -> None:
    known = set(all_modules())
    imports = imports_in(PLANTED, "caraway.engines.sqlite.broker", "planted.py", known)

    problems = violations(imports, {})

    assert problems == [
        "planted.py:5: caraway.engines.sqlite.broker -> caraway.worker.job (module): "
        "layer 'engines' imports the higher layer 'services'",
        "planted.py:8: caraway.engines.sqlite.broker -> caraway.app (type-checking): "
        "layer 'engines' imports the higher layer 'app'",
        "planted.py:12: caraway.engines.sqlite.broker -> caraway.engines.redis (function): "
        "engine package 'caraway.engines.sqlite' imports another engine package "
        "'caraway.engines.redis'",
    ]


def test_downward_and_sideways_imports_pass() -> None:
    source = "from caraway.utils.text import did_you_mean\nimport caraway.engines.sqlite.database\n"
    known = set(all_modules())

    imports = imports_in(source, "caraway.engines.sqlite.broker", "ok.py", known)

    assert len(imports) == 2
    assert violations(imports, {}) == []
