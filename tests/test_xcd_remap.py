"""tile.xcd_remap: block ids grouped by XCD (ir/grid.py). The arithmetic is a bijection; the target's
XCD count is recorded by instruction selection (8 on gfx942/gfx950, 1 -- the identity -- on NVIDIA);
the IR after the gfx942 pipeline computes, in the interpreter, the ids the formula gives; both
back ends compile it."""
import re
import shutil
import subprocess

import numpy as np
import pytest

import tile
from tile import compiler
from tile.dsl.frontend import compile_kernel
from tile.ir.core import Module
from tile.ir.grid import xcd_remap
from tile.ir.printer import print_module
from tile.runtime import interpreter
from test_gallery_amd import needs_lld


@tile.kernel
def xcd_ids(Out: tile.Tensor[tile.i32, 1], XCDS: tile.constexpr = None):
    pid = tile.block_id(0)
    Out[pid] = tile.xcd_remap(pid, tile.num_blocks(0), XCDS)


def lowered(target, **consts):
    b = xcd_ids.bind((tile.Tensor[tile.i32, 1],), consts, signature_ok=True)
    m = compile_kernel(xcd_ids.fn, xcd_ids.params, b.types, b.constexprs, xcd_ids.name)
    return compiler.lower(m, target, name=xcd_ids.name)[0].functions[0]


@pytest.mark.parametrize("xcds", [1, 2, 3, 6, 8])
def test_xcd_remap_is_a_bijection_that_groups_each_xcd(xcds):
    for n in range(1, 70):
        ids = [xcd_remap(p, n, xcds) for p in range(n)]
        assert sorted(ids) == list(range(n)), (n, xcds)
        for x in range(min(xcds, n)):                 # blocks x, x + X, ... (one XCD): consecutive ids
            mine = ids[x::xcds]
            assert mine == list(range(mine[0], mine[0] + len(mine)))


@pytest.mark.parametrize("target,xcds,given", [("gfx942", 8, None), ("gfx950", 8, None), ("sm_90a", 1, None),
                                               ("gfx942", 3, 3), ("cpu", None, None)])
def test_xcd_remap_in_the_ir_and_the_interpreter(target, xcds, given):
    fn = lowered(target, XCDS=given)
    text = print_module(Module([fn]))
    assert (f"xcds = {xcds}" in text) if xcds is not None else ("xcds" not in text), text
    n = 21
    out = np.full(n, -1, np.int32)
    interpreter.run(fn, (n,), [out])
    assert list(out) == [xcd_remap(p, n, xcds or 1) for p in range(n)]


@needs_lld
def test_xcd_remap_compiles_for_amd():
    ck = xcd_ids.compile(tile.Tensor[tile.i32, 1], target="gfx942")
    assert "xcds = 8" in print_module(ck.module) and ck.hsaco[:4] == b"\x7fELF"
    asm = ck.extra["asm"]
    assert re.search(r"^\s*s_and_b32 s\d+, s\d+, 7$", asm, re.M)        # pid % 8 (the XCD), a uniform value
    assert re.search(r"^\s*s_lshr_b32 s\d+, s\d+, 3$", asm, re.M)       # pid / 8 (its place on the XCD)


def test_xcd_remap_is_the_identity_on_nvidia(tmp_path):
    ck = xcd_ids.compile(tile.Tensor[tile.i32, 1], target="sm_90a")
    assert "xcds = 1" in print_module(ck.module)
    assert "div" not in ck.ptx and "rem" not in ck.ptx          # nothing emitted for the identity
    if shutil.which("ptxas"):
        src = tmp_path / "k.ptx"
        src.write_text(ck.ptx)
        r = subprocess.run(["ptxas", "-arch=sm_90a", str(src), "-o", str(tmp_path / "k.cubin")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
