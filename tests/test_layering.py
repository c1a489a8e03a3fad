"""Dependencies point one way: a module imports only modules of its own layer or a lower one.

Layers, low to high: shared blocks and leaf helpers -> registry -> encoders -> data/modality ->
model/checkpoint -> losses -> train/retrieval/eval -> command lines. The check walks the whole
syntax tree of every file under anybind/ and encoders/, so an import inside a function counts too;
only an `if TYPE_CHECKING:` block is exempt (it never runs). Modules found by a string at run time
(importlib, entry points) are not imports and are not checked.

More rules: nothing under anybind/ imports `encoders` (the core finds the built-in encoders
through the `anybind.encoders` entry-point group, like any plugin); no module imports an
underscore name from another module, except a package's own `__init__` from its submodules;
and no two modules import each other, even within one layer.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anybind", "encoders")
COMMAND_LINE = 7

# Module prefix -> layer; the longest matching prefix wins, so a module inside a package can sit
# lower (or higher) than the package itself.
LAYERS: dict[str, int] = {
    "anybind.layers": 0,
    "anybind.errors": 0,
    "anybind.io": 0,
    "anybind.console": 0,
    "anybind.dist": 0,
    "anybind.lora": 0,
    "anybind.quantize": 0,
    "anybind.constants": 0,
    "anybind.pretrained.weights": 0,
    "anybind.pretrained.assets": 0,
    "anybind.pretrained.hf_folder": 0,
    "anybind.registry": 1,
    "encoders": 2,
    "anybind.data": 3,
    "anybind.modality": 3,
    "anybind": 4,  # the package facade: `from anybind import x` reaches everything it re-exports
    "anybind.model": 4,
    "anybind.embedding": 4,
    "anybind.checkpoint": 4,
    "anybind.pretrained": 4,
    "anybind.compat": 4,
    "anybind.losses": 5,
    "anybind.train": 6,
    "anybind.retrieval": 6,
    "anybind.eval": 6,
    "anybind.evaluate": 6,
    "anybind.zero_shot": 6,
    "anybind.bench": COMMAND_LINE,
    "anybind.demo": COMMAND_LINE,
    "anybind.cli": COMMAND_LINE,
    "anybind.serve": COMMAND_LINE,
    "anybind._hydra": COMMAND_LINE,  # the Hydra SearchPathPlugin, run by Hydra as anybind-train starts
}
# Prefixes that cover a whole package; the others name exactly one module (or package __init__),
# so a new module directly under anybind/ fails until it is given a layer.
PACKAGE_PREFIXES = {
    "anybind.layers", "anybind.io", "anybind.constants", "encoders", "anybind.data", "anybind.compat",
    "anybind.train", "anybind.retrieval", "anybind.eval", "anybind.bench", "anybind.serve",
    "anybind._hydra",
}


def layer_of(module: str) -> int | None:
    """The layer of a first-party module name, or None when no prefix assigns one."""
    last = module.rsplit(".", 1)[-1]
    if last in ("cli", "__main__"):
        return COMMAND_LINE
    best = None
    for prefix, layer in LAYERS.items():
        exact = module == prefix
        inside = prefix in PACKAGE_PREFIXES and module.startswith(prefix + ".")
        if (exact or inside) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else LAYERS[best]


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.why}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _first_party(name: str) -> bool:
    return name.split(".", 1)[0] in PACKAGES


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, root: Path):
    """(imported module, imported names) for each module an import statement reaches."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, ()
        return
    if node.level:
        base = importer.split(".")
        keep = len(base) - node.level + (1 if is_package else 0)
        base = base[:keep]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    names = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if alias.name != "*" and _first_party(source) and _is_module(sub, root):
            yield sub, ()
        else:
            names.append(alias.name)
    if names:
        yield source, tuple(names)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the root
    line: int
    importer: str
    imported: str
    names: tuple[str, ...]  # names taken from `imported` that are not modules themselves
    from_package: bool  # the importer is a package __init__


def modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, str]:
    """Every module of the packages -> its file, relative to the root."""
    return {module_name(path, root): str(path.relative_to(root))
            for package in packages for path in sorted((root / package).rglob("*.py"))}


def first_party_imports(root: Path = ROOT, packages=PACKAGES) -> list[Import]:
    """Every import of a module of anybind or encoders, anywhere in a file (TYPE_CHECKING blocks aside)."""
    found = []
    for importer, rel in modules(root, packages).items():
        is_package = rel.endswith("__init__.py")
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)
        for node in _imports(tree):
            for imported, names in _targets(node, importer, is_package, root):
                if _first_party(imported):
                    found.append(Import(rel, node.lineno, importer, imported, names, is_package))
    return found


def find_violations(root: Path = ROOT, packages=PACKAGES) -> list[Violation]:
    """Every unplaced module and every upward, forbidden or private import in the given packages under root."""
    found = [Violation(rel, 1, name, name, "assign a layer to this module in LAYERS")
             for name, rel in modules(root, packages).items() if layer_of(name) is None]
    for imp in first_party_imports(root, packages):
        own = layer_of(imp.importer)
        if own is None:
            continue  # reported above
        where = (imp.path, imp.line, imp.importer)
        if imp.importer.startswith("anybind") and imp.imported.split(".")[0] == "encoders":
            found.append(Violation(*where, imp.imported, "anybind finds encoders only through the entry-point group"))
            continue
        layer = layer_of(imp.imported)
        if imp.imported == "anybind" and imp.names and all(_dunder(n) for n in imp.names):
            layer = 0  # the facade's own dunders (__version__) are defined in it, not lazily imported
        if layer is None:
            found.append(Violation(*where, imp.imported, "assign a layer to the imported module in LAYERS"))
        elif layer > own:
            found.append(Violation(*where, imp.imported, f"layer {own} imports layer {layer}"))
        own_package = imp.from_package and imp.imported.startswith(imp.importer + ".")
        for name in imp.names:
            if _private(name) and imp.imported != imp.importer and not own_package:
                found.append(Violation(*where, f"{imp.imported}.{name}", "private name used outside its module"))
    return sorted(found, key=lambda v: (v.path, v.line, v.imported))


def find_cycles(root: Path = ROOT, packages=PACKAGES) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for imp in first_party_imports(root, packages):
        if imp.imported != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_every_module_has_a_layer_and_imports_point_down():
    violations = find_violations()
    assert not violations, "\n" + "\n".join(str(v) for v in violations)


def test_no_two_modules_import_each_other():
    """Within a layer too, dependencies point one way (a function-level import counts: it is still a dependency)."""
    cycles = find_cycles()
    assert not cycles, "\n" + "\n".join(" <-> ".join(group) for group in cycles)


def test_layer_of_uses_the_longest_prefix():
    assert layer_of("anybind") == 4
    assert layer_of("anybind.pretrained") == 4
    assert layer_of("anybind.pretrained.weights") == 0
    assert layer_of("anybind.data.readers.audio") == 3
    assert layer_of("anybind.eval.cli") == COMMAND_LINE
    assert layer_of("anybind.serve.__main__") == COMMAND_LINE
    assert layer_of("encoders.image") == 2
    assert layer_of("anybind.losses_extra") is None
    assert layer_of("anybind.newmodule") is None


def test_the_checker_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "anybind"
    (pkg / "layers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers" / "__init__.py").write_text("")
    (pkg / "losses.py").write_text("")
    (pkg / "layers" / "up.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from anybind import losses\n"
        "def f():\n    from ..losses import _hidden\n")
    (pkg / "layers" / "plug.py").write_text("import encoders.image\n")
    found = [str(v) for v in find_violations(tmp_path, packages=("anybind",))]
    assert found == [
        "anybind/layers/plug.py:1: anybind.layers.plug imports encoders.image: "
        "anybind finds encoders only through the entry-point group",
        "anybind/layers/up.py:5: anybind.layers.up imports anybind.losses: layer 0 imports layer 5",
        "anybind/layers/up.py:5: anybind.layers.up imports anybind.losses._hidden: "
        "private name used outside its module",
    ]


def test_the_checker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "anybind" / "layers"
    pkg.mkdir(parents=True)
    (tmp_path / "anybind" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("from .a import f\n")
    assert find_cycles(tmp_path, packages=("anybind",)) == [["anybind.layers.a", "anybind.layers.b"]]
