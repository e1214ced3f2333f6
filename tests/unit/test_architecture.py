"""The architecture contract: every import in ``caraway/`` points down the layers of the README.

The check reads the source (``ast``), so it sees every import: at module level, inside function
bodies and under ``if TYPE_CHECKING:``. Imports for type checking count like any other: an
annotation naming a higher layer is a dependency on it all the same, even when Python never
runs the import. The few imports that still point upward are listed in ``ALLOWED`` with the
reason, and the list must stay exact (an entry that no longer matches fails too).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import caraway

PACKAGE_DIR = Path(caraway.__file__).parent

# Lowest first, as in the README's "Layout". A module belongs to the first layer that lists it
# or one of its parent packages; ``caraway`` itself (the public API) sits above everything.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("utils", "exceptions", "states", "signals", "version")),
    ("wire and config", ("settings", "config", "serialization", "protocol")),
    ("engine contracts", ("engines", "engines.base")),
    ("engines", ("engines.memory", "engines.sqlite", "engines.redis", "engines.amqp",
                 "engines.sql", "engines.postgresql")),
    ("engine registry", ("engines.registry",)),
    # A schedule without an app reads the current app's zone (Celery's ``schedule.app``),
    # as a result reads the current app's backend: both sit beside the app.
    ("app", ("app", "task", "registry", "request", "current", "routing", "queues", "result",
             "schedules", "builtins", "security", "connection")),
    ("sending and running", ("calling", "canvas", "execution", "tracing")),
    ("services", ("worker", "beat", "events", "control", "metrics")),
    # Celery's import paths under celery.app that name objects of the services layer.
    ("front ends", ("cli", "dashboard", "contrib", "__main__", "app.control", "app.events")),
    ("public API", ("",)),
]  # fmt: skip
ENGINE_PACKAGES = dict(LAYERS)["engines"]

# (importing module, imported module): why it may point upward. Each is Celery's API on a
# lower-layer object fronting a layer above it, and each is a lazy import in a function body
# (apart from the module-level ``task -> canvas``), marked there with a
# "Lazy, an allow-listed upward import" comment.
_APP_API = (
    "Celery's app API (send_task, signature, Worker, worker_main, control, events) fronts the "
    "layers above"
)
_TASK_API = "Celery's Task API (delay, apply, s, chunks, retry, replace) fronts the layers above"
_BUILTINS = "the built-in tasks (chunks, unlock_chord) run canvas primitives, as Celery's"
ALLOWED: dict[tuple[str, str], str] = {
    ("caraway.app", "caraway.calling"): _APP_API,
    ("caraway.app", "caraway.calling.async_api"): _APP_API,
    ("caraway.app", "caraway.canvas"): _APP_API,
    ("caraway.app", "caraway.cli.main"): _APP_API,
    ("caraway.app", "caraway.control"): _APP_API,
    ("caraway.app", "caraway.events.app_events"): _APP_API,
    ("caraway.app", "caraway.worker.worker"): _APP_API,
    ("caraway.builtins", "caraway.canvas"): _BUILTINS,
    ("caraway.builtins", "caraway.canvas.chords"): _BUILTINS,
    ("caraway.calling", "caraway.events.sent"): (
        "Celery's task-sent event goes out with the message (task_send_sent_event)"
    ),
    ("caraway.task", "caraway.calling"): _TASK_API,
    ("caraway.task", "caraway.calling.async_api"): _TASK_API,
    ("caraway.task", "caraway.calling.plain"): _TASK_API,
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


@functools.cache  # the source does not change while the tests run
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


def test_every_function_body_import_says_why_it_is_lazy() -> None:
    """Imports sit at module top; one left in a function says why on the line above it."""
    root = PACKAGE_DIR.parent
    unexplained = []
    for imp in package_imports():
        if imp.where != "function":
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


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles of ``edges`` (Tarjan's components), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while (member := stack.pop()) != node:
                component.add(member)
            found.append(component | {node})

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found, key=len, reverse=True)


def runtime_edges(imports: list[Import]) -> dict[str, set[str]]:
    """Who imports whom when the code runs: module level and function bodies, not annotations."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.where != "type-checking" and imp.target != imp.module:
            edges.setdefault(imp.module, set()).add(imp.target)
            edges.setdefault(imp.target, set())
    return edges


# The largest import cycle, function-body imports counted, is about 50 modules (48 when issue 12
# was filed; ``python tests/unit/test_architecture.py`` prints it). Two kinds of import hold it
# together, and both are needed: Celery's API on the app and the task reaching up (``ALLOWED``:
# app.Worker, worker_main and with it every CLI command, control, events, delay, ...; and
# app.setup_security, lazy as it needs an extra) and ``current`` making the default app on
# first use. Its size follows the API it fronts (a new CLI command joins it), so the test
# below checks what holds it, not how big it is.
DEFAULT_APP = ("caraway.current", "caraway.app")


def cycle_report() -> str:
    """The figures of the import graph: function-body imports and the cycles they close."""
    imports = package_imports()
    edges = runtime_edges(imports)
    largest = strongly_connected(edges)[0]
    for module, target in [*ALLOWED, DEFAULT_APP]:
        edges[module].discard(target)
    rest = [len(c) for c in strongly_connected(edges) if len(c) > 1]
    return "\n".join([
        f"function-body imports: {sum(1 for i in imports if i.where == 'function')}",
        f"largest import cycle: {len(largest)} modules: {', '.join(sorted(largest))}",
        f"cycles left without the API fronts and the default app: {rest}",
    ])  # fmt: skip


def test_without_the_api_fronts_the_cycles_are_small() -> None:
    """What is left once Celery's upward API and the default app are set aside: the canvas
    (``Signature.__or__`` builds chains and groups, a group sends its members as one batch),
    and two pairs inside engines (a backend and its chord join, Redis's broker and fanout)."""
    edges = runtime_edges(package_imports())
    for module, target in [*ALLOWED, DEFAULT_APP]:
        edges[module].discard(target)

    sizes = [len(c) for c in strongly_connected(edges) if len(c) > 1]

    assert max(sizes) <= 9, sizes


def test_the_cycle_measure_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}

    assert strongly_connected(edges)[0] == {"a", "b", "c"}


def _engine_classes() -> set[str]:
    """The classes defined in the engine packages (``RedisBroker``, ``SQLiteStore``, ...)."""
    return {
        node.name
        for name, path in all_modules().items()
        if layer_of(name) == LAYERS.index(("engines", ENGINE_PACKAGES))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }


def engines_named(source: str, module: str, path: str, classes: set[str]) -> list[str]:
    """Where ``source`` imports an engine package or names one of the engine ``classes``."""
    engine_layer = LAYERS.index(("engines", ENGINE_PACKAGES))
    found = [
        f"{imp.path}:{imp.line}: imports {imp.target}"
        for imp in imports_in(source, module, path, set())
        if layer_of(imp.target) == engine_layer
    ]
    for node in ast.walk(ast.parse(source)):
        identifier = (
            node.id if isinstance(node, ast.Name)
            else node.attr if isinstance(node, ast.Attribute)
            else None
        )  # fmt: skip
        if identifier in classes:
            found.append(f"{path}:{getattr(node, 'lineno', 0)}: names {identifier}")
    return found


def test_no_code_outside_the_engines_names_an_engine() -> None:
    """Shared code asks a capability record or a contract method, never for a concrete engine:
    outside the engine packages only the registry (which maps schemes to engines) imports one
    or names one of their classes. Docstrings and messages may still cite a URL as an example."""
    classes = _engine_classes()
    root = PACKAGE_DIR.parent
    named = [
        line
        for name, path in all_modules().items()
        if layer_of(name) != LAYERS.index(("engines", ENGINE_PACKAGES))
        and name != "caraway.engines.registry"
        for line in engines_named(path.read_text(), name, str(path.relative_to(root)), classes)
    ]

    assert {"RedisBroker", "SQLiteStore", "MemoryBackend"} <= classes
    assert named == []


def test_a_planted_engine_switch_is_reported() -> None:
    source = (
        "from caraway.engines.redis import broker\n"
        "def pick(b):\n"
        "    return isinstance(b, broker.RedisBroker)\n"
    )

    found = engines_named(source, "caraway.worker.planted", "planted.py", _engine_classes())

    assert found == [
        "planted.py:1: imports caraway.engines.redis",
        "planted.py:3: names RedisBroker",
    ]


if __name__ == "__main__":  # python tests/unit/test_architecture.py
    print(cycle_report())
