"""The AMD wave schedules (passes/schedule_amd.py, codegen/lower_mfma.py): `tile.range(schedule=
"pingpong" | "interleave")` in the IR (printed, parsed back, checked), and in the linked code object
of the gallery GEMM's AMD configs (examples/gemm.py AMD_CONFIGS), each compared with the same
kernel compiled without the schedule. No AMD GPU here: the code objects are checked statically."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import tile
from tile.codegen.amdgpu import kernel_metadata
from tile.ir.artifact import kernarg_layout
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.ir.targets import get_target

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gallery_amd import GEMM, compiled, needs_lld   # noqa: E402
from test_gallery_ptx import load, signature             # noqa: E402

GALLERY = load("gemm")
PINGPONG, INTERLEAVE = GALLERY.AMD_CONFIGS


def _compile(arch, **cfg):
    k = GALLERY.gemm
    return k.compile(*signature(k), target=arch, **cfg)


_CACHE = {}


def build(key, arch, **cfg):
    if key not in _CACHE:
        _CACHE[key] = _compile(arch, **cfg)
    return _CACHE[key]


def pingpong():
    return build("pingpong", "gfx942", **PINGPONG)


def pingpong_baseline():
    """The ping-pong config's tile and waves, no schedule."""
    return build("pingpong-base", "gfx942", **dict(PINGPONG, SCHEDULE=None))


def interleave():
    return build("interleave", "gfx942", **INTERLEAVE)


def main_loop(asm: str) -> list:
    """The instructions of the loop that holds the MFMAs (the widest backward branch around them)."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^(\.LBB\d+_\d+):", ln))}
    best = None
    for i, ln in enumerate(lines):
        m = re.match(r"^\s*s_(?:cbranch_\w+|branch)\s+(\.LBB\d+_\d+)", ln)
        if m and labels.get(m.group(1), i) < i:
            body = lines[labels[m.group(1)]:i + 1]
            key = (sum(1 for x in body if re.match(r"^\s*v_mfma", x)), len(body))
            if best is None or key > best[0]:
                best = (key, body)
    assert best and best[0][0], "no loop with MFMAs in the assembly"
    return [x.strip() for x in best[1]]


def count(body, prefix):
    return sum(1 for x in body if x.startswith(prefix))


def back_to_back_mfmas(body) -> int:
    """How many MFMAs follow another MFMA with no memory instruction (or barrier) between them."""
    n, prev = 0, False
    for x in body:
        if x.startswith("v_mfma"):
            n, prev = n + prev, True
        elif x.startswith(("ds_read", "ds_write", "buffer_load", "global_load", "s_barrier")):
            prev = False
    return n


def check_code_object(ck, base, arch="gfx942"):
    """No scratch, LDS within the target, the same kernel arguments as without the schedule."""
    km, kb = kernel_metadata(ck.hsaco, ck.meta.name), kernel_metadata(base.hsaco, base.meta.name)
    assert km[".private_segment_fixed_size"] == 0 and km.get(".vgpr_spill_count", 0) == 0
    assert km[".group_segment_fixed_size"] + ck.meta.shared_bytes <= get_target(arch).limits.shared_bytes
    assert km[".max_flat_workgroup_size"] == ck.meta.num_threads == base.meta.num_threads
    assert km["explicit_kernarg_size"] == kb["explicit_kernarg_size"] == kernarg_layout(ck.meta.params)[1]
    assert km[".kernarg_segment_size"] == kb[".kernarg_segment_size"]


# ------------------------------------------------------------------------------------ the IR
@needs_lld
def test_schedule_is_a_loop_attribute_that_round_trips():
    ck = pingpong()
    assert re.search(r'= for .*\{stages = 3, schedule = "pingpong"\}', ck.ir), "the front end records the request"
    text = print_module(ck.module)
    assert re.search(r'= for .*schedule = "pingpong".*phases = 2', text), "schedule_amd records phases"
    assert print_module(parse_module(text)) == text
    assert 'schedule = "interleave"' in print_module(interleave().module)


@tile.kernel
def _sum_rows(X: tile.Tensor[tile.f32, 2], Y: tile.Tensor[tile.f32, 2], SCHED: tile.constexpr = "pingpong"):
    acc = tile.zeros((64, 64), tile.f32)
    for k in tile.range(0, X.shape[0], 64, schedule=SCHED):
        acc = acc + tile.load(X, (k, 0), (64, 64))
    tile.store(Y, (0, 0), acc)


@tile.kernel
def _bad_schedule(X: tile.Tensor[tile.f32, 2]):
    for k in tile.range(0, 4, schedule="ping-pong"):
        tile.store(X, (k, 0), tile.zeros((1, 4), tile.f32))


def test_nvidia_ignores_the_schedule():
    """The same kernel source serves NVIDIA: the attribute is in its IR, the PTX is unchanged."""
    sig = (tile.Tensor[tile.f32, 2], tile.Tensor[tile.f32, 2])
    with_s = _sum_rows.compile(*sig, target="sm_80")
    without = _sum_rows.compile(*sig, target="sm_80", SCHED=None)
    assert 'schedule = "pingpong"' in print_module(with_s.module)
    assert with_s.ptx == without.ptx


def test_schedule_errors_are_located():
    sig = (tile.Tensor[tile.f32, 2], tile.Tensor[tile.f32, 2])
    with pytest.raises(tile.CompileError) as e:                   # the front end: an unknown name
        _bad_schedule.compile(tile.Tensor[tile.f32, 2], target="cpu")
    msg = str(e.value)
    assert "test_amd_schedules.py:" in msg and "'pingpong', 'interleave'" in msg and "^" in msg
    with pytest.raises(tile.TileError) as e:                      # no MFMA dot in the loop
        _sum_rows.compile(*sig, target="gfx942", num_warps=8)
    msg = str(e.value)
    assert "test_amd_schedules.py:" in msg and "no dot" in msg and "for k in tile.range" in msg and "^" in msg
    with pytest.raises(tile.TileError, match=r"made for 8 waves .* num_warps = 4"):
        GALLERY.gemm.compile(*signature(GALLERY.gemm), target="gfx950", BM=64, BN=64, BK=32, SCHEDULE="pingpong")
    with pytest.raises(tile.TileError, match=r"made for 4 waves .* num_warps = 8"):
        GALLERY.gemm.compile(*signature(GALLERY.gemm), target="gfx950", BM=64, BN=64, BK=32,
                             SCHEDULE="interleave", num_warps=8)
    # the interpreter and NVIDIA take the same kernel: a schedule never changes what it computes
    _sum_rows.compile(*sig, target="cpu")


@needs_lld
def test_phases_beyond_the_k_steps_is_an_error():
    from tile.passes.schedule_amd import schedule_amd
    m = parse_module(print_module(pingpong().module))
    loop = next(o for o in m.functions[0].walk() if o.name == "for" and "schedule" in o.attrs)
    loop.attrs["phases"] = 16                           # BK = 64 is 8 k steps of 32x32x8
    with pytest.raises(tile.TileError, match=r"phases = 16: .* only 8 k steps"):
        schedule_amd(m, get_target("gfx942"))


def test_pingpong_ir_runs_in_the_interpreter():
    """The IR after the gfx942 pipeline with the ping-pong schedule (8 waves) computes the GEMM
    (ragged shapes, float64 reference; tolerance: bf16 inputs and outputs)."""
    from tile import compiler
    from tile.dsl.frontend import compile_kernel
    from tile.ir.core import Module
    from tile.runtime import interpreter
    k = GALLERY.gemm
    b = k.bind(signature(k), dict(BM=128, BN=64, BK=32, SCHEDULE="pingpong"), signature_ok=True)
    m = compile_kernel(k.fn, k.params, b.types, b.constexprs, k.name)
    m.functions[0].attrs["num_warps"] = 8
    fn = compiler.lower(m, "gfx942", name=k.name)[0].functions[0]
    assert 'schedule = "pingpong"' in print_module(Module([fn]))
    rng = np.random.default_rng()
    M, N, K = 150, 70, 100
    A = tile.asarray(rng.standard_normal((M, K)), tile.bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), tile.bf16)
    C = tile.asarray(np.full((M, N), np.nan), tile.bf16)
    interpreter.run(fn, (2, 2), [A, B, C, np.zeros(N, np.float32), 1.5])
    ref = GALLERY.reference(A.numpy(), B.numpy(), None, 1.5, "none")
    out = C.numpy().astype(np.float64)
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


# ------------------------------------------------------------------------------- code objects
@needs_lld
def test_pingpong_code_object():
    """8 waves, 256x128 tile: the MFMA clusters run at raised priority (s_setprio 1 / 0 around each
    of the `phases` clusters) and the loop has 2 * phases + 1 barriers more than without the
    schedule (the turns between clusters, the second group's extra barrier before the dot and the
    first group's after it, each behind a wave-uniform branch on the wave's group)."""
    ck, base = pingpong(), pingpong_baseline()
    loop, loop0 = main_loop(ck.extra["asm"]), main_loop(base.extra["asm"])
    phases = 2
    assert count(loop, "s_setprio 1") == phases and count(loop, "s_setprio 0") == phases
    assert count(loop0, "s_setprio") == 0
    assert count(loop, "s_barrier") - count(loop0, "s_barrier") == 2 * phases + 1
    assert count(loop, "v_mfma") == count(loop0, "v_mfma") > 0
    assert "v_readfirstlane_b32" in "\n".join(loop) or "v_readfirstlane_b32" in ck.extra["asm"]
    # each cluster: its MFMAs between s_setprio 1 and s_setprio 0, no LDS access among them
    seq = [x.split()[0] + (" " + x.split()[1] if x.startswith("s_setprio") else "") for x in loop if x]
    inside = False
    for x in seq:
        if x == "s_setprio 1":
            inside = True
        elif x == "s_setprio 0":
            inside = False
        elif inside:
            assert not x.startswith(("ds_", "s_barrier")), f"{x} inside an MFMA cluster"
    check_code_object(ck, base)


@needs_lld
def test_interleave_code_object():
    """4 waves, 128x128: the next k step's LDS reads are issued between this step's MFMAs, so an
    MFMA follows an MFMA only in the last k step (which has no next step to read): at most
    (MFMAs per k step - 1) such pairs, where the unscheduled kernel issues each step's in runs."""
    ck, base = interleave(), compiled("gfx942", GEMM)
    loop, loop0 = main_loop(ck.extra["asm"]), main_loop(base.extra["asm"])
    per_step = count(loop, "v_mfma") // (INTERLEAVE["BK"] // 8)          # 32x32x8: BK / 8 k steps
    assert back_to_back_mfmas(loop0) > per_step - 1, "the baseline has no MFMA runs: the test cannot tell"
    assert back_to_back_mfmas(loop) <= per_step - 1
    assert count(loop, "v_mfma") == count(loop0, "v_mfma") > 0
    assert count(loop, "ds_read") == count(loop0, "ds_read")
    assert count(loop, "s_barrier") == count(loop0, "s_barrier") and count(loop, "s_setprio") == 0
    check_code_object(ck, base)


@needs_lld
def test_gfx950_pingpong_config_compiles_without_scratch():
    ck = build("pingpong-950", "gfx950", **PINGPONG)
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".private_segment_fixed_size"] == 0 and km.get(".vgpr_spill_count", 0) == 0
    assert re.search(r"^\s*v_mfma_f32_32x32x16_bf16\b", ck.extra["asm"], re.M)
    assert count(main_loop(ck.extra["asm"]), "s_setprio 1") == 2


# ------------------------------------------------------------------------------- on an AMD GPU
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", GALLERY.AMD_CONFIGS, ids=lambda c: c["SCHEDULE"])
def test_amd_configs_on_the_gpu(cfg):
    """On an MI300X / MI355X: the scheduled GEMM against the float64 reference (ragged shapes,
    output poisoned with NaN; tolerance: bf16 inputs and output)."""
    if not tile.current_target().startswith("gfx"):
        pytest.skip("needs an AMD GPU (the schedules are AMD-only)")
    for M, N, K in ((300, 200, 520), (512, 384, 1024)):
        assert GALLERY.run(M, N, K, act="gelu", **cfg) < 1e-2


# ------------------------------------------------------------------------- the MFMA shape
@tile.kernel
def _gemm_tile(A: tile.Tensor[tile.bf16, 2], B: tile.Tensor[tile.bf16, 2], C: tile.Tensor[tile.f32, 2],
               BM: tile.constexpr = 64, SHAPE: tile.constexpr = None):
    acc = tile.zeros((BM, 64), tile.f32)
    for k in tile.range(0, A.shape[1], 32, stages=2):
        acc = tile.dot(tile.load(A, (0, k), (BM, 32)), tile.load(B, (k, 0), (32, 64)), acc, mfma=SHAPE)
    tile.store(C, (0, 0), acc)


_GEMM_TILE = (tile.Tensor[tile.bf16, 2], tile.Tensor[tile.bf16, 2], tile.Tensor[tile.f32, 2])


@needs_lld
def test_mfma_shape_is_a_dot_attribute_the_user_sets():
    """tile.dot(mfma="16x16") is the dot's `atom = "mfma.16x16"` in the front end's IR; layout
    inference gives the operands that shape's fragments and instruction selection writes the
    target's full atom, which the code object executes. Without it the compiler picks 32x32."""
    dflt = _gemm_tile.compile(*_GEMM_TILE, target="gfx942")
    small = _gemm_tile.compile(*_GEMM_TILE, target="gfx942", SHAPE="16x16")
    assert 'atom = "mfma.16x16"' in small.ir and "atom" not in dflt.ir
    assert 'atom = "mfma.32x32x8"' in print_module(dflt.module)
    assert 'atom = "mfma.16x16x16"' in print_module(small.module)
    assert re.search(r"^\s*v_mfma_f32_16x16x16_bf16\b", small.extra["asm"], re.M)
    assert not re.search(r"^\s*v_mfma_f32_32x32", small.extra["asm"], re.M)
    assert kernel_metadata(small.hsaco, small.meta.name)[".private_segment_fixed_size"] == 0
    # NVIDIA ignores the request
    assert "mma.m16n8k16" in print_module(_gemm_tile.compile(*_GEMM_TILE, target="sm_80", SHAPE="16x16").module)


def test_mfma_shape_errors():
    with pytest.raises(tile.CompileError, match=r"mfma must be one of '32x32', '16x16'"):
        _gemm_tile.compile(*_GEMM_TILE, target="cpu", SHAPE="8x8")
    with pytest.raises(tile.TileError, match=r"atom = 'mfma.32x32': gfx942 has no such MFMA atom for a 16x64x32"):
        _gemm_tile.compile(*_GEMM_TILE, target="gfx942", BM=16, SHAPE="32x32")


def test_cli_takes_num_warps_for_a_pingpong_config(capsys):
    """`tilec ir ... -D num_warps=8` (a launch option beside the constexprs): the loop after schedule_amd."""
    from tile import cli
    spec = f"{Path(GALLERY.__file__)}::gemm"
    args = ["ir", spec, "--target", "gfx942", "--after", "schedule_amd", "-D", "SCHEDULE=pingpong", "-D", "BM=256",
            "-D", "BN=128"]
    assert cli.main(args + ["-D", "num_warps=8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r'schedule = "pingpong".*phases = 2', out) and "num_warps = 8" in out
    assert cli.main(args) != 0                                   # 4 waves: the located error
    assert "made for 8 waves" in capsys.readouterr().err


@needs_lld
def test_codegen_refuses_an_edited_schedule_it_cannot_carry_out():
    """IR edited after the pipeline is compiled as it is: a ping-pong loop in a 4-wave kernel is a
    located error of the code generator, not a silently different schedule."""
    from tile import compiler
    m = parse_module(print_module(interleave().module))
    loop = next(o for o in m.functions[0].walk() if o.name == "for" and "schedule" in o.attrs)
    loop.attrs["schedule"] = "pingpong"
    with pytest.raises(tile.TileError, match=r"gemm.py:\d+:\d+: op 'dot': .*made for 8 waves, this kernel has 4"):
        compiler.generate(m, "gfx942")
