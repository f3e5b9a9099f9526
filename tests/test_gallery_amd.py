"""Every gallery kernel compiles for gfx942 (MI300) and gfx950 (MI350) to an AMD code object that
LLD links: no scratch (private segment 0), LDS within the target's limit, and the explicit
kernel-argument bytes in the code object's metadata equal to what the runtime packs (ir/artifact.py).
Nothing here runs on an AMD GPU (none is available); the code objects are checked statically."""
import functools
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import tile
from tile.codegen.amdgpu import find_lld, kernel_metadata
from tile.ir.artifact import kernarg_layout
from tile.ir.printer import print_module
from tile.ir.targets import get_target

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gallery_ptx import CASES, load, signature   # noqa: E402


def _have_lld():
    try:
        find_lld()
        return True
    except Exception:                  # noqa: BLE001
        return False


needs_lld = pytest.mark.skipif(not _have_lld(), reason="no LLD >= 19 (pip install ziglang, or ROCm)")

# one configuration of each gallery kernel per target keeps CI short; gfx942 takes them all
def _case(mod, kname, consts=None, dtypes=None):
    """The index in CASES of a gallery kernel configuration (by name: CASES grows)."""
    return next(i for i, c in enumerate(CASES) if c[0] == mod and c[1] == kname
                and (consts is None or c[2] == consts) and (dtypes is None or c[3] == dtypes))


GEMM = _case("gemm", "gemm", {})                  # the default GEMM
ATTENTION_D128 = _case("attention", "attention", {"D": 128, "CAUSAL": True})
GFX950 = {GEMM, ATTENTION_D128, *(_case("moe", k) for k in ("router", "moe_up", "moe_down", "moe_combine")),
          _case("lowbit_gemm", "lowbit_gemm", dtypes={"W": tile.dtype("int4")})}
AMD_CASES = [(arch, i) for arch in ("gfx942", "gfx950") for i in range(len(CASES))
             if arch == "gfx942" or i in GFX950]


@functools.lru_cache(maxsize=None)
def compiled(arch, case):
    """The gallery kernel CASES[case] compiled for arch (once per session: the tests below read the
    same code object)."""
    mod, kname, consts, dtypes = CASES[case]
    k = getattr(load(mod), kname)
    return k.compile(*signature(k, **dtypes), target=arch, **consts)


def dots(ck):
    return re.findall(r'dot .*\{[^}]*atom = "([^"]+)"', print_module(ck.module))


@needs_lld
@pytest.mark.parametrize("arch,case", AMD_CASES, ids=[f"{a}-{CASES[i][0]}.{CASES[i][1]}{i}" for a, i in AMD_CASES])
def test_gallery_kernel_links_for_amd(arch, case):
    ck = compiled(arch, case)
    t = get_target(arch)
    assert ck.hsaco[:4] == b"\x7fELF"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".wavefront_size"] == t.warp_size == 64
    assert km[".private_segment_fixed_size"] == 0, "scratch memory used (spills or a stack)"
    assert km.get(".vgpr_spill_count", 0) == 0       # (SGPR spills go to VGPR lanes, not memory)
    assert km[".group_segment_fixed_size"] + ck.meta.shared_bytes <= t.limits.shared_bytes
    assert km[".max_flat_workgroup_size"] == ck.meta.num_threads
    offsets, size = kernarg_layout(ck.meta.params)
    assert km["explicit_kernarg_size"] == size
    explicit = [a for a in km[".args"] if not a[".value_kind"].startswith("hidden_")]
    assert [a[".offset"] for a in explicit] == offsets
    assert f"amdgcn-amd-amdhsa--{arch}" in ck.extra["asm"] or arch in ck.extra["asm"]


@needs_lld
@pytest.mark.parametrize("arch,atom,instr", [("gfx942", "mfma.32x32x8", "v_mfma_f32_32x32x8_bf16"),
                                              ("gfx950", "mfma.32x32x16", "v_mfma_f32_32x32x16_bf16")])
def test_gemm_uses_mfma(arch, atom, instr):
    """Instruction selection records the MFMA atom in the IR and the assembly has the instruction."""
    ck = compiled(arch, GEMM)
    assert f'atom = "{atom}"' in print_module(ck.module)
    assert re.search(rf"^\s*{instr}\b", ck.extra["asm"], re.M), "no MFMA instruction in the assembly"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".private_segment_fixed_size"] == 0


@pytest.mark.parametrize("name", ["32x32x8", "16x16x16", "32x32x16", "16x16x32"])
def test_mfma_builders_are_the_fragments(name):
    """thread_maps.mfma_a/b/c of one atom on one wave are ir/fragments.py's MFMA TVLayouts."""
    from tile.ir import fragments
    from tile.ir.thread_maps import ThreadMap, mfma_a, mfma_b, mfma_c
    m, _, k = map(int, name.split("x"))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_a")()).same(mfma_a(m, k, 1, 1, m, k))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_b")()).same(mfma_b(k, m, 1, 1, m, k))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_c")()).same(mfma_c(m, m, 1, 1, m))
    # tiled over a 2x2 wave grid, every element is held exactly once
    assert mfma_c(4 * m, 4 * m, 2, 2, m).for_threads(256).covers()


@needs_lld
@pytest.mark.parametrize("arch,instr,ds_read", [("gfx942", "v_mfma_f32_16x16x16_bf16", "ds_read_b64"),
                                                ("gfx950", "v_mfma_f32_16x16x32_bf16", "ds_read_b128")])
def test_attention_d128_mfma_operands_from_lds(arch, instr, ds_read):
    """Attention with head dim 128: both dots (q.kT included) on MFMA, their LDS-staged operands read
    one k step at a time (copy = "ds_read.k", vector LDS reads of each lane's k run), no scratch."""
    ck = compiled(arch, ATTENTION_D128)
    text = print_module(ck.module)
    # (two dots in each of the two key loops: unmasked blocks, then the masked diagonal / tail)
    assert len(dots(ck)) == 4 and all(a.startswith("mfma.") for a in dots(ck)), dots(ck)
    assert text.count('copy = "ds_read.k"') >= 3, "q, k and v (and p) should stay in LDS for the MFMAs"
    asm = ck.extra["asm"]
    assert re.search(rf"^\s*{instr}\b", asm, re.M)
    assert re.search(rf"^\s*{ds_read}\b", asm, re.M), "MFMA operands are read from LDS with vector reads"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".private_segment_fixed_size"] == 0 and km.get(".vgpr_spill_count", 0) == 0
    assert ck.meta.shared_bytes + km[".group_segment_fixed_size"] <= get_target(arch).limits.shared_bytes


@needs_lld
def test_amd_software_pipelining_and_buffer_loads():
    """The gfx942 GEMM: the next k tile is loaded into registers one iteration ahead (a carried tile,
    the loop marked pipelined = 2, prefetch = 1; its loads inside the loop come before the dot), the
    operands stay in LDS for the MFMAs, and global accesses go through buffer resources
    (copy = "buffer.load": buffer_load_dwordx4 in the code object)."""
    ck = compiled("gfx942", GEMM)
    text = print_module(ck.module)
    loop = re.search(r"= for .*\{pipelined = 2, prefetch = 1\}", text)
    assert loop, "the k loop is not pipelined"
    prologue, body = text[:loop.start()], text[loop.end():]
    assert prologue.count("= load %") == 2, "the first A and B tiles are loaded before the loop"
    assert body.index("= load %A") < body.index("= dot ") and body.index("= load %B") < body.index("= dot ")
    assert text.count('copy = "buffer.load"') >= 4 and 'copy = "buffer.store"' in text
    assert text.count('copy = "ds_read.k"') == 2
    asm = ck.extra["asm"]
    assert re.search(r"^\s*buffer_load_dwordx4\b", asm, re.M), "no 128-bit buffer load in the GEMM"
    assert re.search(r"^\s*buffer_store_dwordx4\b", asm, re.M)
    assert re.search(r"^\s*s_mov_b32 s\d+, 0x27000\b", asm, re.M), "the V#'s format word (CDNA raw buffer)"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".private_segment_fixed_size"] == 0


@pytest.mark.parametrize("arch,what", [("gfx942", "gemm"), ("gfx950", "gemm"), ("gfx942", "attention-d128-causal"),
                                       ("gfx950", "attention-d64")])
def test_amd_pipeline_ir_runs_in_the_interpreter(arch, what):
    """The IR after the whole AMD pipeline (register-staged prefetch, ds_read.k, buffer copies) is
    still ordinary tile IR: the interpreter runs it on ragged shapes and matches the float64
    reference (tolerance: bf16 inputs and outputs)."""
    import numpy as np
    from tile import compiler
    from tile.dsl.frontend import compile_kernel
    from tile.ir.core import Module
    from tile.ir.dtypes import bf16
    from tile.runtime import interpreter

    def lowered(k, **consts):
        b = k.bind(signature(k), consts, signature_ok=True)
        m = compile_kernel(k.fn, k.params, b.types, b.constexprs, k.name)
        return compiler.lower(m, arch, name=k.name)[0].functions[0]
    rng = np.random.default_rng()
    if what == "gemm":
        g = load("gemm")
        M, N, K = 70, 72, 136                               # K: 4 full BK=32 tiles and a partial one
        A = tile.asarray(rng.standard_normal((M, K)), bf16)
        B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        fn = lowered(g.gemm, BM=64, BN=64, BK=32)
        interpreter.run(fn, (2, 2), [A, B, C, np.zeros(N, np.float32), 1.5])
        ref = g.reference(A.numpy(), B.numpy(), None, 1.5, "none")
        out = C.numpy().astype(np.float64)
    else:
        at = load("attention")
        D, causal = (128, True) if what == "attention-d128-causal" else (64, False)
        Bn, H, HKV, S = 1, 2, 1, 150                        # S: two full key blocks and a partial one
        q, k_, v = (tile.asarray(rng.standard_normal((Bn, h, S, D)), bf16) for h in (H, HKV, HKV))
        o = tile.asarray(np.full((Bn, H, S, D), np.nan), bf16)
        fn = lowered(at.attention, D=D, CAUSAL=causal)
        interpreter.run(fn, (3, Bn * H), [q, k_, v, o, 1 / np.sqrt(D)])
        ref = at.reference(q.numpy(), k_.numpy(), v.numpy(), causal, 1 / np.sqrt(D))
        out = o.numpy().astype(np.float64)
    text = print_module(Module([fn]))
    assert "pipelined = 2, prefetch = 1" in text and 'copy = "ds_read.k"' in text
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.parametrize("atom", ["32x32x8", "16x16x16", "32x32x16", "16x16x32"])
def test_mfma_operand_scratch_keeps_each_lanes_k_run_contiguous(atom):
    """What the ds_read.k lowering relies on: in the LDS layout chosen for an MFMA operand
    (ir/shared_layouts.conversion_scratch_layout), every lane's k elements of every k step are at
    consecutive offsets starting on a multiple of the run -- one ds_read_b64/b128 each -- and
    smem_vector_elems (which the lowering asks) says so."""
    from tile.ir.shared_layouts import conversion_scratch_layout, smem_vector_elems, transpose_layout
    from tile.ir.thread_maps import blocked, mfma_a, mfma_b, mfma_operand_dim
    am, ak = (int(x) for x in atom.split("x")[::2])
    kper = am * ak // 64
    nw = 4
    for which, (wm, wn) in [("a", (2, 2)), ("b", (2, 2)), ("a", (4, 1)), ("b", (4, 1))]:
        shape = (128, 64) if which == "a" else (64, 128)
        m = (mfma_a(*shape, wm, wn, am, ak) if which == "a" else mfma_b(*shape, wm, wn, am, ak)).for_threads(64 * nw)
        kd = 1 if which == "a" else 0
        assert mfma_operand_dim(m, nw) == kd
        lay = conversion_scratch_layout(blocked(shape, 64 * nw, 16), m, 16, nw)
        assert smem_vector_elems(lay if kd == 1 else transpose_layout(lay), kper) == kper
        tc, vc = m.tcoords(), m.vcoords()
        for t in range(0, 64 * nw, 7):
            for v0 in range(0, m.nvals, kper):
                cs = [tuple(int(x) for x in tc[t] + vc[v0 + e]) for e in range(kper)]
                assert all(c[kd] == cs[0][kd] + e for e, c in enumerate(cs)), "slots of a run are k-consecutive"
                offs = [lay(c) for c in cs]
                assert offs == list(range(offs[0], offs[0] + kper)) and offs[0] % kper == 0, (which, t, v0, offs)
    # not an MFMA operand: row-major as before
    assert mfma_operand_dim(blocked((64, 64), 256, 16), nw) is None


@tile.kernel
def _abt_explicit_lds(A: tile.Tensor[tile.bf16, 2], Bt: tile.Tensor[tile.bf16, 2], C: tile.Tensor[tile.f32, 2],
                      BM: tile.constexpr = 64, BN: tile.constexpr = 64, BK: tile.constexpr = 32):
    """C = A @ Bt.T with both tiles staged in LDS by hand (Bt: B transposed)."""
    K = A.shape[1]
    a_s = tile.alloc_shared((BM, BK), tile.bf16)
    b_s = tile.alloc_shared((BN, BK), tile.bf16)
    acc = tile.zeros((BM, BN), tile.f32)
    for k in range(0, K, BK):
        tile.barrier()
        tile.copy_async(a_s, A, (tile.block_id(0) * BM, k))
        tile.copy_async(b_s, Bt, (tile.block_id(1) * BN, k))
        tile.commit()
        tile.wait(0)
        tile.barrier()
        acc = tile.dot(a_s.load(), b_s.load().T, acc)
    tile.store(C, (tile.block_id(0) * BM, tile.block_id(1) * BN), acc)


@needs_lld
def test_explicit_lds_operands_are_read_by_the_mfma_dot():
    """Tiles a kernel stages in LDS itself (alloc_shared + load) feed the MFMAs straight from there:
    A with copy = "ds_read.k", B through its transpose with "ds_read.trans.k" (the register
    conversion layout inference put between them is folded away). The IR after the gfx942 pipeline
    still computes A @ Bt.T in the interpreter (float64 reference, ragged shapes)."""
    import numpy as np
    from tile.runtime import interpreter
    sig = (tile.Tensor[tile.bf16, 2], tile.Tensor[tile.bf16, 2], tile.Tensor[tile.f32, 2])
    ck = _abt_explicit_lds.compile(*sig, target="gfx942")
    text = print_module(ck.module)
    assert 'shared_load %a_s {copy = "ds_read.k"}' in text and 'shared_load %b_s {copy = "ds_read.trans.k"}' in text
    assert "convert_layout" not in text.split("= for ")[1].split("yield")[0], "a register round trip is left"
    assert re.search(r"^\s*v_mfma_f32_32x32x8_bf16\b", ck.extra["asm"], re.M)
    assert re.search(r"^\s*ds_read_b64\b", ck.extra["asm"], re.M)
    assert kernel_metadata(ck.hsaco, ck.meta.name)[".private_segment_fixed_size"] == 0
    rng = np.random.default_rng()
    A = tile.asarray(rng.standard_normal((100, 96)), tile.bf16)
    Bt = tile.asarray(rng.standard_normal((70, 96)), tile.bf16)
    C = np.full((100, 70), np.nan, np.float32)
    interpreter.run(ck.module.functions[0], (2, 2), [A, Bt, C])
    ref = A.numpy().astype(np.float64) @ Bt.numpy().astype(np.float64).T
    assert np.abs(C - ref).max() <= 1e-4 * np.abs(ref).max()       # f32 accumulation of 96 exact products


@needs_lld
@pytest.mark.parametrize("kname", ["moe_up", "moe_down"])
def test_moe_uses_mfma_on_fewer_waves(kname):
    """MoE's 16-row tiles are too small to give each of the 4 waves its own MFMA atoms: the dots use a
    smaller wave grid (the other waves hold copies), not the FMA loop."""
    case = _case("moe", kname)
    ck = compiled("gfx942", case)
    assert dots(ck) and all(a == "mfma.16x16x16" for a in dots(ck)), dots(ck)
    assert re.search(r'warps = \[1, 2\]|warps = \[2, 1\]|warps = \[1, 1\]', print_module(ck.module))
    assert re.search(r"^\s*v_mfma_f32_16x16x16_bf16\b", ck.extra["asm"], re.M)
    assert kernel_metadata(ck.hsaco, ck.meta.name)[".private_segment_fixed_size"] == 0
