"""Shared by tests/test_math_gpu.py (GPU vs interpreter vs float64 NumPy) and tests/test_math_ptx.py
(the same kernels built to PTX and assembled; the interpreter half of the harness on CPU): the
elementwise-math kernels, the inputs (special values + log-uniform random values of every magnitude,
both signs), the float64 references and THE ulp bounds (docs/language.md states the same table)."""
from __future__ import annotations

import math

import numpy as np

import tile

UNARY = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
         "ceil", "abs", "neg")   # `round` has no DSL spelling yet (IR only)
BINARY = ("div", "rem", "pow", "atan2", "max", "min")
TYPES = ("f32", "f16", "bf16")
F64_OPS = ("sqrt", "rsqrt", "floor", "ceil", "abs", "neg", "div", "max", "min")   # computed in f64

# Max error in ulps of the OUTPUT type vs the exact (float64 NumPy) result, over all finite results.
# 0.5 = correctly rounded. f16/bf16 are computed in f32 and rounded once (<= 1 ulp for the
# transcendentals, 0.5 for the correctly rounded f32 ops: f32 has >= 2p+2 bits, so no double rounding).
_F32 = {"exp": 6, "exp2": 5, "log": 3, "log2": 4, "sqrt": 0.5, "rsqrt": 1.5, "sin": 3, "cos": 3, "tanh": 7,
        "erf": 8, "sigmoid": 8, "floor": 0, "ceil": 0, "round": 0, "abs": 0, "neg": 0, "div": 0.5, "rem": 0,
        "pow": 8, "atan2": 4, "max": 0, "min": 0}
_NARROW = {op: (1 if u > 0.5 else u) for op, u in _F32.items()}
ULP = {"f32": _F32, "f16": _NARROW, "bf16": _NARROW,
       "f64": {"sqrt": 0.5, "rsqrt": 1.5, "floor": 0, "ceil": 0, "abs": 0, "neg": 0, "div": 0.5, "max": 0, "min": 0}}

BLOCK = 256


# ---------------------------------------------------------------- kernels (one per arity; OP folds)
@tile.kernel
def unary_kernel(X, Y, N: int, OP: tile.constexpr, BLOCK: tile.constexpr = BLOCK):
    i = tile.block_id(0) * BLOCK + tile.arange(0, BLOCK)
    m = i < N
    x = tile.load(X, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    if OP == "exp":
        y = tile.exp(x)
    elif OP == "exp2":
        y = tile.exp2(x)
    elif OP == "log":
        y = tile.log(x)
    elif OP == "log2":
        y = tile.log2(x)
    elif OP == "sqrt":
        y = tile.sqrt(x)
    elif OP == "rsqrt":
        y = tile.rsqrt(x)
    elif OP == "sin":
        y = tile.sin(x)
    elif OP == "cos":
        y = tile.cos(x)
    elif OP == "tanh":
        y = tile.tanh(x)
    elif OP == "erf":
        y = tile.erf(x)
    elif OP == "sigmoid":
        y = tile.sigmoid(x)
    elif OP == "floor":
        y = tile.floor(x)
    elif OP == "ceil":
        y = tile.ceil(x)
    elif OP == "abs":
        y = abs(x)
    else:
        y = -x
    tile.store(Y, (tile.block_id(0) * BLOCK,), y, mask=m)


@tile.kernel
def binary_kernel(X, Z, Y, N: int, OP: tile.constexpr, BLOCK: tile.constexpr = BLOCK):
    i = tile.block_id(0) * BLOCK + tile.arange(0, BLOCK)
    m = i < N
    x = tile.load(X, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    z = tile.load(Z, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    if OP == "div":
        y = x / z
    elif OP == "rem":
        y = x % z
    elif OP == "pow":
        y = tile.pow(x, z)
    elif OP == "atan2":
        y = tile.atan2(x, z)
    elif OP == "max":
        y = tile.maximum(x, z)
    else:
        y = tile.minimum(x, z)
    tile.store(Y, (tile.block_id(0) * BLOCK,), y, mask=m)


@tile.kernel
def cast_kernel(X, Y, N: int, DT: tile.constexpr, BLOCK: tile.constexpr = BLOCK):
    i = tile.block_id(0) * BLOCK + tile.arange(0, BLOCK)
    x = tile.load(X, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=i < N)
    tile.store(Y, (tile.block_id(0) * BLOCK,), x.astype(DT), mask=i < N)


@tile.kernel
def softmax_kernel(X, L, Y, NCOL: int, BLOCK: tile.constexpr):
    row = tile.block_id(0)
    n = tile.load_scalar(L, row)
    cols = tile.arange(0, BLOCK)
    x = tile.load(X, (row, 0), (BLOCK,), mask=cols < n, other=float("-inf"))
    e = tile.exp(x - tile.max(x))
    tile.store(Y, (row, 0), e / tile.sum(e), mask=cols < NCOL)


# ---------------------------------------------------------------- inputs
def finfo(dt: str):
    """(largest finite, smallest normal, smallest subnormal, mantissa bits) of a float type."""
    return {"f32": (3.4028234663852886e38, 2.0 ** -126, 2.0 ** -149, 23),
            "f16": (65504.0, 2.0 ** -14, 2.0 ** -24, 10),
            "bf16": (3.3895313892515355e38, 2.0 ** -126, 2.0 ** -133, 7),
            "f64": (1.7976931348623157e308, 2.0 ** -1022, 5e-324, 52)}[dt]


def specials(dt: str) -> np.ndarray:
    big, tiny, sub, _ = finfo(dt)
    v = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, big, -big,
         tiny, -tiny, sub, -sub, 3 * sub, -5 * sub, tiny / 2, 88.72, 88.73, -87.3, -103.97, -104.0, 89.0, -89.0,
         709.0, -746.0, 128.0, -150.0, 11.0, -17.0, 1e4, 105614.0, 105616.0, 1e5 * math.pi, 1e30, -1e30,
         3.0e38, math.pi, -math.pi / 2, 0.4, 0.5, -0.49, 1.0 + 2.0 ** -10]
    return round_to(np.array(v, np.float64), dt)


def round_to(x, dt: str) -> np.ndarray:
    """float64 -> the nearest value of dt (one rounding; as float64); out of range -> inf."""
    from tile.ir.dtypes import dtype
    from tile.runtime.interpreter import round_float
    with np.errstate(all="ignore"):
        return np.asarray(round_float(np.asarray(x, np.float64), dtype(dt)), np.float64)


def inputs(dt: str, n: int, rng, op=None) -> np.ndarray:
    """The special values, then n random values log-uniform over the type's whole range, both signs
    (for exp-like ops half of them also log-uniform over where the result is not 0/1/inf)."""
    big, _, sub, _ = finfo(dt)
    mag = np.exp(rng.uniform(math.log(sub), math.log(big), n))
    if op in ("exp", "exp2", "sigmoid", "tanh", "erf", "sin", "cos"):
        mag[: n // 2] = np.exp(rng.uniform(math.log(1e-4), math.log(128.0), n // 2))
    x = mag * rng.choice([-1.0, 1.0], n)
    return np.concatenate([specials(dt), round_to(x, dt)])


def pair_inputs(dt: str, n: int, rng, op=None):
    """All pairs of special values, then random pairs (pow: bases near 1 and moderate exponents too)."""
    s = specials(dt)
    a, b = np.repeat(s, len(s)), np.tile(s, len(s))
    x, y = inputs(dt, n, rng)[len(s):], inputs(dt, n, rng)[len(s):]
    if op == "pow":
        x[: n // 2] = round_to(np.exp(rng.uniform(-3, 3, n // 2)) * rng.choice([-1.0, 1.0], n // 2), dt)
        y[: n // 2] = round_to(rng.uniform(-40, 40, n // 2) * np.where(rng.random(n // 2) < 0.3, 1, 0.1), dt)
        y[: n // 8] = np.round(y[: n // 8])
    return np.concatenate([a, x]), np.concatenate([b, y])


# ---------------------------------------------------------------- references
def _erf(x):
    return np.array([math.erf(v) if not math.isnan(v) else v for v in np.ravel(x)]).reshape(np.shape(x))


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _max(a, b):
    """IEEE 754-2019 maximumNumber: -0 < +0, so max(-0, -0) = -0 and max(-0, +0) = +0."""
    r = np.fmax(a, b)
    z = (a == b) & (r == 0)
    return np.where(z, np.where(np.signbit(a) & np.signbit(b), -0.0, 0.0), r)


def _min(a, b):
    r = np.fmin(a, b)
    z = (a == b) & (r == 0)
    return np.where(z, np.where(np.signbit(a) | np.signbit(b), -0.0, 0.0), r)


REF = {"exp": np.exp, "exp2": np.exp2, "log": np.log, "log2": np.log2, "sqrt": np.sqrt,
       "rsqrt": lambda x: 1 / np.sqrt(x), "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "erf": _erf,
       "sigmoid": _sigmoid, "floor": np.floor, "ceil": np.ceil, "round": np.rint, "abs": np.abs,
       "neg": np.negative, "div": np.divide, "rem": np.fmod, "pow": np.power, "atan2": np.arctan2,
       "max": _max, "min": _min}


def reference(op, dt, *args) -> np.ndarray:
    """float64 NumPy on the (exact) inputs: the exact result to ~1e-16 relative."""
    with np.errstate(all="ignore"):
        return np.asarray(REF[op](*[np.asarray(a, np.float64) for a in args]), np.float64)


# ---------------------------------------------------------------- checks
def ulp_error(got, ref, dt: str) -> np.ndarray:
    """|got - ref| in ulps of dt at ref (subnormal spacing below the normal range); an infinity on one
    side only counts as the largest finite value + 1 ulp, so a result within the bound of the overflow
    threshold may round either way. Both NaN or both the same infinity: 0."""
    big, tiny, sub, p = finfo(dt)
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    top = big + 2.0 ** (math.floor(math.log2(big)) - p)
    with np.errstate(invalid="ignore"):
        g = np.where(np.isinf(got), np.sign(got) * top, got)
        r = np.where(np.isinf(ref), np.sign(ref) * top, np.clip(ref, -top, top))
    a = np.maximum(np.abs(r), tiny)
    with np.errstate(all="ignore"):
        ulp = 2.0 ** (np.floor(np.log2(a)) - p)
        e = np.abs(g - r) / ulp
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    return np.where(same, 0.0, np.where(np.isnan(e), np.inf, e))


def check(op, dt, got, ref, what="result", args=()):
    """NaN positions exact, infinities exact (up to the bound at the overflow threshold), signs of zero
    exact, finite results within ULP[dt][op] of the float64 reference."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    bound = ULP[dt][op]
    rr = round_to(ref, dt)
    where = lambda bad: "; ".join(f"{op}({', '.join(repr(float(a[i])) for a in args)}) = {got[i]!r}, "
                                  f"exact {ref[i]!r}" for i in np.flatnonzero(bad)[:6])
    nan = np.isnan(got) != np.isnan(rr)
    assert not nan.any(), f"{dt} {op} {what}: NaN where the reference has none or vice versa: {where(nan)}"
    err = ulp_error(got, ref, dt)
    bad = err > bound
    assert not bad.any(), (f"{dt} {op} {what}: {int(bad.sum())} results beyond {bound} ulp "
                           f"(max {err[np.isfinite(err)].max() if np.isfinite(err).any() else err.max()}): "
                           f"{where(bad)}")
    z = (got == 0) & (rr == 0) & (np.signbit(got) != np.signbit(rr))
    assert not z.any(), f"{dt} {op} {what}: wrong sign of zero: {where(z)}"
    return float(err.max()) if len(err) else 0.0


# ---------------------------------------------------------------- running
def to_device_array(x, dt: str):
    """float64 values (exact in dt) as a launch argument of dtype dt (tile.Array for bf16)."""
    if dt == "bf16":
        return tile.asarray(np.asarray(x, np.float32), "bf16")
    return np.asarray(x, {"f32": np.float32, "f16": np.float16, "f64": np.float64}[dt])


def values(a) -> np.ndarray:
    return np.asarray(np.asarray(a), np.float64)


def poisoned(n, dt):
    return to_device_array(np.full(n, np.nan), dt)


def run_op(op, dt, args):
    """Run the op's kernel on float64 inputs (exact in dt) under the current target; return the output
    as float64 after checking every element was written (the output starts as NaN: where an input
    has no NaN and the reference isn't NaN the output must not be NaN -- `check` does that)."""
    n = len(args[0])
    ins = [to_device_array(a, dt) for a in args]
    out = poisoned(n, dt)
    grid = (tile.cdiv(n, BLOCK),)
    if op in UNARY:
        unary_kernel[grid](ins[0], out, n, OP=op)
    else:
        binary_kernel[grid](ins[0], ins[1], out, n, OP=op)
    return values(out)


def compile_op(op, dt, target):
    T = tile.Tensor[tile.dtype(dt), 1]
    if op in UNARY:
        return unary_kernel.compile(T, T, int, target=target, OP=op)
    return binary_kernel.compile(T, T, T, int, target=target, OP=op)


def cases():
    for dt in TYPES + ("f64",):
        for op in UNARY + BINARY:
            if op in ULP[dt]:
                yield op, dt


CAST_TYPES = ("f32", "f16", "bf16", "f8e4m3fn", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1", "int4", "uint4", "int8")


def cast_inputs(src: str) -> np.ndarray:
    """Every code of a type of <= 8 bits; for wider floats the specials + values around every small
    type's range, halfway points and overflow thresholds."""
    from tile.ir.dtypes import dtype
    d = dtype(src)
    if d.bits <= 8:
        return None
    v = list(specials(src))
    for m in (0.5, 1.0, 1.5, 1.75, 1.125, 1.0625, 1.25, 1.375, 0.75):
        for e in range(-20, 20):
            v += [m * 2.0 ** e, -m * 2.0 ** e]
    v += [448.0, 464.0, 480.0, 57344.0, 61440.0, 7.5, 8.0, 28.0, 6.0, 6.5, 7.0, 15.5, 16.0, -8.5, 127.5, 128.5]
    return round_to(np.array(v), src)


# ---------------------------------------------------------------- exp2(x, ftz=True) and fma: attention's softmax ops
@tile.kernel
def fused_kernel(X, Z, W, E, F, N: int, BLOCK: tile.constexpr = BLOCK):
    i = tile.block_id(0) * BLOCK + tile.arange(0, BLOCK)
    m = i < N
    x = tile.load(X, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    z = tile.load(Z, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    w = tile.load(W, (tile.block_id(0) * BLOCK,), (BLOCK,), mask=m)
    tile.store(E, (tile.block_id(0) * BLOCK,), tile.exp2(x, ftz=True), mask=m)
    tile.store(F, (tile.block_id(0) * BLOCK,), tile.fma(x, z, w), mask=m)


FUSED_TYPES = ("f32", "bf16")


def fused_inputs(dt: str, n: int, rng):
    """(x, z, w): the special pairs with w a special or -round(x * z) (there fma and mul + add differ
    the most: the product's rounding error is all that is left), then random triples of every
    magnitude with w = -round(x * z) * (1 + tiny) for half of them; exp2 also gets x around -126,
    where ftz starts."""
    s = specials(dt)
    a, b = np.repeat(s, len(s)), np.tile(s, len(s))
    with np.errstate(all="ignore"):
        c = np.where(np.arange(a.size) % 2 == 0, -round_to(a * b, dt), np.tile(s, len(s) + 1)[: a.size][::-1])
    x, z, w = (inputs(dt, n, rng)[len(s):] for _ in range(3))
    with np.errstate(all="ignore"):
        near = -round_to(x * z * (1 + rng.standard_normal(n) * 2.0 ** -20), dt)
    w = np.where(rng.random(n) < 0.5, near, w)
    x[: n // 8] = round_to(rng.uniform(-130.0, -120.0, n // 8), dt)
    return np.concatenate([a, x]), np.concatenate([b, z]), np.concatenate([c, w])


def run_fused(dt, args):
    n = len(args[0])
    ins = [to_device_array(a, dt) for a in args]
    e, f = poisoned(n, dt), poisoned(n, dt)
    fused_kernel[(tile.cdiv(n, BLOCK),)](*ins, e, f, n)
    return values(e), values(f)


def fma_reference(x, z, w, dt: str) -> np.ndarray:
    """x * z + w exact (rationals), rounded once to f32 (nearest, ties to even; by looking at the
    float32 neighbours of the float64 rounding), then to dt."""
    from fractions import Fraction
    out = np.empty(len(x))
    for i, (a, b, c) in enumerate(zip(x, z, w)):
        if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
            with np.errstate(all="ignore"):
                out[i] = a * b + c
            continue
        r = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        if r == 0:
            out[i] = (a * b) + c                        # an exact zero: IEEE's sign rule (x*z and w exact)
            continue
        with np.errstate(over="ignore"):
            v = np.float32(float(r))
        if not np.isfinite(v):
            out[i] = float(v)
            continue
        cands = [np.nextafter(v, np.float32(-np.inf)), v, np.nextafter(v, np.float32(np.inf))]
        best = min(cands, key=lambda u: (abs(Fraction(float(u)) - r) if np.isfinite(u) else Fraction(10 ** 40),
                                         int(np.float32(u).view(np.uint32)) & 1))
        out[i] = float(best)
    return round_to(out, dt)


def check_fused(dt, args, e, f, what):
    """fma: bit for bit the correctly rounded result (NaN positions, zero signs); exp2 with ftz: +0
    where 2^x is below 2^-126 (either +0 or the exp2 bound right at it), else exp2's ulp bound."""
    x, z, w = args
    ref = fma_reference(x, z, w, dt)
    same = (f == ref) & (np.signbit(f) == np.signbit(ref)) | (np.isnan(f) & np.isnan(ref))
    assert same.all(), (f"{dt} fma {what}: " + "; ".join(f"fma({x[i]!r}, {z[i]!r}, {w[i]!r}) = {f[i]!r}, exact "
                                                          f"{ref[i]!r}" for i in np.flatnonzero(~same)[:6]))
    with np.errstate(all="ignore"):
        r = np.exp2(x)
    tiny = 2.0 ** -126
    low, high = r < tiny * (1 - 2.0 ** -19), r > tiny * (1 + 2.0 ** -19)
    assert (e[low] == 0).all() and not np.signbit(e[low]).any(), \
        f"{dt} exp2 ftz {what}: not +0 below 2^-126 at x = {x[low][e[low] != 0][:6]}"
    edge = ~low & ~high & ~np.isnan(x)
    assert ((e[edge] == 0) | (np.abs(e[edge] - r[edge]) <= tiny * 2.0 ** -18)).all(), f"{dt} exp2 ftz {what}: at 2^-126"
    check("exp2", dt, e[high | np.isnan(x)], r[high | np.isnan(x)], f"{what} (ftz)", [x[high | np.isnan(x)]])


# ---------------------------------------------------------------- softmax
SOFTMAX_ULP = 8          # per element, f32 ulps of the float64 softmax + |x - rowmax| (see check_softmax)


def run_softmax(rng, R=7, NCOL=100, BLOCK=128):
    """Rows of ragged valid lengths (the masked tail reads -inf); row 3 is -inf except one element."""
    x = (rng.standard_normal((R, NCOL)) * 10).astype(np.float32)
    lens = np.array([NCOL, 1, 37, NCOL, 64, 99, 2][:R], np.int32)
    x[3, :] = -np.inf
    x[3, 41] = 5.0
    x[R - 1, 0] = -np.inf                     # a -inf inside a valid region
    y = np.full((R, NCOL), np.nan, np.float32)
    softmax_kernel[(R,)](x, lens, y, NCOL, BLOCK=BLOCK)
    return x, lens, y


def softmax_reference(x, lens):
    ref = np.zeros(x.shape, np.float64)
    for r, n in enumerate(lens):
        v = x[r, :n].astype(np.float64)
        e = np.exp(v - v.max())
        ref[r, :n] = e / e.sum()
    return ref


def check_softmax(res):
    x, lens, y = res
    ref = softmax_reference(x, lens)
    assert not np.isnan(y).any(), "NaN (or an unwritten element) in the softmax"
    err = ulp_error(y.ravel(), ref.ravel(), "f32").reshape(y.shape)
    # x - max is rounded to f32 in the kernel (relative error <= 2^-24 |x - max|), and exp turns an
    # absolute error of the argument into a relative one: |x - max| more ulps are the problem's own
    with np.errstate(invalid="ignore"):
        d = np.abs(x.astype(np.float64) - np.nanmax(np.where(np.arange(x.shape[1]) < lens[:, None], x, -np.inf),
                                                    axis=1, keepdims=True))
    bound = SOFTMAX_ULP + np.where(np.isfinite(d), d, 0)
    bad = err > bound
    assert not bad.any(), f"softmax off by {err[bad]} ulp (bounds {bound[bad]}) at {np.argwhere(bad)[:5]}"
    assert y[3, 41] == 1.0 and (y[3, :41] == 0).all() and (y[3, 42:] == 0).all()


# ---------------------------------------------------------------- casts
def cast_source(src: str):
    from tile.ir.dtypes import dtype
    d = dtype(src)
    if d.bits <= 8:
        codes = np.arange(1 << d.bits, dtype=np.uint8)
        return tile.from_codes(codes, d)
    return to_device_array(cast_inputs(src), src)


def run_casts():
    """(src, dst, input, output codes) for every ordered pair of CAST_TYPES, run under the current target;
    the output starts as all-ones codes."""
    from tile.ir.dtypes import dtype
    for src in CAST_TYPES:
        x = cast_source(src)
        n = len(np.asarray(x.codes() if hasattr(x, "codes") else x))
        for dst in CAST_TYPES:
            if dst == src:
                continue
            d = dtype(dst)
            out = tile.from_codes(np.full(n, (1 << min(d.bits, 16)) - 1 if d.bits <= 16 else 0xFFFFFFFF,
                                          np.uint32 if d.bits > 16 else np.uint16 if d.bits > 8 else np.uint8), d)
            cast_kernel[(tile.cdiv(n, BLOCK),)](x, out, n, DT=d)
            yield src, dst, x, out.codes().copy()


def compile_others(target):
    """The softmax, the exp2(ftz) / fma kernel and every cast kernel for `target`."""
    from tile.ir.dtypes import dtype
    T = tile.Tensor[tile.f32, 1]
    yield fused_kernel.compile(T, T, T, T, T, int, target=target)
    yield softmax_kernel.compile(tile.Tensor[tile.f32, 2], tile.Tensor[tile.i32, 1], tile.Tensor[tile.f32, 2], int,
                                 target=target, BLOCK=128)
    for src in CAST_TYPES:
        for dst in CAST_TYPES:
            if dst != src:
                yield cast_kernel.compile(tile.Tensor[dtype(src), 1], tile.Tensor[dtype(dst), 1], int,
                                          target=target, DT=dtype(dst))
