"""The NumPy interpreter (tile.runtime.interpreter), op family by op family, on IR built with the
Builder (no front end). References are computed in float64 from the exact inputs; outputs are
poisoned before every run; random inputs are fresh on every run (the seed is in failure messages;
TILE_TEST_SEED replays one).

Tolerances: exact (bit for bit) wherever the result is one rounding of an exactly computable value
(casts, narrow-float elementwise chains, loads/stores, integer ops, dot with integer inputs); f32
elementwise vs float64: rtol 1e-6 (basic ops are correctly rounded: 2**-24), 4e-6 for
transcendentals; f32 sums: 1e-5 relative to sum(|x|); bf16-input dot with f32 accumulation:
1e-5 relative to the largest |reference|.
"""
from __future__ import annotations

import io
import os

import ml_dtypes as md
import numpy as np
import pytest

from tile.ir import dtypes as D
from tile.ir import numerics as N
from tile.ir.builder import Builder
from tile.ir.core import Block, Function, Loc
from tile.ir.ops import OPS
from tile.ir.register_layout import tv_blocked
from tile.ir.types import ScalarType, TensorType, tile_type
from tile.ir.verifier import verify
from tile.runtime import interpreter as I
from tile.runtime.arrays import asarray
from tile.runtime.interpreter import InterpreterError, RULES, run

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy)


def rng(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, *name.encode()])


def randn(name, shape, scale=1.0, positive=False):
    """Random nonzero values."""
    x = rng(name).standard_normal(shape) * scale
    x = np.where(np.abs(x) < 1e-3 * scale, 0.5 * scale, x)
    return np.abs(x) if positive else x


def poisoned(shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return np.full(shape, np.nan, dtype)
    return np.full(shape, np.iinfo(dtype).min // 3, dtype)


# ------------------------------------------------------------------------------------------------
# A tiny kernel builder on top of ir.builder.Builder


def T(dt, rank=2):
    return TensorType(D.dtype(dt), (None,) * rank)


def S(dt="i32"):
    return ScalarType(D.dtype(dt))


def tl(shape, dt, space="reg", layout=None):
    return tile_type(shape, dt, space, layout)


HERE = os.path.abspath(__file__)


class K:
    """Builds one kernel: K(A=T("f32"), n=S()) then k.op(...)/k.load(...) with the params as attributes."""

    def __init__(self, **params):
        self.f = Function("k", list(params.values()), list(params))
        self.b = Builder(self.f.body, loc=Loc(HERE, 1, 1))
        for n, a in zip(params, self.f.args):
            setattr(self, n, a)

    def __call__(self, name, operands=(), rtype=None, **attrs):
        if rtype is None:
            self.b.create(name, list(operands), [], attrs)
            return None
        return self.b.value(name, list(operands), rtype, attrs)

    def c(self, v, dt="i32"):
        return self("constant", (), S(dt), value=v)

    def idx(self, *vs):
        return [v if not isinstance(v, int) else self.c(v) for v in vs]

    def bid(self, axis=0):
        return self("block_id", (), S("i32"), axis=axis)

    def arith(self, name, a, b):
        return self(name, (a, b), a.type)

    def load(self, t, offs, shape, mask=None, other=None):
        attrs = {"shape": list(shape)}
        if other is not None:
            attrs["other"] = other
        ops = [t, *self.idx(*offs)] + ([mask] if mask is not None else [])
        return self("load", ops, tl(shape, t.type.dtype), **attrs)

    def store(self, t, offs, v, mask=None):
        self("store", [t, *self.idx(*offs), v] + ([mask] if mask is not None else []))

    def done(self):
        verify(self.f)
        return self.f


def cdiv(a, b):
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
def test_rules_cover_every_op():
    assert set(RULES) == set(OPS), f"missing: {set(OPS) - set(RULES)}, extra: {set(RULES) - set(OPS)}"


def _elementwise_kernel(dt, names, shape=(8, 16), unary=False):
    """out = names[-1](...names[0](x, y)..., y) on one tile; or a unary op for unary=True."""
    k = K(X=T(dt), Y=T(dt), O=T(dt))
    x = k.load(k.X, (0, 0), shape)
    y = k.load(k.Y, (0, 0), shape)
    v = x
    for n in names:
        v = k(n, (v,), v.type) if unary else k.arith(n, v, y)
    k.store(k.O, (0, 0), v)
    return k.done()


BIN_REF = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
           "min": np.minimum, "pow": np.power, "atan2": np.arctan2, "rem": np.fmod}


@pytest.mark.parametrize("name", sorted(BIN_REF))
def test_f32_binary(name):
    x = randn(f"b{name}x", (8, 16), 3.0, positive=name == "pow").astype(np.float32)
    y = randn(f"b{name}y", (8, 16), 3.0).astype(np.float32)
    if name == "pow":
        y = np.clip(y, -3, 3).astype(np.float32)
    o = poisoned((8, 16))
    run(_elementwise_kernel("f32", [name]), (1,), [x, y, o])
    want = BIN_REF[name](x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(o, want, rtol=1e-6 if name != "pow" else 4e-6, atol=1e-30,
                               err_msg=f"seed {SEED}")


UN_REF = {"exp": np.exp, "exp2": np.exp2, "log": np.log, "log2": np.log2, "sqrt": np.sqrt,
          "rsqrt": lambda v: 1 / np.sqrt(v), "sin": np.sin, "cos": np.cos, "tanh": np.tanh,
          "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "floor": np.floor, "ceil": np.ceil, "round": np.rint,
          "neg": np.negative, "abs": np.abs,
          "erf": np.vectorize(__import__("math").erf)}


@pytest.mark.parametrize("name", sorted(UN_REF))
def test_f32_unary(name):
    pos = name in ("log", "log2", "sqrt", "rsqrt")
    x = randn(f"u{name}", (8, 16), 2.0, positive=pos).astype(np.float32)
    o = poisoned((8, 16))
    run(_elementwise_kernel("f32", [name], unary=True), (1,), [x, x.copy(), o])
    want = UN_REF[name](x.astype(np.float64))
    np.testing.assert_allclose(o, want, rtol=4e-6, atol=4e-7 if name in ("sin", "cos", "erf", "tanh") else 0,
                               err_msg=f"seed {SEED}")


def test_bf16_rounds_after_every_op():
    # out = ((x * y) + y) / y: three ops, each rounded to bf16 (an f32 chain would differ)
    x = randn("bf16x", (16, 32)).astype(md.bfloat16)
    y = randn("bf16y", (16, 32)).astype(md.bfloat16)
    o = np.full((16, 32), np.nan, md.bfloat16)
    run(_elementwise_kernel("bf16", ["mul", "add", "div"], shape=(16, 32)), (1,), [x, y, o])
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    q = lambda v: N.quantize(v.astype(np.float32), "bf16")   # f32 compute, then bf16 rounding
    want = q(q(q(xf * yf) + yf) / yf)
    np.testing.assert_array_equal(o.astype(np.float64), want, err_msg=f"seed {SEED}")
    chained = N.quantize(((xf * yf) + yf) / yf, "bf16")
    assert not np.array_equal(want, chained)       # the per-op rounding is observable


@pytest.mark.parametrize("dt", ["f16", "f8e4m3fn", "f6e3m2", "f4e2m1"])
def test_narrow_float_elementwise(dt):
    x = N.quantize(randn(f"nf{dt}x", (4, 8)), dt)
    y = N.quantize(randn(f"nf{dt}y", (4, 8)), dt)
    xa, ya, oa = asarray(x, dt), asarray(y, dt), asarray(np.full((4, 8), 1.5), dt)
    run(_elementwise_kernel(dt, ["mul", "sub"], shape=(4, 8)), (1,), [xa, ya, oa])
    q = lambda v: N.quantize(np.asarray(v, np.float32), dt)
    want = q(q(x * y) - y)
    np.testing.assert_array_equal(oa.numpy(), want.astype(np.float32), err_msg=f"{dt} seed {SEED}")


def test_integer_arithmetic_c_semantics_and_wrapping():
    r = rng("ints")
    a = r.integers(-2**31, 2**31, (4, 16)).astype(np.int32)
    b = r.integers(-50, 50, (4, 16)).astype(np.int32)
    b[b == 0] = 7
    b[0, :4] = [-1, 1, 3, -3]
    a[0, :4] = [-2**31, 2**31 - 1, -7, 7]
    b[1, :2] = 0                                   # division by zero: -1 and the dividend
    outs = {n: poisoned((4, 16), np.int32) for n in ("add", "mul", "div", "rem", "sub", "and", "or", "xor")}
    for n, o in outs.items():
        run(_elementwise_kernel("i32", [n], shape=(4, 16)), (1,), [a, b, o])
    A, B = a.astype(object), b.astype(object)
    wrap = np.vectorize(lambda v: (int(v) + 2**31) % 2**32 - 2**31)
    tdiv = np.vectorize(lambda p, q: -1 if q == 0 else (abs(p) // abs(q)) * (1 if (p < 0) == (q < 0) else -1))
    trem = np.vectorize(lambda p, q: p if q == 0 else p - q * ((abs(p) // abs(q)) * (1 if (p < 0) == (q < 0) else -1)))
    msg = f"seed {SEED}"
    np.testing.assert_array_equal(outs["add"], wrap(A + B), err_msg=msg)
    np.testing.assert_array_equal(outs["sub"], wrap(A - B), err_msg=msg)
    np.testing.assert_array_equal(outs["mul"], wrap(A * B), err_msg=msg)
    np.testing.assert_array_equal(outs["div"], wrap(tdiv(A, B)), err_msg=msg)
    np.testing.assert_array_equal(outs["rem"], wrap(trem(A, B)), err_msg=msg)
    np.testing.assert_array_equal(outs["and"], a & b)
    np.testing.assert_array_equal(outs["xor"], a ^ b)
    assert outs["div"][0, 0] == -2**31 and outs["div"][1, 0] == -1 and outs["rem"][1, 1] == a[1, 1]


@pytest.mark.parametrize("dt,np_t", [("i8", np.int8), ("u8", np.uint8)])
def test_shifts_and_narrow_wrap(dt, np_t):
    info = np.iinfo(np_t)
    r = rng(f"sh{dt}")
    a = r.integers(info.min, info.max + 1, (2, 16)).astype(np_t)
    s = r.integers(0, 8, (2, 16)).astype(np_t)
    s[0, :3] = [8, 9, 100]                                       # amounts >= the width clamp
    o1, o2, o3 = (poisoned((2, 16), np_t) for _ in range(3))
    run(_elementwise_kernel(dt, ["shl"], shape=(2, 16)), (1,), [a, s, o1])
    run(_elementwise_kernel(dt, ["shr"], shape=(2, 16)), (1,), [a, s, o2])
    run(_elementwise_kernel(dt, ["add"], shape=(2, 16)), (1,), [a, s, o3])
    A, Sh = a.astype(np.int64), s.astype(np.int64)
    big = Sh >= 8
    want_l = np.where(big, 0, (A << np.minimum(Sh, 7))).astype(np_t)       # astype wraps
    want_r = np.where(big, (A >> 7) if dt == "i8" else 0, A >> np.minimum(Sh, 7)).astype(np_t)
    np.testing.assert_array_equal(o1, want_l, err_msg=f"seed {SEED}")
    np.testing.assert_array_equal(o2, want_r, err_msg=f"seed {SEED}")
    np.testing.assert_array_equal(o3, (A + Sh).astype(np_t), err_msg=f"seed {SEED}")


def test_subbyte_integer_tensors_wrap():
    x = np.array([[3, -4, 2, -1, 0, 1, 3, -3]])
    y = np.array([[1, -1, 3, -4, 2, 2, 3, 1]])
    xa, ya, oa = asarray(x, "int3"), asarray(y, "int3"), asarray(np.zeros((1, 8)), "int3")
    run(_elementwise_kernel("int3", ["add"], shape=(1, 8)), (1,), [xa, ya, oa])
    np.testing.assert_array_equal(oa.numpy(), (x + y + 4) % 8 - 4)


# ------------------------------------------------------------------------------------------------ casts
@pytest.mark.parametrize("dst", ["int3", "uint5", "f6e3m2", "f4e2m1", "i8", "bf16", "f16", "f8e5m2", "i1"])
def test_cast_bit_exact(dst):
    x = randn(f"cast{dst}", (8, 16), 6.0).astype(np.float32)
    x[0, :8] = [0.5, 1.5, 2.5, -2.5, 1e30, -1e30, np.inf, np.nan]       # ties, saturation, specials
    k = K(X=T("f32"), O=T(dst), B=T("f32"))
    v = k.load(k.X, (0, 0), (8, 16))
    c = k("cast", (v,), tl((8, 16), dst))
    k.store(k.O, (0, 0), c)
    k.store(k.B, (0, 0), k("cast", (c,), tl((8, 16), "f32")))          # and back
    o = asarray(np.ones((8, 16)), dst)
    back = poisoned((8, 16))
    run(k.done(), (1,), [x, o, back])
    np.testing.assert_array_equal(o.codes(), N.encode(x, dst), err_msg=f"{dst} seed {SEED}")
    np.testing.assert_array_equal(back, N.quantize(x, dst).astype(np.float32), err_msg=f"{dst} seed {SEED}")


def test_int_to_float_and_int_saturation_casts():
    a = np.array([[2**31 - 1, -2**31, 16777217, -300, 300, 5, -6, 0]], np.int32)
    k = K(A=T("i32"), F=T("f32"), N8=T("i8"), U=T("uint5"))
    v = k.load(k.A, (0, 0), (1, 8))
    k.store(k.F, (0, 0), k("cast", (v,), tl((1, 8), "f32")))
    k.store(k.N8, (0, 0), k("cast", (v,), tl((1, 8), "i8")))
    k.store(k.U, (0, 0), k("cast", (v,), tl((1, 8), "uint5")))
    f, n8, u = poisoned((1, 8)), poisoned((1, 8), np.int8), asarray(np.zeros((1, 8)), "uint5")
    run(k.done(), (1,), [a, f, n8, u])
    np.testing.assert_array_equal(f, a.astype(np.float32))
    np.testing.assert_array_equal(n8, np.clip(a, -128, 127))
    np.testing.assert_array_equal(u.numpy(), np.clip(a, 0, 31))


def test_bitcast():
    codes = rng("bitcast").integers(0, 256, (4, 8)).astype(np.uint8)
    k = K(A=T("u8"), O=T("int4"), F=T("f32", 1), G=T("i32", 1))
    v = k.load(k.A, (0, 0), (4, 8))
    k.store(k.O, (0, 0), k("bitcast", (v,), tl((4, 16), "int4")))
    s = k("load_scalar", [k.F, k.c(0)], S("f32"))
    k("store_scalar", [k.G, k.c(0), k("bitcast", (s,), S("i32"))])
    o = asarray(np.zeros((4, 16)), "int4")
    f = np.array([-1.75], np.float32)
    g = np.zeros(1, np.int32)
    run(k.done(), (1,), [codes, o, f, g])
    np.testing.assert_array_equal(o.codes().reshape(-1), N.unpack(codes.reshape(-1), 4, 64))
    assert g[0] == f.view(np.int32)[0]


# ------------------------------------------------------------------------------------------------ memory
def _copy_scale_kernel(BM, BN):
    k = K(X=T("f32"), O=T("f32"))
    bm, bn = k.bid(0), k.bid(1)
    i = k.arith("mul", bm, k.c(BM))
    j = k.arith("mul", bn, k.c(BN))
    v = k.load(k.X, (i, j), (BM, BN))
    k.store(k.O, (i, j), k.arith("add", v, v))
    return k.done()


def test_load_store_ragged_edges():
    M, N_ = 37, 53
    x = randn("ragged", (M, N_)).astype(np.float32)
    o = poisoned((M, N_))
    run(_copy_scale_kernel(16, 16), (cdiv(M, 16), cdiv(N_, 16)), [x, o])
    np.testing.assert_array_equal(o, 2 * x, err_msg=f"seed {SEED}")


def test_load_mask_other_and_negative_offsets():
    M, N_ = 10, 12
    x = randn("mask", (M, N_)).astype(np.float32)
    k = K(X=T("f32"), O=T("f32"), P=T("f32"))
    rows = k("arange", (), tl((8,), "i32"), start=0, end=8)
    cols = k("arange", (), tl((16,), "i32"), start=0, end=16)
    r2 = k("broadcast", (k("reshape", (rows,), tl((8, 1), "i32")),), tl((8, 16), "i32"))
    c2 = k("broadcast", (k("reshape", (cols,), tl((1, 16), "i32")),), tl((8, 16), "i32"))
    m = k("cmp", (c2, r2), tl((8, 16), "i1"), pred="ge")               # upper triangle incl. diagonal
    v = k.load(k.X, (-3, -2), (8, 16), mask=m, other=-7.5)             # tile starts above-left of X
    k.store(k.O, (0, 0), v)
    k.store(k.P, (4, 5), v, mask=m)                                    # masked store with ragged edges
    o = poisoned((8, 16))
    p = poisoned((M, N_))
    run(k.done(), (1,), [x, o, p])
    want = np.full((8, 16), -7.5, np.float32)
    for r in range(8):
        for c in range(16):
            xr, xc = r - 3, c - 2
            if c >= r and 0 <= xr < M and 0 <= xc < N_:
                want[r, c] = x[xr, xc]
    np.testing.assert_array_equal(o, want, err_msg=f"seed {SEED}")
    wp = np.full((M, N_), np.nan, np.float32)
    for r in range(8):
        for c in range(16):
            if c >= r and 4 + r < M and 5 + c < N_:
                wp[4 + r, 5 + c] = want[r, c]
    np.testing.assert_array_equal(p, wp)


def test_lower_rank_tile_addresses_trailing_dims():
    x = randn("rows", (3, 5, 20)).astype(np.float32)
    k = K(X=T("f32", 3), O=T("f32", 3))
    b = k.bid(0)
    row = k.load(k.X, (k.c(1), b, 4), (16,))                            # X[1, b, 4:20]
    k.store(k.O, (k.c(2), b, 0), row)
    o = poisoned((3, 5, 20))
    run(k.done(), (6,), [x, o])                                        # block 5 is outside: no-op
    want = np.full((3, 5, 20), np.nan, np.float32)
    want[2, :, :16] = x[1, :, 4:20]
    np.testing.assert_array_equal(o, want)


def test_gather_scatter_out_of_range_rows():
    M, C = 9, 12
    x = randn("gather", (M, C)).astype(np.float32)
    rows = np.array([3, -1, 8, 9, 0, 100, 4, 2], np.int32)
    k = K(X=T("f32"), R=T("i32", 1), O=T("f32"), Y=T("f32"))
    r = k.load(k.R, (0,), (8,))
    g = k("gather", (k.X, r, k.c(5)), tl((8, 8), "f32"), shape=[8, 8], other=3.0)   # cols 5..12: last ragged
    k.store(k.O, (0, 0), g)
    k("scatter", (k.Y, r, k.c(2), g))
    o, y = poisoned((8, 8)), poisoned((M, C))
    run(k.done(), (1,), [x, rows, o, y])
    want = np.full((8, 8), 3.0, np.float32)
    for i, rr in enumerate(rows):
        for c in range(8):
            if 0 <= rr < M and 5 + c < C:
                want[i, c] = x[rr, 5 + c]
    np.testing.assert_array_equal(o, want)
    wy = np.full((M, C), np.nan, np.float32)
    for i, rr in enumerate(rows):
        if 0 <= rr < M:
            wy[rr, 2:10] = want[i]
    np.testing.assert_array_equal(y, wy)


@pytest.mark.parametrize("kind", ["add", "max", "min"])
def test_atomics_across_blocks(kind):
    nb, W = 7, 24
    x = randn(f"atomic{kind}", (nb, W)).astype(np.float32)
    k = K(X=T("f32"), O=T("f32", 1))
    b = k.bid(0)
    v = k.load(k.X, (b, 0), (32,))                                     # lower rank, ragged (24 < 32)
    cols = k("arange", (), tl((32,), "i32"), start=0, end=32)
    m = k("cmp", (cols, k("splat", (k.c(20),), tl((32,), "i32"))), tl((32,), "i1"), pred="lt")
    k("atomic", (k.O, k.c(0), v, m), kind=kind)
    init = randn("atomicinit", (W,)).astype(np.float32)
    o = init.copy()
    run(k.done(), (nb,), [x, o])
    red = {"add": np.sum, "max": np.max, "min": np.min}[kind]
    want = init.astype(np.float64).copy()
    want[:20] = red(np.concatenate([init[None, :20], x[:, :20]]).astype(np.float64), axis=0)
    np.testing.assert_allclose(o, want, rtol=1e-6, atol=1e-6, err_msg=f"seed {SEED}")


def test_atomic_add_int_wraps():
    k = K(O=T("i8", 1))
    k("atomic", (k.O, k.c(0), k("full", (), tl((4,), "i8"), value=100)), kind="add")
    o = np.array([100, 0, -100, 27], np.int8)
    run(k.done(), (2,), [o])
    np.testing.assert_array_equal(o, (np.array([100, 0, -100, 27]) + 200).astype(np.int8))


# ------------------------------------------------------------------------------------------------ reductions
@pytest.mark.parametrize("kind", ["sum", "max", "min", "prod", "argmax", "argmin"])
@pytest.mark.parametrize("axis", [0, 1])
def test_float_reductions(kind, axis):
    x = randn(f"red{kind}{axis}", (16, 24), 1.0).astype(np.float32)
    if kind == "prod":
        x = (1 + 0.05 * x).astype(np.float32)
    k = K(X=T("f32"), O=T("i32" if kind.startswith("arg") else "f32", 1))
    v = k.load(k.X, (0, 0), (16, 24))
    n = 24 if axis == 0 else 16
    r = k("reduce", (v,), tl((n,), "i32" if kind.startswith("arg") else "f32"), kind=kind, axis=axis)
    k.store(k.O, (0,), r)
    o = poisoned((n,), np.int32 if kind.startswith("arg") else np.float32)
    run(k.done(), (1,), [x, o])
    x64 = x.astype(np.float64)
    want = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod, "argmax": np.argmax,
            "argmin": np.argmin}[kind](x64, axis=axis)
    if kind.startswith("arg"):
        np.testing.assert_array_equal(o, want)
    elif kind == "sum":
        np.testing.assert_allclose(o, want, atol=1e-5 * np.abs(x64).sum(axis=axis).max(), rtol=0)
    else:
        np.testing.assert_allclose(o, want, rtol=1e-5, err_msg=f"seed {SEED}")


def test_reduce_to_scalar_and_int_kinds():
    a = rng("redint").integers(-1000, 1000, (32,)).astype(np.int32)
    k = K(A=T("i32", 1), O=T("i32", 1))
    v = k.load(k.A, (0,), (32,))
    for i, kind in enumerate(["sum", "and", "or", "xor", "max", "argmin"]):
        s = k("reduce", (v,), S("i32"), kind=kind, axis=0)
        k("store_scalar", [k.O, k.c(i), s])
    o = poisoned((6,), np.int32)
    run(k.done(), (1,), [a, o])
    want = [a.sum(), np.bitwise_and.reduce(a), np.bitwise_or.reduce(a), np.bitwise_xor.reduce(a), a.max(), a.argmin()]
    np.testing.assert_array_equal(o, want)


def test_bf16_sum_rounds_once():
    x = randn("bf16sum", (4, 64)).astype(md.bfloat16)
    k = K(X=T("bf16"), O=T("bf16", 1))
    v = k.load(k.X, (0, 0), (4, 64))
    k.store(k.O, (0,), k("reduce", (v,), tl((4,), "bf16"), kind="sum", axis=1))
    o = np.full(4, np.nan, md.bfloat16)
    run(k.done(), (1,), [x, o])
    want = N.quantize(x.astype(np.float64).sum(axis=1), "bf16")
    np.testing.assert_allclose(o.astype(np.float64), want, rtol=2 ** -7, err_msg=f"seed {SEED}")


# ------------------------------------------------------------------------------------------------ dot
def _matmul_kernel(in_dt, acc_dt, BM, BN, BK, out_dt=None):
    k = K(A=T(in_dt), B=T(in_dt), C=T(out_dt or acc_dt))
    bm, bn = k.bid(0), k.bid(1)
    i, j = k.arith("mul", bm, k.c(BM)), k.arith("mul", bn, k.c(BN))
    K_ = k("dim", (k.A,), S("i32"), axis=1)
    acc0 = k("full", (), tl((BM, BN), acc_dt), value=0)
    body = Block([S("i32"), tl((BM, BN), acc_dt)], ["kk", "acc"])
    with k.b.at(body):
        kk, acc = body.args
        a = k.load(k.A, (i, kk), (BM, BK))
        b = k.load(k.B, (kk, j), (BK, BN))
        k("yield", (k("dot", (a, b, acc), tl((BM, BN), acc_dt)),))
    res = k.b.create("for", [k.c(0), K_, k.c(BK), acc0], [acc0.type], {"stages": 2}, [body]).results[0]
    if out_dt and out_dt != acc_dt:
        res = k("cast", (res,), tl((BM, BN), out_dt))
    k.store(k.C, (i, j), res)
    return k.done()


def test_dot_bf16_f32_accumulate():
    M, Kd, N_ = 100, 150, 70                                            # ragged in every dim
    a = randn("dota", (M, Kd)).astype(md.bfloat16)
    b = randn("dotb", (Kd, N_)).astype(md.bfloat16)
    c = poisoned((M, N_))
    run(_matmul_kernel("bf16", "f32", 64, 64, 32), (cdiv(M, 64), cdiv(N_, 64)), [a, b, c])
    want = a.astype(np.float64) @ b.astype(np.float64)
    err = np.abs(c - want).max() / np.abs(want).max()
    assert err < 1e-5, f"relative error {err} (seed {SEED})"


def test_dot_64_cube_speed_path_and_bf16_output():
    a = randn("d64a", (64, 64)).astype(md.bfloat16)
    b = randn("d64b", (64, 64)).astype(md.bfloat16)
    c = np.full((64, 64), np.nan, md.bfloat16)
    run(_matmul_kernel("bf16", "f32", 64, 64, 64, out_dt="bf16"), (1, 1), [a, b, c])
    want = N.quantize(a.astype(np.float64) @ b.astype(np.float64), "bf16")
    np.testing.assert_allclose(c.astype(np.float64), want, rtol=2 ** -7, atol=1e-6)


def test_dot_int8_i32_exact():
    r = rng("dotint")
    a = r.integers(-128, 128, (32, 48)).astype(np.int8)
    b = r.integers(-128, 128, (48, 16)).astype(np.int8)
    c = poisoned((32, 16), np.int32)
    run(_matmul_kernel("i8", "i32", 32, 16, 16), (1, 1), [a, b, c])
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


# ------------------------------------------------------------------------------------------------ control flow
def test_for_if_while():
    # for i in range(1, n, 3): acc += i if i % 2 == 0 else -i;  then x = acc*acc + 1;
    # while x < 1000: x = x * 3 + 1 (counting the steps)
    k = K(O=T("i32", 1), n=S("i32"))
    body = Block([S("i32"), S("i32")], ["i", "acc"])
    with k.b.at(body):
        i, acc = body.args
        even = k("cmp", (k.arith("rem", i, k.c(2)), k.c(0)), S("i1"), pred="eq")
        then, els = Block(), Block()
        with k.b.at(then):
            k("yield", (k.arith("add", acc, i),))
        with k.b.at(els):
            k("yield", (k.arith("sub", acc, i),))
        r = k.b.create("if", [even], [S("i32")], {}, [then, els]).results[0]
        k("yield", (r,))
    s = k.b.create("for", [k.c(1), k.n, k.c(3), k.c(0)], [S("i32")], {}, [body]).results[0]
    k("store_scalar", [k.O, k.c(0), s])
    before, after = Block([S("i32"), S("i32")], ["x", "cnt"]), Block([S("i32"), S("i32")], ["x", "cnt"])
    with k.b.at(before):
        x, cnt = before.args
        k("condition", (k("cmp", (x, k.c(1000)), S("i1"), pred="lt"), x, cnt))
    with k.b.at(after):
        x, cnt = after.args
        k("yield", (k.arith("add", k.arith("mul", x, k.c(3)), k.c(1)), k.arith("add", cnt, k.c(1))))
    w = k.b.create("while", [k.arith("add", k.arith("mul", s, s), k.c(1)), k.c(0)], [S("i32"), S("i32")], {},
                   [before, after])
    k("store_scalar", [k.O, k.c(1), w.results[0]])
    k("store_scalar", [k.O, k.c(2), w.results[1]])
    f = k.done()
    for n in (1, 2, 29, 100):
        o = poisoned((3,), np.int32)
        run(f, (1,), [o, n])
        acc = sum(i if i % 2 == 0 else -i for i in range(1, n, 3))
        x, cnt = acc * acc + 1, 0
        while x < 1000:
            x, cnt = 3 * x + 1, cnt + 1
        assert o.tolist() == [acc, x, cnt], n


# ------------------------------------------------------------------------------------------------ shared memory
def test_shared_ring_buffer_async_copy():
    M, N_ = 40, 16
    x = randn("shared", (M, N_)).astype(np.float32)
    k = K(X=T("f32"), O=T("f32"), P=T("f32"))
    buf = k("alloc_shared", (), tl((2, 16, 16), "f32", "shared"))
    k.store(k.P, (0, 0), k("shared_load", (k("subview", (buf, k.c(1)), tl((16, 16), "f32", "shared")),),
                                tl((16, 16), "f32")))                  # poison: never zeros
    body = Block([S("i32")], ["r"])
    with k.b.at(body):
        (r,) = body.args
        stage = k.arith("rem", k.arith("div", r, k.c(16)), k.c(2))
        sv = k("subview", (buf, stage), tl((16, 16), "f32", "shared"))
        k("async_copy", (sv, k.X, r, k.c(0)))
        k("async_commit")
        k("async_wait", pending=0)
        k("barrier")
        t = k("shared_load", (sv,), tl((16, 16), "f32"))
        k("shared_store", (sv, k.arith("mul", t, t)))
        k("barrier")
        k.store(k.O, (r, k.c(0)), k("shared_load", (sv,), tl((16, 16), "f32")))
        k("yield")
    k.b.create("for", [k.c(0), k("dim", (k.X,), S("i32"), axis=0), k.c(16)], [], {}, [body])
    o, p = poisoned((M, N_)), np.zeros((16, 16), np.float32)
    run(k.done(), (1,), [x, o, p])
    np.testing.assert_array_equal(o, x * x)
    assert np.isnan(p).all()


# ------------------------------------------------------------------------------------------------ misc ops
def test_shape_ops_select_and_scalars():
    x = randn("shape", (4, 8)).astype(np.float32)
    k = K(X=T("f32"), O=T("f32"), Q=T("f32"), s=S("f32"))
    v = k.load(k.X, (0, 0), (4, 8))
    t = k("transpose", (v,), tl((8, 4), "f32"), perm=[1, 0])
    sl = k("slice", (t,), tl((4, 4), "f32"), start=[2, 0], size=[4, 4])
    cat = k("concat", (sl, sl), tl((8, 4), "f32"), axis=0)
    rs = k("reshape", (cat,), tl((4, 8), "f32"))
    sp = k("splat", (k.s,), tl((4, 8), "f32"))
    pos = k("cmp", (rs, k("full", (), tl((4, 8), "f32"), value=0.0)), tl((4, 8), "i1"), pred="gt")
    k.store(k.O, (0, 0), k("select", (pos, rs, sp), rs.type))
    k.store(k.Q, (0, 0), k("convert_layout", (v,), tl((4, 8), "f32", layout=tv_blocked((4, 8), (4, 8), (1, 1)))))   # layouts are ignored
    o, q = poisoned((4, 8)), poisoned((4, 8))
    run(k.done(), (1,), [x, o, q, 2.5])
    sl_ = x.T[2:6]
    rs_ = np.concatenate([sl_, sl_]).reshape(4, 8)
    np.testing.assert_array_equal(o, np.where(rs_ > 0, rs_, np.float32(2.5)))
    np.testing.assert_array_equal(q, x)


def test_dim_stride_num_blocks_and_noncontiguous_input():
    base = randn("strided", (6, 10)).astype(np.float32)
    x = base.T                                                         # (10, 6), strides (1, 10)
    k = K(X=T("f32"), O=T("i32", 1), Y=T("f32"))
    vals = [k("dim", (k.X,), S("i32"), axis=0), k("dim", (k.X,), S("i32"), axis=1),
            k("stride", (k.X,), S("i32"), axis=0), k("stride", (k.X,), S("i32"), axis=1),
            k("num_blocks", (), S("i32"), axis=0), k("num_blocks", (), S("i32"), axis=1)]
    for i, v in enumerate(vals):
        k("store_scalar", [k.O, k.c(i), v])
    k.store(k.Y, (0, 0), k.load(k.X, (0, 0), (16, 8)))
    o, y = poisoned((6,), np.int32), poisoned((10, 6))
    run(k.done(), (3, 2), [x, o, y])
    assert o.tolist() == [10, 6, 1, 10, 3, 2]
    np.testing.assert_array_equal(y, x)


def test_scalar_parameters_and_print():
    k = K(O=T("f32", 1), a=S("f32"), n=S("i32"), flag=S("i1"))
    k("print", (k.n, k.a), fmt="n={} a={}")
    s = k.arith("mul", k.a, k("cast", (k.n,), S("f32")))
    then, els = Block(), Block()
    with k.b.at(then):
        k("yield", (s,))
    with k.b.at(els):
        k("yield", (k("neg", (s,), S("f32")),))
    r = k.b.create("if", [k.flag], [S("f32")], {}, [then, els]).results[0]
    k("store_scalar", [k.O, k.bid(0), r])
    out = io.StringIO()
    o = poisoned((2,))
    I.Interpreter(k.done(), (2,), [o, 1.5, 3, True], out=out).run()
    assert o.tolist() == [4.5, 4.5]
    assert out.getvalue().splitlines() == ["[block (0, 0, 0)] n=3 a=1.5", "[block (1, 0, 0)] n=3 a=1.5"]
    with pytest.raises(ValueError):
        run(k.f, (1,), [o, 1.0, 2**40, True])
    with pytest.raises(TypeError):
        run(k.f, (1,), [o.astype(np.float64), 1.0, 1, True])
    with pytest.raises(TypeError):
        run(k.f, (1,), [o, 1.0, 1.5, True])


def test_ml_dtypes_output_written_in_place():
    x = randn("mlout", (8,)).astype(md.float8_e4m3fn)
    k = K(X=T("f8e4m3fn", 1), O=T("f8e4m3fn", 1))
    v = k.load(k.X, (0,), (8,))
    k.store(k.O, (0,), k.arith("add", v, v))
    o = np.full(8, np.nan, md.float8_e4m3fn)
    run(k.done(), (1,), [x, o])
    want = N.encode(N.quantize(x.astype(np.float64) * 2, "f8e4m3fn"), "f8e4m3fn")
    np.testing.assert_array_equal(o.view(np.uint8), want)


# ------------------------------------------------------------------------------------------------ errors
def test_load_scalar_out_of_range_names_op_and_line():
    k = K(X=T("f32"), O=T("f32", 1))
    i = k.bid(0)
    k.b.loc = Loc(HERE, 7, 13)
    v = k("load_scalar", [k.X, i, k.c(0)], S("f32"))
    k.b.loc = Loc(HERE, 1, 1)
    k("store_scalar", [k.O, i, v])
    x = randn("oob", (3, 2)).astype(np.float32)
    o = poisoned((4,))
    with pytest.raises(InterpreterError) as e:
        run(k.done(), (4,), [x, o])
    msg = str(e.value)
    assert "load_scalar" in msg and f"{HERE}:7:13" in msg and "(3, 0)" in msg and "block (3, 0, 0)" in msg
    assert e.value.op.name == "load_scalar" and e.value.block == (3, 0, 0)
    assert np.isnan(o).all()                                  # a failed launch writes nothing back


def test_store_scalar_out_of_range_and_wrapped_errors():
    k = K(O=T("i32", 1))
    k("store_scalar", [k.O, k.c(-1), k.c(5)])
    with pytest.raises(InterpreterError, match="store_scalar"):
        run(k.done(), (1,), [np.zeros(3, np.int32)])
    # a failure inside a rule (here a stage index out of range) names the op and its location
    k = K(O=T("f32"))
    k.b.loc = Loc("kern.py", 12, 3)
    buf = k("alloc_shared", (), tl((2, 4, 4), "f32", "shared"))
    sv = k("subview", (buf, k.c(2)), tl((4, 4), "f32", "shared"))
    k.store(k.O, (0, 0), k("shared_load", (sv,), tl((4, 4), "f32")))
    with pytest.raises(InterpreterError, match=r"kern\.py:12:3: op 'subview'"):
        run(k.done(), (1,), [np.zeros((4, 4), np.float32)])
    # an op without a rule
    k = K(O=T("f32"))
    k.b.check = False
    k.f.body.append(__import__("tile.ir.core", fromlist=["Operation"]).Operation("mystery", [], [], {}, (),
                                                                                  Loc("kern.py", 3, 1)))
    with pytest.raises(InterpreterError, match="mystery"):
        run(k.f, (1,), [np.zeros((4, 4), np.float32)])


# ------------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("dt", ["bf16", "f16", "f8e4m3fn", "f6e2m3"])
def test_round_float_matches_numerics(dt):
    bits = rng(f"rf{dt}").integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x, np.float32([np.inf, -np.inf, np.nan, -0.0, 3.3895314e38, 1e-45])])
    got = I.round_float(x, D.dtype(dt))
    want = N.quantize(x, dt)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{dt}: {x[~same][:4]} -> {got[~same][:4]} vs {want[~same][:4]} (seed {SEED})"
    assert I.round_float(x[0], D.dtype(dt)).shape == ()


def test_f16_from_float64_rounds_once():
    x = rng("f16f64").standard_normal(20000) * 1e3
    x = np.concatenate([x, rng("f16tiny").standard_normal(2000) * 1e-6, [65520.0, 65519.99, -1e9]])
    got = I.round_float(x, D.f16)
    np.testing.assert_array_equal(got, N.quantize(x, "f16").astype(np.float32), err_msg=f"seed {SEED}")


def test_parsed_ir_runs_the_same():
    from tile.ir.core import Module
    from tile.ir.parser import parse_module
    f = _matmul_kernel("bf16", "f32", 32, 32, 16)
    g = parse_module(str(Module([f]))).functions[0]
    a = randn("parsa", (50, 40)).astype(md.bfloat16)
    b = randn("parsb", (40, 30)).astype(md.bfloat16)
    c1, c2 = poisoned((50, 30)), poisoned((50, 30))
    run(f, (2, 1), [a, b, c1])
    run(g, (2, 1), [a, b, c2])
    np.testing.assert_array_equal(c1, c2)
    assert not np.isnan(c1).any()
