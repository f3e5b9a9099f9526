"""Launches find their code in the kernel cache by a key computed from the Python kernel
(tile/source_key.py), without running or importing the front end; anything the front end reads that
changes -- the file, a global constant, an inline helper, a user module's attribute, a constexpr --
gives another key, and a value that cannot be pinned down turns the shortcut off for that kernel."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from tile.runtime import cache as C

KERNEL = '''\
import tile
from tile import f32
import {consts}

SCALE = {scale}
HELPER_OBJ = {obj}


@tile.inline
def twice(x):
    return x * {twice}


@tile.kernel
def k(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], BLOCK: tile.constexpr = 128):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), twice(tile.load(X, (i,), (BLOCK,))) * SCALE + {consts}.OFFSET + HELPER_OBJ)
'''


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEC_CACHE", raising=False)
    monkeypatch.delenv("TILEC_SOURCE_KEY", raising=False)
    monkeypatch.setenv("TILEC_PTXAS_REPORT", "0")
    monkeypatch.setattr(C, "_DEFAULT", None)
    return tmp_path / "cache"


_N = [0]


def load(tmp_path, scale=2.0, twice=2.0, offset=1.0, obj="0.0"):
    """Import a fresh copy of the kernel module (a new module name each time: a new process, as far
    as the kernel objects are concerned)."""
    _N[0] += 1
    consts = f"consts_{_N[0]}"
    (tmp_path / f"{consts}.py").write_text(f"OFFSET = {offset}\n")
    path = tmp_path / f"kern_{_N[0]}.py"
    path.write_text(KERNEL.format(scale=scale, twice=twice, consts=consts, obj=obj))
    sys.path.insert(0, str(tmp_path))
    try:
        spec = importlib.util.spec_from_file_location(f"kern_{_N[0]}", path)
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
    finally:
        sys.path.remove(str(tmp_path))
    return m


def compile_(m, **kw):
    import tile
    from tile import f32
    return m.k.compile(tile.Tensor[f32, 1], tile.Tensor[f32, 1], target="sm_90a", **kw)


def spy_frontend(monkeypatch):
    from tile.dsl import frontend
    calls = []
    real = frontend.compile_kernel
    monkeypatch.setattr(frontend, "compile_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_same_source_hits_by_source_key_and_the_ir_comes_on_demand(tmp_path, own_cache, monkeypatch):
    calls = spy_frontend(monkeypatch)
    m = load(tmp_path)
    ck1 = compile_(m)
    assert len(calls) == 1 and list(own_cache.rglob("*.alias"))
    m.k.cache.clear()                            # as a new process: no memory tiers
    monkeypatch.setattr(C, "_DEFAULT", None)
    ck2 = compile_(m)
    assert len(calls) == 1 and ck2.ptx == ck1.ptx                     # no front end ran
    assert ck2.ir == ck1.ir and len(calls) == 2                        # ... until the IR is asked for
    assert ck2.ir_after == ck1.ir_after and ck2.function.name == "k"


@pytest.mark.parametrize("change", [dict(scale=3.0), dict(twice=4.0), dict(offset=5.0)])
def test_a_changed_global_inline_helper_or_module_attribute_is_another_key(tmp_path, own_cache, monkeypatch, change):
    from tile.source_key import kernel_fingerprint
    a, b = load(tmp_path), load(tmp_path, **change)
    fa, fb = kernel_fingerprint(a.k.fn, a.k.params), kernel_fingerprint(b.k.fn, b.k.params)
    assert fa is not None and fb is not None and fa != fb
    calls = spy_frontend(monkeypatch)
    assert compile_(b).ptx != compile_(a).ptx and len(calls) == 2


def test_the_same_module_reimported_gets_the_same_fingerprint(tmp_path):
    from tile.source_key import kernel_fingerprint
    m = load(tmp_path)
    path = m.__file__
    spec = importlib.util.spec_from_file_location("again", path)
    again = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(tmp_path))
    try:
        spec.loader.exec_module(again)
    finally:
        sys.path.remove(str(tmp_path))
    assert kernel_fingerprint(again.k.fn, again.k.params) == kernel_fingerprint(m.k.fn, m.k.params)


def test_values_that_cannot_be_pinned_turn_the_source_key_off(tmp_path, own_cache, monkeypatch):
    from tile.source_key import kernel_fingerprint, source_key
    m = load(tmp_path, obj="type('Odd', (), {'__float__': lambda s: 0.0})()")
    assert kernel_fingerprint(m.k.fn, m.k.params) is None
    assert source_key("f" * 64, [], {"BLOCK": object()}, "sm_90a", "v") is None
    assert source_key("f" * 64, [], {"BLOCK": 128}, "sm_90a", "v") != source_key("f" * 64, [], {"BLOCK": 128.0},
                                                                                    "sm_90a", "v")


def test_constexprs_and_targets_are_in_the_key(tmp_path, own_cache, monkeypatch):
    m = load(tmp_path)
    calls = spy_frontend(monkeypatch)
    a, b = compile_(m), compile_(m, BLOCK=256)
    m.k.cache.clear()
    monkeypatch.setattr(C, "_DEFAULT", None)
    assert compile_(m).ptx == a.ptx and compile_(m, BLOCK=256).ptx == b.ptx and a.ptx != b.ptx
    assert len(calls) == 2


def test_a_new_process_with_a_warm_cache_imports_no_front_end(tmp_path, own_cache):
    """The real thing: two processes; the second finds the kernel without dsl.frontend, the IR
    printer or parser, the passes, the code generator or llvmlite."""
    load(tmp_path)
    name = f"kern_{_N[0]}"
    code = textwrap.dedent(f"""\
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import tile
        from tile import f32
        import {name} as m
        ck = m.k.compile(tile.Tensor[f32, 1], tile.Tensor[f32, 1], target="sm_90a")
        heavy = ("tile.dsl.frontend", "tile.ir.printer", "tile.ir.parser", "tile.passes", "tile.codegen", "llvmlite", "lark")
        print(json.dumps({{"loaded": sorted(x for x in heavy if x in sys.modules), "ptx": ck.ptx}}))
        """)
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                      timeout=300).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert "tile.dsl.frontend" in runs[0]["loaded"]                    # the first compiled
    assert runs[1]["loaded"] == [] and runs[1]["ptx"] == runs[0]["ptx"]


def test_the_fingerprint_does_not_depend_on_what_else_the_process_imported(tmp_path):
    """Two processes with different modules loaded (so different reference counts on shared
    constants) give the same fingerprint for the same kernel."""
    load(tmp_path)
    name = f"kern_{_N[0]}"
    code = textwrap.dedent(f"""\
        import sys
        if sys.argv[1] == "busy":
            import decimal, email.message, json, tile.dsl.frontend, tile.passes.manager  # noqa: F401
        sys.path.insert(0, {str(tmp_path)!r})
        import {name} as m
        from tile.source_key import kernel_fingerprint
        print(kernel_fingerprint(m.k.fn, m.k.params))
        """)
    fps = [subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip() for how in ("bare", "busy")]
    assert fps[0] == fps[1] and len(fps[0]) == 64
