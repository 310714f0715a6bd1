"""Import rule (docs/DESIGN.md): diffusion and tiling import nothing else of the project;
storage may use tiling (and the leaf ``errors`` module); only pipeline imports dask."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "gigapatch"

# package -> other gigapatch modules it may import ("errors" is a leaf with no imports)
ALLOWED = {
    "diffusion": set(),
    "tiling": set(),
    "storage": {"tiling", "errors"},
}


def _imports(path: Path, package: str):
    """(top-level gigapatch module, line) for every project import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel_pkg = ["gigapatch"] + list(path.relative_to(PKG).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "gigapatch" and len(parts) > 1:
                    yield parts[1], node.lineno, a.name
                elif parts[0] == "dask" or parts[0] == "distributed":
                    yield "dask", node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = rel_pkg[:len(rel_pkg) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
                if len(mod) > 1:
                    yield mod[1], node.lineno, ".".join(mod)
                else:  # from .. import x
                    for a in node.names:
                        yield a.name, node.lineno, a.name
            elif node.module:
                parts = node.module.split(".")
                if parts[0] == "gigapatch" and len(parts) > 1:
                    yield parts[1], node.lineno, node.module
                elif parts[0] in ("dask", "distributed"):
                    yield "dask", node.lineno, node.module


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_rule(package):
    bad = []
    for f in sorted((PKG / package).rglob("*.py")):
        for top, line, name in _imports(f, package):
            if top != package and top not in ALLOWED[package]:
                bad.append(f"{f.relative_to(PKG)}:{line} imports {name}")
    assert not bad, "import rule broken:\n" + "\n".join(bad)


def test_only_pipeline_imports_dask():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        pkg = f.relative_to(PKG).parts[0]
        if pkg == "pipeline":
            continue
        for top, line, name in _imports(f, pkg):
            if top == "dask":
                bad.append(f"{f.relative_to(PKG)}:{line} imports {name}")
    assert not bad, "\n".join(bad)
