"""f8e8m0fnu (tile.e8m0), the OCP MX scale type, against ml_dtypes.float8_e8m0fnu bit for bit: the
numerics (the interpreter's casts), the LLVM IR casts the GPUs get (JIT-compiled for the host by
llvmlite), tile.asarray / .numpy(), and loads, stores and casts in an interpreted kernel."""

import ml_dtypes
import numpy as np
import pytest

import llvmlite.ir as ir

import tile
from tile.ir import dtypes, numerics

from helpers import on_cpu
from host_jit import close_loop, host_function     # the host JIT with the bf16 rounding libcall

E8 = ml_dtypes.float8_e8m0fnu
T = dtypes.dtype("e8m0")
CODES = np.arange(256, dtype=np.uint8)


def ml_codes(x) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(x).astype(E8).view(np.uint8)


def dense_f32(rng) -> np.ndarray:
    """Every f32 binade (subnormals too) at the rounding thresholds 1.5 * 2^k and their neighbours,
    the powers of two and theirs, random bit patterns of both signs, and the specials."""
    k = np.arange(256, dtype=np.uint32) << np.uint32(23)
    marks = np.concatenate([k, k | np.uint32(0x400000), np.arange(0, 1 << 24, 4099, dtype=np.uint32),
                            np.array([0x600000, 0x400000, 0x200000, 1, 0x7FFFFF], np.uint32)])
    near = (marks[:, None].astype(np.int64) + np.arange(-2, 3)).ravel()
    pos = np.clip(near, 0, 0x7F800000).astype(np.uint32)
    rand = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32)
    u = np.concatenate([pos, pos | np.uint32(1 << 31), rand, np.array([0x7F800000, 0xFF800000, 0x7FC00000,
                                                                       0xFFC00000, 0x7F800001], np.uint32)])
    return u.view(np.float32)


def ref_e8m0(x) -> np.ndarray:
    """Brute force from the definition: the nearest of 2^-127 .. 2^127 (ties up, values below 2^-127
    to it), NaN (255) for anything not positive and finite or rounding past 2^127; exact in float64."""
    with np.errstate(all="ignore"):
        x = np.asarray(x, np.float64)
        k = np.floor(np.log2(np.where(x > 0, x, 1.0)))
        k = k + (x >= 2.0 ** (k + 1)) - (x < 2.0 ** k)           # exact floor(log2 x)
        up = x >= 1.5 * 2.0 ** k
        code = np.maximum(k + up + 127, 0)
        bad = ~(x > 0) | ~np.isfinite(x) | (code > 254)
    return np.where(bad, 255, np.minimum(code, 255)).astype(np.uint8)


# ------------------------------------------------------------------ the dtype
def test_names_and_value_set():
    assert T is tile.e8m0 is tile.f8e8m0fnu is tile.float8_e8m0fnu is dtypes.dtype("float8_e8m0fnu")
    assert str(T) == "f8e8m0fnu" and T.bits == 8 and T.nbytes == 1 and T.is_float and T.is_e8m0
    assert not T.has_sign and not T.is_signed and T.has_nan and not T.has_inf
    assert T.max_value == float(ml_dtypes.finfo(E8).max) == 2.0 ** 127 and T.min_value == 2.0 ** -127
    assert not dtypes.f8e4m3fn.is_e8m0 and dtypes.f8e4m3fn.is_signed and not dtypes.u8.is_signed


# ------------------------------------------------------------------ numerics (the interpreter)
def test_decode_every_code():
    got = numerics.decode(CODES, T)
    want = CODES.view(E8).astype(np.float64)
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got[255]) and got[0] == 2.0 ** -127


def test_encode_matches_ml_dtypes():
    x = dense_f32(np.random.default_rng(10))
    with np.errstate(invalid="ignore"):
        got = numerics.encode(x, T)
    bad = np.nonzero(got != ml_codes(x))[0]
    assert bad.size == 0, [(hex(int(x.view(np.uint32)[i])), int(got[i]), int(ml_codes(x)[i])) for i in bad[:8]]
    assert np.array_equal(got, ref_e8m0(x))
    for src in (np.float16, ml_dtypes.bfloat16):               # every f16 and bf16 value
        v = np.arange(1 << 16, dtype=np.uint16).view(src)
        assert np.array_equal(numerics.encode(v, T), ml_codes(v)), src
    # ties go up, 0 / negatives / inf / NaN / overflow are NaN, tiny values clamp to 2^-127
    spot = np.array([1.5, 3.0, 0.75, 1.4999999, 0.0, -0.0, -4.0, np.inf, np.nan, 2.0 ** -140, 1.5 * 2.0 ** 127],
                    np.float32)
    assert numerics.encode(spot, T).tolist() == [128, 129, 127, 127, 255, 255, 255, 255, 255, 0, 255]


def test_encode_float64_rounds_once():
    """float64 inputs go straight to e8m0 (ml_dtypes goes through float32, which can round a value
    just below a tie up to it); every f32-exact input agrees with ml_dtypes."""
    with np.errstate(invalid="ignore"):                          # the signalling NaN
        x = dense_f32(np.random.default_rng(11)).astype(np.float64)
    x = np.concatenate([x, x * (1 - 2.0 ** -40), x * (1 + 2.0 ** -40), [2.0 ** 200, 2.0 ** -200, 1.5 * 2 ** -127]])
    assert np.array_equal(numerics.encode(x, T), ref_e8m0(x))
    assert numerics.encode(np.array([1.5 - 2.0 ** -40]), T)[0] == 127        # ml_dtypes says 128
    n = len(x) // 3
    assert np.array_equal(numerics.encode(x[:n], T), ml_codes(x[:n]))


# ------------------------------------------------------------------ arrays
def test_asarray_and_numpy_round_trip():
    ml = CODES.view(E8)
    a = tile.asarray(ml)                                         # an ml_dtypes array: codes kept
    assert a.dtype is T and np.array_equal(a.codes(), CODES)
    v = a.numpy()
    assert v.dtype == np.float32 and np.array_equal(v, ml.astype(np.float32), equal_nan=True)
    b = tile.asarray(v, "e8m0")                                  # and back, bit for bit
    assert np.array_equal(b.codes(), CODES)
    x = dense_f32(np.random.default_rng(12))[:5000]
    assert np.array_equal(tile.asarray(x, tile.e8m0).codes(), ml_codes(x))
    assert tile.dtype_of(ml) is T


# ------------------------------------------------------------------ LLVM IR casts (the GPU's code)


def _jit_convert(src, dst, op=None):
    """void f(src *in, dst *out, i64 n): out[i] = convert(in[i]), Numerics.convert's LLVM IR (or
    `op(numerics, builder, value)`)."""
    from tile.codegen.llvm_numerics import Numerics
    from tile.codegen.llvm_util import Decls, reg_type

    S, D = dtypes.dtype(src), dtypes.dtype(dst)
    m = ir.Module(name=f"cv_{S}_{D}")
    ptr, i64 = ir.PointerType(), ir.IntType(64)
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64]), "conv")
    ip, out, n = fn.args
    entry, loop, done = (fn.append_basic_block(s) for s in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    st, dt = reg_type(S), reg_type(D)
    v = b.load(b.gep(ip, [i], source_etype=st), typ=st)
    nm = Numerics(Decls(m), None)
    r = nm.convert(b, v, S, D) if op is None else op(nm, b, v)
    b.store(r, b.gep(out, [i], source_etype=dt))
    close_loop(b, i, 1, n, loop, done)
    return host_function(m)


def _run(src, dst, codes, op=None):
    codes = np.ascontiguousarray(codes)
    out = np.zeros(codes.size, numerics.code_dtype(dtypes.dtype(dst)) if dtypes.dtype(dst).is_float else
                   np.dtype(f"int{max(dtypes.dtype(dst).bits, 8)}"))
    _jit_convert(src, dst, op)(codes.ctypes.data, out.ctypes.data, codes.size)
    return out


FROM_E8M0 = ["f32", "f16", "bf16", "f64", "f4e2m1", "f8e4m3fn", "f8e5m2", "i32", "u8", "int4"]


@pytest.mark.parametrize("dst", FROM_E8M0)
def test_llvm_cast_from_e8m0_every_code(dst):
    D = dtypes.dtype(dst)
    got = _run("e8m0", dst, CODES)
    want = numerics.encode(numerics.decode(CODES, T), D)       # the interpreter's cast
    if D.is_int:
        want = numerics.decode(want, D)
    assert np.array_equal(got, want.astype(got.dtype)), [(c, got[c], want[c]) for c in np.nonzero(got != want)[0][:8]]
    if dst in ("f32", "f16", "bf16"):                            # and ml_dtypes' own decode, NaN aside
        ml = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}[dst]
        with np.errstate(all="ignore"):
            ref = CODES[:255].view(E8).astype(ml).view(got.dtype)
        assert np.array_equal(got[:255], ref)


def test_llvm_cast_to_e8m0():
    x32 = dense_f32(np.random.default_rng(13))
    with np.errstate(invalid="ignore"):                          # the signalling NaN
        w = x32.astype(np.float64)
    x64 = np.concatenate([w, w * (1 - 2.0 ** -40), [2.0 ** 200, 1.5 * 2 ** -127, 2.0 ** -1074]])
    every16 = np.arange(1 << 16, dtype=np.uint16)
    cases = {"f32": (x32.view(np.uint32), x32), "f64": (x64.view(np.uint64), x64),
             "f16": (every16, every16.view(np.float16)), "bf16": (every16, every16.view(ml_dtypes.bfloat16)),
             "i32": (np.array([0, 1, -1, 2, 3, 5, 6, 7, 12, 1 << 30, 3 << 29, 2 ** 31 - 1, -2 ** 31], np.int32),) * 2,
             "int4": (np.arange(-8, 8, dtype=np.int8),) * 2}
    for name in ("f4e2m1", "f8e4m3fn", "f8e5m2", "f6e3m2"):      # every code of the small floats
        cases[name] = (CODES[:1 << dtypes.dtype(name).bits], numerics.decode(CODES[:1 << dtypes.dtype(name).bits], name))
    for src, (raw, values) in cases.items():
        got = _run(src, "e8m0", raw)
        want = numerics.encode(values, T)
        bad = np.nonzero(got != want)[0]
        assert bad.size == 0, (src, [(raw[i], int(got[i]), int(want[i])) for i in bad[:8]])
        if src in ("f32", "f16", "bf16"):
            assert np.array_equal(got, ml_codes(values)), src


def test_llvm_neg_abs():
    """No sign bit: -x is NaN, |x| is x (the codegen must not flip bit 7 as for signed formats)."""
    neg = _run("e8m0", "e8m0", CODES, lambda nm, b, v: nm.unary(b, "neg", v, T))
    absv = _run("e8m0", "e8m0", CODES, lambda nm, b, v: nm.unary(b, "abs", v, T))
    assert (neg == 255).all() and np.array_equal(absv, CODES)
    assert np.array_equal(numerics.encode(-numerics.decode(CODES, T), T), neg)     # the interpreter's rule


# ------------------------------------------------------------------ kernels (interpreter)
@tile.kernel
def _scale_rows(X: tile.Tensor[tile.f32], S: tile.Tensor[tile.e8m0], Y: tile.Tensor[tile.f32],
                R: tile.Tensor[tile.e8m0], N: int, BLOCK: tile.constexpr = 64):
    i = tile.block_id(0)
    x = tile.load(X, (i * BLOCK,), (BLOCK,))
    s = tile.load(S, (i * BLOCK,), (BLOCK,))
    tile.store(Y, (i * BLOCK,), x * s.astype(tile.f32))
    tile.store(R, (i * BLOCK,), x.astype(tile.e8m0))


def _check_scale_rows():
    n = 256
    rng = np.random.default_rng(14)
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    s = tile.asarray(rng.integers(100, 160, n).astype(np.uint8).view(E8))
    y = np.zeros(n, np.float32)
    r = tile.asarray(np.zeros(n, np.float32), tile.e8m0)
    _scale_rows[(tile.cdiv(n, 64),)](x, s, y, r, n)
    assert np.array_equal(y, x * s.numpy())
    assert np.array_equal(r.codes(), ml_codes(x))


def test_kernel_loads_stores_casts_interpreter():
    on_cpu(_check_scale_rows)


@pytest.mark.gpu
def test_kernel_loads_stores_casts_gpu(monkeypatch):
    from tile.kernel import gpu_arch
    if gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    _check_scale_rows()
