"""Data flows one way: dsl -> ir <- passes, codegen, runtime; only tile/ (the driver, the CLI) sees them
all. Every import in every layer's files (module level and inside functions) is checked, so a
back-edge fails here rather than in review."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "ir": set(),
    "dsl": {"ir"},
    "passes": {"ir"},
    "codegen": {"ir"},
    "runtime": {"ir"},
}


def _imports(path: Path, layer: str):
    """(line, imported layer) for every import of a tilec layer in the file."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0:
                parts = mod.split(".")
                if parts[0] != "tile":
                    continue
                target = parts[1] if len(parts) > 1 else None
                names = [a.name for a in node.names] if target is None else []
            elif node.level == 1:
                target, names = layer, []
            else:                                   # from ..X import / from .. import X
                target = mod.split(".")[0] if mod else None
                names = [a.name for a in node.names] if not mod else []
            for t in ([target] if target else names):
                yield node.lineno, t
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "tile":
                    yield node.lineno, parts[1] if len(parts) > 1 else "tile"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_reaches_upward(layer):
    bad = []
    for path in sorted((ROOT / layer).glob("*.py")):
        for line, target in _imports(path, layer):
            if target != layer and target not in ALLOWED[layer] and target in set(ALLOWED) | {"tile", "compiler",
                                                                                        "kernel", "cli", "aot"}:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_codegen_has_no_import_cycle():
    """Within codegen, the lowering files import values/table/helpers, never lower_tile (the context)."""
    for path in sorted((ROOT / "codegen").glob("lower_*.py")):
        if path.name == "lower_tile.py":
            continue
        text = path.read_text()
        assert "from .lower_tile import" not in text, path.name


def test_a_source_checkout_imports_its_own_layers():
    """Python started in the repository root finds this tile/ first; tile.ir and the other layers must
    come from this checkout too, with no installed finder (no install, or an editable install of another
    checkout, which made every test file fail to import)."""
    import subprocess
    import sys
    code = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            "import tile, tile.ir, tile.codegen, tile.passes, tile.runtime, tile.dsl; "
            "print(tile.__file__); print(tile.ir.__file__); print(tile.codegen.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    files = r.stdout.split()
    assert files == [str(ROOT / "tile" / "__init__.py"), str(ROOT / "ir" / "__init__.py"),
                     str(ROOT / "codegen" / "__init__.py")], files
