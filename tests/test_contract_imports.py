"""The import structure of ``src/wsnest``, read from the source with ``ast``.

- Packages depend one way: core <- http <- server <- handlers <- the
  top-level modules (public API, CLI, demo); ``_errors`` and ``_limits`` sit
  below everything.
- No import circle between modules, ``TYPE_CHECKING`` imports included.
- No module imports a private name (``_x``) from another module; a
  package's ``__init__`` may import its own submodules.
- ``wsnest.handlers`` reaches ``wsnest.server`` only through the package's
  public names (the handler contract), never a private module of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wsnest

ROOT = Path(wsnest.__file__).resolve().parent

# Lower number = lower layer; an import may only go to the same package or
# to a strictly lower layer.
LAYERS = {
    "wsnest._errors": 0,
    "wsnest._limits": 0,
    "wsnest._version": 0,
    "wsnest.core": 1,
    "wsnest.http": 2,
    "wsnest.broker": 2,  # moves bytes between processes; knows nothing of HTTP or WebSocket
    "wsnest.server": 3,
    "wsnest.handlers": 4,
    "wsnest.client": 4,
    "wsnest": 5,  # the top-level modules: __init__, __main__, _demo, _tls
}


def _module_name(path: Path) -> str:
    parts = ["wsnest", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        found[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


MODULES = _sources()


def _is_package(name: str) -> bool:
    return MODULES[name][0].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, [names])`` for every import of a wsnest module in ``name``
    (anywhere in the file: TYPE_CHECKING blocks and functions included)."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(MODULES[name][1]):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(name, node)
            if target == "wsnest" or target.startswith("wsnest."):
                out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names if a.name.startswith("wsnest"))
    return out


def _is_extension(name: str) -> bool:
    """Whether ``name`` is a Cython module: a ``.pyx`` in the source tree, or,
    in an installed wheel (no .pyx), a ``.pyi`` stub with no ``.py`` beside it."""
    path = ROOT.joinpath(*name.split(".")[1:])
    if path.with_suffix(".pyx").is_file():
        return True
    return path.with_suffix(".pyi").is_file() and not path.with_suffix(".py").is_file()


def _edges(name: str) -> set[str]:
    """The wsnest modules ``name`` depends on (``from pkg import mod`` counts
    as an import of the submodule ``mod``; a compiled module, a leaf that
    imports no wsnest module, counts as nothing)."""
    deps = set()
    for target, names in _imports(name):
        for item in names or [""]:
            sub = f"{target}.{item}"
            if _is_extension(sub):
                continue
            deps.add(sub if sub in MODULES else target)
    deps.discard(name)
    return {d for d in deps if d in MODULES}


def _group(name: str) -> str:
    """The package a module belongs to for the layering (top-level modules
    other than _errors/_limits count as "wsnest")."""
    parts = name.split(".")
    if len(parts) >= 2 and f"wsnest.{parts[1]}" in LAYERS:
        return f"wsnest.{parts[1]}"
    return "wsnest"


def test_every_module_is_found() -> None:
    for expected in ("wsnest.server._contract", "wsnest.server._stream", "wsnest.handlers._ws", "wsnest.core"):
        assert expected in MODULES


def test_packages_depend_one_way() -> None:
    wrong = []
    for name in MODULES:
        src = _group(name)
        for dep in _edges(name):
            dst = _group(dep)
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = {name: _edges(name) for name in MODULES}
    # A package's __init__ re-exports its submodules; a submodule importing
    # a name through its own package would close a loop that Python allows
    # only by import order: count it too.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_private_name_imported_from_another_module() -> None:
    wrong = []
    for name in MODULES:
        for target, names in _imports(name):
            # A package's __init__ imports its own submodules (compiled ones too).
            own = _is_package(name) and (target == name or target.startswith(name + "."))
            for item in names:
                # A sibling module of the same package (``from . import _frames_py``).
                sibling = target == name.rpartition(".")[0] and (
                    f"{target}.{item}" in MODULES or _is_extension(f"{target}.{item}")
                )
                if item.startswith("_") and not item.startswith("__") and not own and not sibling:
                    wrong.append(f"{name}: from {target} import {item}")
    assert not wrong, "private names imported:\n" + "\n".join(sorted(wrong))


def test_handlers_use_only_the_public_server_interface() -> None:
    wrong = []
    for name in MODULES:
        if _group(name) != "wsnest.handlers":
            continue
        for target, _ in _imports(name):
            if target.startswith("wsnest.server."):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "handlers reaching into server internals:\n" + "\n".join(sorted(wrong))


def test_server_never_reads_handler_attributes_by_name() -> None:
    """The dispatch path calls the declared contract: no getattr, no kind
    strings, no ``type: ignore``."""
    for module in ("_connection", "_server", "_routing"):
        path = ROOT / "server" / f"{module}.py"
        text = path.read_text(encoding="utf-8")
        assert "type: ignore" not in text, path
        assert ".kind" not in text, path
        tree = MODULES[f"wsnest.server.{module}"][1]
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
        ]
        # Only the two uses unrelated to handlers remain (signal.SIGTERM, a
        # callable's __qualname__ in a log line).
        assert all(ast.unparse(c.args[1]) in ("'SIGTERM'", "'__qualname__'") for c in calls), [
            ast.unparse(c) for c in calls
        ]
