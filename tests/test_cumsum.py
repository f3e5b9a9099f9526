"""tile.cumsum: the interpreter against NumPy (float64 references for f32 with a bound on sequential
f32 summation, and bit for bit against NumPy's sequential float32 cumsum, which is the documented
rule; exact for integers, wrap-around included), inclusive and exclusive, 1-D and both axes of 2-D
tiles; the front end's located errors; the IR round trip; PTX for sm_80 / sm_90a assembled by ptxas;
and on a GPU (`pytest -m gpu tests/test_cumsum.py`, skipped without one) the GPU against NumPy and
the interpreter on the same inputs (bit for bit: both sum in index order), num_warps 1/4/8.

Random inputs are fresh on every run (TILE_TEST_SEED replays one; the seed is in failure messages);
outputs are poisoned before every run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import traceback

import ml_dtypes as md
import numpy as np
import pytest
from helpers import gpu_and_interpreter

import tile
from tile import bf16, f32, i32

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy)
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")


def rng(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, *(abs(hash(str(k))) % (1 << 32) for k in key)])


# ------------------------------------------------------------------------------------------ kernels
@tile.kernel
def cs2(X: tile.Tensor[2], Y: tile.Tensor[2], R: tile.constexpr, C: tile.constexpr, AX: tile.constexpr,
        EX: tile.constexpr = False):
    x = tile.load(X, (0, 0), (R, C))
    tile.store(Y, (0, 0), tile.cumsum(x, AX, exclusive=EX))


@tile.kernel
def cs1(X: tile.Tensor[1], Y: tile.Tensor[1], N: tile.constexpr, EX: tile.constexpr = False):
    x = tile.load(X, (0,), (N,))
    tile.store(Y, (0,), tile.cumsum(x, -1, exclusive=EX))


@tile.kernel
def cs_blocks(X: tile.Tensor[2], Y: tile.Tensor[2], BM: tile.constexpr, C: tile.constexpr):
    """Row-wise inclusive scan of a ragged matrix, one BM-row block per program, masked loads/stores."""
    r0 = tile.block_id(0) * BM
    x = tile.load(X, (r0, 0), (BM, C))
    tile.store(Y, (r0, 0), tile.cumsum(x, 1))


@tile.kernel
def cs_mix(X: tile.Tensor[f32, 2], Y: tile.Tensor[f32, 2], R: tile.constexpr, C: tile.constexpr):
    """Both axes of one tile, combined with a broadcast row sum (layouts meet in elementwise ops)."""
    x = tile.load(X, (0, 0), (R, C))
    y = tile.cumsum(x, 0) + tile.cumsum(x, 1, exclusive=True) * 2.0 + tile.sum(x, axis=1)[:, None]
    tile.store(Y, (0, 0), y)


@tile.kernel
def cs_dot(A: tile.Tensor[bf16, 2], B: tile.Tensor[bf16, 2], Y: tile.Tensor[f32, 2], M: tile.constexpr,
           N: tile.constexpr, K: tile.constexpr, AX: tile.constexpr):
    """cumsum of an mma accumulator (tensor-core fragment layout)."""
    acc = tile.dot(tile.load(A, (0, 0), (M, K)), tile.load(B, (0, 0), (K, N)))
    tile.store(Y, (0, 0), tile.cumsum(acc, AX))


@tile.kernel
def moe_offsets(E_ids: tile.Tensor[i32, 1], Off: tile.Tensor[i32, 1], T: tile.constexpr, E: tile.constexpr):
    """MoE routing: per-expert token counts, then each expert's start offset (exclusive cumsum)."""
    ids = tile.load(E_ids, (0,), (T,), other=-1)
    hit = (ids[None, :] == tile.arange(0, E)[:, None]).astype(i32)
    counts = tile.sum(hit, axis=1)
    tile.store(Off, (0,), tile.cumsum(counts, 0, exclusive=True))


# ------------------------------------------------------------------------------------------ references
def ref_int(x, axis, exclusive, dt):
    s = np.cumsum(np.asarray(x, np.int64), axis=axis, dtype=np.int64) if dt != np.uint64 else \
        np.cumsum(x, axis=axis, dtype=np.uint64)
    if exclusive:
        s = _shift(s, axis)
    return s.astype(dt)          # NumPy's int64 -> narrower int conversion wraps (two's complement)


def _shift(s, axis):
    s = np.moveaxis(s, axis, 0)
    s = np.concatenate([np.zeros_like(s[:1]), s[:-1]], axis=0)
    return np.moveaxis(s, 0, axis)


def ref_f32_seq(x, axis, exclusive):
    """The documented rule: sequential float32 sum from index 0."""
    s = np.cumsum(x.astype(np.float32), axis=axis, dtype=np.float32)
    return _shift(s, axis) if exclusive else s


def check_f32(y, x, axis, exclusive):
    """float64 reference, error bound of sequential f32 summation; plus bit-exact against the rule."""
    x64 = x.astype(np.float64)
    ref = np.cumsum(x64, axis=axis)
    bound = np.cumsum(np.abs(x64), axis=axis)
    if exclusive:
        ref, bound = _shift(ref, axis), _shift(bound, axis)
    n = x.shape[axis]
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= 2 * n * 2.0 ** -24 * bound + 1e-30), f"seed {SEED}: max err {err.max()}"
    np.testing.assert_array_equal(y, ref_f32_seq(x, axis, exclusive), err_msg=f"seed {SEED}")


def rand_ints(key, shape, dt):
    info = np.iinfo(dt)
    r = rng(*key)
    if r.random() < 0.5:      # big values: the sums wrap
        return r.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    return r.integers(max(info.min, -100), min(info.max, 100), shape, dtype=dt, endpoint=True)


def poison(shape, dt):
    dt = np.dtype(dt)
    if dt.kind == "f":
        return np.full(shape, np.nan, dt)
    return np.full(shape, np.iinfo(dt).min // 3 + 7, dt)


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")


SHAPES_2D = [(1, 1), (1, 7), (7, 1), (7, 5), (4, 8), (64, 64), (128, 64), (16, 128)]
SIZES_1D = [1, 7, 64, 128, 1000]


# ------------------------------------------------------------------------------------------ interpreter
@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("exclusive", [False, True])
def test_interp_i32_2d(cpu, shape, axis, exclusive):
    x = rand_ints(("i32", shape, axis, exclusive), shape, np.int32)
    y = poison(shape, np.int32)
    cs2[(1,)](x, y, R=shape[0], C=shape[1], AX=axis, EX=exclusive)
    np.testing.assert_array_equal(y, ref_int(x, axis, exclusive, np.int32), err_msg=f"seed {SEED}")


@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("exclusive", [False, True])
def test_interp_f32_2d(cpu, shape, axis, exclusive):
    x = rng("f32", shape, axis).standard_normal(shape).astype(np.float32)
    y = poison(shape, np.float32)
    cs2[(1,)](x, y, R=shape[0], C=shape[1], AX=axis, EX=exclusive)
    check_f32(y, x, axis, exclusive)


@pytest.mark.parametrize("n", SIZES_1D)
@pytest.mark.parametrize("exclusive", [False, True])
def test_interp_1d(cpu, n, exclusive):
    x = rand_ints(("1d", n), (n,), np.int32)
    y = poison((n,), np.int32)
    cs1[(1,)](x, y, N=n, EX=exclusive)
    np.testing.assert_array_equal(y, ref_int(x, 0, exclusive, np.int32), err_msg=f"seed {SEED}")
    xf = rng("1df", n).standard_normal(n).astype(np.float32)
    yf = poison((n,), np.float32)
    cs1[(1,)](xf, yf, N=n, EX=exclusive)
    check_f32(yf, xf, 0, exclusive)


def test_interp_i32_wraps(cpu):
    x = np.full((2, 8), 2**30 + 3, np.int32)
    x[1] = -(2**31)
    y = poison(x.shape, np.int32)
    cs2[(1,)](x, y, R=2, C=8, AX=1)
    np.testing.assert_array_equal(y, ref_int(x, 1, False, np.int32))
    assert y[0, 1] == np.int32(-(2**31) + 6) and y[1, 1] == 0


@pytest.mark.parametrize("dt", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.int64, np.uint64])
@pytest.mark.parametrize("exclusive", [False, True])
def test_interp_other_ints(cpu, dt, exclusive):
    x = rand_ints(("ints", np.dtype(dt).name), (8, 16), dt)
    y = poison(x.shape, dt)
    cs2[(1,)](x, y, R=8, C=16, AX=1, EX=exclusive)
    np.testing.assert_array_equal(y, ref_int(x, 1, exclusive, dt), err_msg=f"seed {SEED}")


@pytest.mark.parametrize("name", ["int4", "uint3"])
def test_interp_subbyte_ints(cpu, name):
    dt = tile.dtype(name)
    lo, hi = (-8, 7) if name == "int4" else (0, 7)
    v = rng("sub", name).integers(lo, hi, (4, 16), endpoint=True)
    x = tile.asarray(v, name)
    y = tile.asarray(np.zeros((4, 16)), name)
    cs2[(1,)](x, y, R=4, C=16, AX=1)
    s = np.cumsum(v, axis=1)
    m = 1 << dt.bits
    want = s % m
    if name == "int4":
        want = np.where(want >= m // 2, want - m, want)
    np.testing.assert_array_equal(y.numpy(), want)


@pytest.mark.parametrize("dt", [np.float16, md.bfloat16, np.float64])
@pytest.mark.parametrize("exclusive", [False, True])
def test_interp_other_floats(cpu, dt, exclusive):
    x = (rng("fl", np.dtype(dt).name).standard_normal((8, 32)) * 4).astype(dt)
    y = poison(x.shape, np.float32).astype(dt)
    cs2[(1,)](x, y, R=8, C=32, AX=1, EX=exclusive)
    w = np.float64 if dt == np.float64 else np.float32
    s = np.cumsum(x.astype(w), axis=1, dtype=w)          # accumulate in f32 (f64), round each output
    if exclusive:
        s = _shift(s, 1)
    np.testing.assert_array_equal(y, s.astype(dt))


def test_interp_negative_zero(cpu):
    x = np.array([[-0.0, -0.0, 1.0, -1.0]], np.float32)
    y = poison(x.shape, np.float32)
    cs2[(1,)](x, y, R=1, C=4, AX=1)
    assert [np.signbit(v) for v in y[0]] == [True, True, False, False]
    cs2[(1,)](x, y, R=1, C=4, AX=1, EX=True)
    assert not np.signbit(y[0, 0]) and np.signbit(y[0, 1]) and y[0, 3] == 1.0


def test_interp_blocks_mix_and_moe(cpu):
    x = rand_ints(("blocks",), (100, 48), np.int32)
    y = poison(x.shape, np.int32)
    cs_blocks[(tile.cdiv(100, 32),)](x, y, BM=32, C=64)
    np.testing.assert_array_equal(y, ref_int(x, 1, False, np.int32))
    xf = rng("mix").standard_normal((16, 32)).astype(np.float32)
    yf = poison(xf.shape, np.float32)
    cs_mix[(1,)](xf, yf, R=16, C=32)
    want = ref_f32_seq(xf, 0, False) + ref_f32_seq(xf, 1, True) * 2 + xf.sum(1, keepdims=True)
    np.testing.assert_allclose(yf, want, rtol=1e-5, atol=1e-4)
    ids = rng("moe").integers(0, 8, 100).astype(np.int32)
    off = poison((8,), np.int32)
    moe_offsets[(1,)](ids, off, T=128, E=8)
    counts = np.bincount(ids, minlength=8)
    np.testing.assert_array_equal(off, np.concatenate([[0], np.cumsum(counts)[:-1]]))


# ------------------------------------------------------------------------------------------ IR
def test_ir_roundtrip_and_verifier():
    from tile.ir.errors import VerifyError
    from tile.ir.parser import parse_module
    from tile.ir.printer import print_module
    from tile.ir.types import TileType
    from tile.ir.verifier import verify
    for ex in (False, True):
        ck = cs2.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], target="cpu", R=4, C=8, AX=1, EX=ex)
        assert f"cumsum %x {{axis = 1, exclusive = {str(ex).lower()}}} : tile<4x8xf32>" in ck.ir, ck.ir
        m = parse_module(ck.ir)
        assert print_module(m) == ck.ir
        op = next(o for o in m.functions[0].walk() if o.name == "cumsum")
        assert op.attrs == {"axis": 1, "exclusive": ex} and type(op.attrs["exclusive"]) is bool
    # the verifier's rules, on mutated copies of the parsed op
    cases = [({"axis": 2, "exclusive": False}, None, "out of range"),
             ({"axis": 0, "exclusive": 1}, None, "attribute 'exclusive' must be true or false"),
             ({"axis": 0}, None, "needs attribute 'exclusive'"),
             ({"exclusive": True}, None, "needs attribute 'axis'"),
             ({"axis": 0, "exclusive": False}, TileType(tile.f16, (4, 8)), "does not match the inferred type"),
             ({"axis": 0, "exclusive": False}, TileType(f32, (8, 4)), "does not match the inferred type")]
    for attrs, rtype, msg in cases:
        m = parse_module(ck.ir)
        op = next(o for o in m.functions[0].walk() if o.name == "cumsum")
        op.attrs = dict(attrs)
        if rtype is not None:
            op.results[0].type = rtype
        with pytest.raises(VerifyError) as ei:
            verify(m)
        assert msg in str(ei.value) and "'cumsum'" in str(ei.value), str(ei.value)


# ------------------------------------------------------------------------------------------ front end
def _line_of(kernel, text):
    import inspect
    lines, first = inspect.getsourcelines(kernel.fn)
    for i, ln in enumerate(lines):
        if text in ln:
            return first + i, ln.index(text) + 1
    raise AssertionError(f"{text!r} not in the source")


def compile_error(kernel, *args, at=None, match=None, **kw):
    with pytest.raises(tile.CompileError) as ei:
        kernel.compile(*args, target="cpu", **kw)
    err = ei.value
    s = str(err)
    if match is not None:
        assert match in err.msg, s
    if at is not None:
        line, col = _line_of(kernel, at)
        assert (err.line, err.col) == (line, col), s
        assert f"test_cumsum.py:{line}:{col}: " in s, s
    frames = traceback.extract_tb(err.__traceback__)
    assert not any("/dsl/" in f.filename or "/ir/" in f.filename for f in frames), frames
    return err


@tile.kernel
def bad_scalar(X: tile.Tensor[f32, 1]):
    s = tile.cumsum(X[0], 0)


@tile.kernel
def bad_axis(X: tile.Tensor[f32, 2]):
    y = tile.cumsum(tile.load(X, (0, 0), (4, 4)), 2)


@tile.kernel
def bad_runtime_axis(X: tile.Tensor[f32, 2], a: i32):
    y = tile.cumsum(tile.load(X, (0, 0), (4, 4)), a)


@tile.kernel
def bad_exclusive(X: tile.Tensor[f32, 1]):
    y = tile.cumsum(tile.load(X, (0,), (4,)), 0, exclusive="yes")


@tile.kernel
def bad_bool(X: tile.Tensor[f32, 1]):
    y = tile.cumsum(tile.load(X, (0,), (4,)) > 0, 0)


@tile.kernel
def bad_shared(X: tile.Tensor[f32, 1]):
    s = tile.alloc_shared((4,), f32)
    y = tile.cumsum(s, 0)


@tile.kernel
def bad_no_axis(X: tile.Tensor[f32, 1]):
    y = tile.cumsum(tile.load(X, (0,), (4,)))


def test_front_end_errors():
    T1, T2 = tile.Tensor[f32, 1], tile.Tensor[f32, 2]
    compile_error(bad_scalar, T1, at="X[0]", match="x must be a tile")
    compile_error(bad_axis, T2, at="2)", match="axis 2 is out of range for rank 2")
    compile_error(bad_runtime_axis, T2, i32, at="a)", match="compile-time integer")
    compile_error(bad_exclusive, T1, at='"yes"', match="exclusive must be a compile-time bool")
    compile_error(bad_bool, T1, at="tile.load(X, (0,), (4,)) > 0", match="boolean tile")
    compile_error(bad_shared, T1, at="s, 0", match="shared tile")
    compile_error(bad_no_axis, T1, match="axis")
    with pytest.raises(tile.OutsideKernelError):
        tile.cumsum(np.zeros(3), 0)


# ------------------------------------------------------------------------------------------ PTX
def ptxas(ptx: str, arch: str, tmp_path):
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    r = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stderr


PTX_CASES = [
    ("cs2", (tile.Tensor[i32, 2], tile.Tensor[i32, 2]), dict(R=128, C=64, AX=1, EX=True)),
    ("cs2", (tile.Tensor[f32, 2], tile.Tensor[f32, 2]), dict(R=128, C=64, AX=0)),
    ("cs2", (tile.Tensor[bf16, 2], tile.Tensor[bf16, 2]), dict(R=7, C=5, AX=1, EX=True)),
    ("cs2", (tile.Tensor[tile.f16, 2], tile.Tensor[tile.f16, 2]), dict(R=16, C=16, AX=0)),
    ("cs2", (tile.Tensor[tile.i64, 2], tile.Tensor[tile.i64, 2]), dict(R=8, C=32, AX=1)),
    ("cs2", (tile.Tensor[tile.u8, 2], tile.Tensor[tile.u8, 2]), dict(R=32, C=32, AX=0, EX=True)),
    ("cs2", (tile.Tensor[tile.dtype("int4"), 2], tile.Tensor[tile.dtype("int4"), 2]), dict(R=8, C=16, AX=1)),
    ("cs2", (tile.Tensor[tile.dtype("f8e4m3fn"), 2], tile.Tensor[tile.dtype("f8e4m3fn"), 2]), dict(R=8, C=16, AX=1)),
    ("cs1", (tile.Tensor[i32, 1], tile.Tensor[i32, 1]), dict(N=1024, EX=True)),
    ("cs1", (tile.Tensor[i32, 1], tile.Tensor[i32, 1]), dict(N=100)),           # not a power of two: replicated
    ("cs1", (tile.Tensor[f32, 1], tile.Tensor[f32, 1]), dict(N=1)),
    ("cs_mix", (tile.Tensor[f32, 2], tile.Tensor[f32, 2]), dict(R=64, C=32)),
    ("cs_dot", (tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], tile.Tensor[f32, 2]), dict(M=64, N=64, K=32, AX=1)),
    ("moe_offsets", (tile.Tensor[i32, 1], tile.Tensor[i32, 1]), dict(T=128, E=64)),
]


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("case", range(len(PTX_CASES)), ids=[f"{c[0]}{i}" for i, c in enumerate(PTX_CASES)])
def test_ptx_assembles(case, arch, tmp_path):
    name, sig, consts = PTX_CASES[case]
    ck = globals()[name].compile(*sig, target=arch, **consts)
    assert f".target {arch}" in ck.ptx and "bar.sync" in ck.ptx
    ptxas(ck.ptx, arch, tmp_path)


# ------------------------------------------------------------------------------------------ GPU
def _gpu():
    from tile.kernel import gpu_arch
    return gpu_arch()


@pytest.fixture
def gpu(monkeypatch):
    if _gpu() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)


_both = gpu_and_interpreter


GPU_SHAPES = [(1, 1), (1, 7), (7, 5), (4, 8), (64, 64), (128, 64), (16, 256), (256, 16)]


@pytest.mark.gpu
@pytest.mark.parametrize("num_warps", [1, 4, 8])
@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("dt", ["i32", "f32"])
def test_gpu_2d(gpu, dt, shape, num_warps):
    for axis in (0, 1):
        for exclusive in (False, True):
            key = (dt, shape, num_warps, axis, exclusive)
            if dt == "i32":
                x = rand_ints(key, shape, np.int32)
            else:
                x = rng(*key).standard_normal(shape).astype(np.float32)
            y = poison(shape, x.dtype)
            [(yg, yc)] = _both(cs2, (1,), [x, y], [1], R=shape[0], C=shape[1], AX=axis, EX=exclusive,
                               num_warps=num_warps)
            np.testing.assert_array_equal(yg, yc, err_msg=f"GPU vs interpreter {key}, seed {SEED}")
            if dt == "i32":
                np.testing.assert_array_equal(yg, ref_int(x, axis, exclusive, np.int32), err_msg=f"{key} seed {SEED}")
            else:
                check_f32(yg, x, axis, exclusive)


@pytest.mark.gpu
@pytest.mark.parametrize("num_warps", [1, 4, 8])
@pytest.mark.parametrize("n", SIZES_1D + [4096])
def test_gpu_1d(gpu, n, num_warps):
    for exclusive in (False, True):
        x = rand_ints(("g1", n, num_warps, exclusive), (n,), np.int32)
        [(yg, yc)] = _both(cs1, (1,), [x, poison((n,), np.int32)], [1], N=n, EX=exclusive, num_warps=num_warps)
        np.testing.assert_array_equal(yg, yc)
        np.testing.assert_array_equal(yg, ref_int(x, 0, exclusive, np.int32), err_msg=f"seed {SEED}")
        xf = rng("g1f", n, num_warps, exclusive).standard_normal(n).astype(np.float32)
        [(yg, yc)] = _both(cs1, (1,), [xf, poison((n,), np.float32)], [1], N=n, EX=exclusive, num_warps=num_warps)
        np.testing.assert_array_equal(yg, yc)
        check_f32(yg, xf, 0, exclusive)


@pytest.mark.gpu
@pytest.mark.parametrize("num_warps", [1, 4, 8])
def test_gpu_other_dtypes(gpu, num_warps):
    for dt in (np.int8, np.uint16, np.int64, np.uint64):
        x = rand_ints(("gd", np.dtype(dt).name, num_warps), (16, 32), dt)
        for axis in (0, 1):
            [(yg, yc)] = _both(cs2, (1,), [x, poison(x.shape, dt)], [1], R=16, C=32, AX=axis, EX=axis == 1,
                               num_warps=num_warps)
            np.testing.assert_array_equal(yg, yc)
            np.testing.assert_array_equal(yg, ref_int(x, axis, axis == 1, dt))
    for dt in (np.float16, md.bfloat16, np.float64):
        x = (rng("gf", np.dtype(dt).name, num_warps).standard_normal((16, 32)) * 4).astype(dt)
        for axis in (0, 1):
            [(yg, yc)] = _both(cs2, (1,), [x, poison(x.shape, np.float32).astype(dt)], [1], R=16, C=32, AX=axis,
                               EX=axis == 0, num_warps=num_warps)
            np.testing.assert_array_equal(yg, yc)
    v = rng("gsub", num_warps).integers(-8, 7, (8, 16), endpoint=True)
    [(yg, yc)] = _both(cs2, (1,), [tile.asarray(v, "int4"), tile.asarray(np.zeros((8, 16)), "int4")], [1],
                       R=8, C=16, AX=1, num_warps=num_warps)
    np.testing.assert_array_equal(yg.numpy(), yc.numpy())


@pytest.mark.gpu
@pytest.mark.parametrize("num_warps", [1, 4, 8])
def test_gpu_layouts_blocks_moe(gpu, num_warps):
    x = rand_ints(("gb", num_warps), (100, 48), np.int32)
    [(yg, yc)] = _both(cs_blocks, (tile.cdiv(100, 32),), [x, poison(x.shape, np.int32)], [1], BM=32, C=64,
                       num_warps=num_warps)
    np.testing.assert_array_equal(yg, yc)
    np.testing.assert_array_equal(yg, ref_int(x, 1, False, np.int32))
    xf = rng("gmix", num_warps).standard_normal((64, 32)).astype(np.float32)
    [(yg, yc)] = _both(cs_mix, (1,), [xf, poison(xf.shape, np.float32)], [1], R=64, C=32, num_warps=num_warps)
    want = ref_f32_seq(xf, 0, False) + ref_f32_seq(xf, 1, True) * 2 + xf.sum(1, keepdims=True)
    np.testing.assert_allclose(yg, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(yg, yc, rtol=1e-6, atol=1e-5)       # the row sums' order may differ
    a = rng("ga", num_warps).standard_normal((64, 32)).astype(md.bfloat16)
    b = rng("gb2", num_warps).standard_normal((32, 64)).astype(md.bfloat16)
    for axis in (0, 1):
        [(yg, yc)] = _both(cs_dot, (1,), [a, b, poison((64, 64), np.float32)], [2], M=64, N=64, K=32, AX=axis,
                           num_warps=num_warps)
        ref = np.cumsum(a.astype(np.float64) @ b.astype(np.float64), axis=axis)
        np.testing.assert_allclose(yg, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
        np.testing.assert_allclose(yg, yc, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
    ids = rng("gmoe", num_warps).integers(0, 64, 100).astype(np.int32)
    [(og, oc)] = _both(moe_offsets, (1,), [ids, poison((64,), np.int32)], [1], T=128, E=64, num_warps=num_warps)
    counts = np.bincount(ids, minlength=64)
    np.testing.assert_array_equal(og, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    np.testing.assert_array_equal(og, oc)


def test_a_replicated_tile_of_odd_shape_warns_once():
    """A 200-element tile gets the layout that gives every thread the whole tile: one
    PerformanceWarning naming the kernel, the line and the padded shape; a 256 one gets none."""
    import warnings
    with pytest.warns(tile.PerformanceWarning, match=r"kernel 'cs1' at test_cumsum\.py:\d+:\d+: load makes a 200 "
                      r"i32 tile.*200 values each.*a 256 tile") as rec:
        cs1.compile(tile.Tensor[i32, 1], tile.Tensor[i32, 1], target="sm_80", N=200, EX=True)
    assert sum("power of two" in str(w.message) for w in rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", tile.PerformanceWarning)
        cs1.compile(tile.Tensor[i32, 1], tile.Tensor[i32, 1], target="sm_80", N=256, EX=True)
