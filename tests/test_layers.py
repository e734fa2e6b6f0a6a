"""The house's rules, checked on the code itself: imports only run down the layers, and library internals are used
in one module only (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "pkgcache"

# Bottom to top. A module may import from its own layer's package and from any layer below, never above; two
# packages of one layer do not import each other (the PyPI and conda sides know nothing of one another). The
# first layer holds leaves: small modules of words, numbers and settings, and engines with no I/O of their own.
LAYERS: list[set[str]] = [
    {
        "cache_state",
        "formatting",
        "presets",
        "config",
        "config_template",
        "env_settings",
        "stats",
        "clients",
        "policy",
        "seed",
        "node_identity",
        "kit_record",
        "header_numbers",
        "conda_subdirs",
        "zip_records",
        "malloc_tuning",
    },
    {"storage"},
    {"upstream"},
    {"http"},
    {"workers"},
    {"gate"},
    {"pypi", "conda"},
    {"seeding", "bundle"},
    {"service"},
    {"daemon"},
    {"cli"},
    {"__main__"},
]
LEAVES = 0
# The one module allowed to rely on aiohttp's and uvloop's behaviour beyond their contract.
INTERNALS_DOOR = SOURCE / "http" / "library_internals.py"
# Underscored names of the standard library that are documented API.
DOCUMENTED_UNDERSCORE_NAMES = {"_exit"}


def _unit(path: Path) -> str:
    """The package (or top-level module) a source file belongs to: `pypi`, `config`..."""
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS in tests/test_layers.py (and the docs)")


def _imported_units(tree: ast.Module) -> set[str]:
    units: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pkgcache" and len(parts) > 1:
                units.add(parts[1])
    return units


def _sources() -> list[Path]:
    return sorted(path for path in SOURCE.rglob("*.py") if path.name != "__init__.py" or path.parent != SOURCE)


def test_every_package_is_in_a_layer() -> None:
    for path in _sources():
        _layer(_unit(path))


def test_imports_run_only_down_the_layers() -> None:
    wrong: list[str] = []
    for path in _sources():
        unit = _unit(path)
        here = _layer(unit)
        for imported in _imported_units(ast.parse(path.read_text())):
            there = _layer(imported)
            sideways = there == here and imported != unit and here != LEAVES
            if there > here or sideways:
                wrong.append(f"{path.relative_to(SOURCE)} imports pkgcache.{imported} (layer {there} from {here})")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


def test_only_the_internals_door_imports_uvloop() -> None:
    importers = [
        path.relative_to(SOURCE)
        for path in _sources()
        if path != INTERNALS_DOOR and "uvloop" in _imported_top_names(ast.parse(path.read_text()))
    ]
    assert not importers, f"uvloop is used outside http/library_internals.py: {importers}"


def _imported_top_names(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_private_attribute_of_a_library_is_used_outside_the_internals_door() -> None:
    """An underscored attribute that pkgcache does not define itself belongs to a library: not outside the door."""
    trees = {path: ast.parse(path.read_text()) for path in _sources()}
    own = set(DOCUMENTED_UNDERSCORE_NAMES)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    used = [
        f"{path.relative_to(SOURCE)}:{node.lineno} .{node.attr}"
        for path, tree in trees.items()
        if path != INTERNALS_DOOR
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own
    ]
    assert not used, "library internals used outside http/library_internals.py:\n" + "\n".join(used)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")
