"""Import rule (docs/architecture.md): diffusion and tiling import nothing else of the
project; storage may use tiling (and the leaf ``errors`` module); only pipeline imports dask;
nothing below the facade imports ``api`` or ``cli``; no private name crosses modules."""

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


# what may import the facade (``api``) and the command line (``cli``, ``cli_eval``)
FACADE_USERS = {"api": {"cli.py", "__init__.py", "stacks.py"}, "cli": {"__main__.py"},
                "cli_eval": {"cli.py"}}


def test_nothing_below_the_facade_imports_api_or_cli():
    """pipeline, storage, diffusion, tiling, metrics (and every other module but the CLI,
    the map stacks built on ``generate`` and the package's lazy ``generate``) never import
    ``api`` or ``cli``, not even inside a function."""
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        for top, line, name in _imports(f, rel.parts[0]):
            users = FACADE_USERS.get(top)
            if users is not None and str(rel) not in users and rel.stem != top:
                bad.append(f"{rel}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def _module_of(path: Path) -> str:
    parts = ["gigapatch", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_names_across_modules():
    """``from x import _y`` of another gigapatch module: a private name used as an API."""
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        tree = ast.parse(f.read_text(), filename=str(f))
        here = _module_of(f)
        pkg = here if f.name == "__init__.py" else here.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("gigapatch") or source == here:
                continue
            for a in node.names:
                if a.name.startswith("_"):
                    bad.append(f"{f.relative_to(PKG)}:{node.lineno} imports {a.name} "
                               f"from {source}")
    assert not bad, "\n".join(bad)
