"""Bit-exactness of tile.ir.numerics against ml_dtypes, NumPy and independent brute-force references.

Random inputs are fresh on every run; the seed is printed in every failure message (set
TILE_TEST_SEED to replay one).
"""
from __future__ import annotations

import os
from fractions import Fraction

import ml_dtypes as md
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tile.ir import dtypes as D
from tile.ir import numerics as N

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy)

# Our name -> ml_dtypes type, for every type both have with the same semantics.
ML_FLOATS = {
    "f8e4m3fn": md.float8_e4m3fn,
    "f8e5m2": md.float8_e5m2,
    "f6e3m2": md.float6_e3m2fn,
    "f6e2m3": md.float6_e2m3fn,
    "f4e2m1": md.float4_e2m1fn,
    "bf16": md.bfloat16,
}
ML_INTS = {"int4": md.int4, "uint4": md.uint4, "int2": md.int2, "uint2": md.uint2,
           "int1": md.int1, "uint1": md.uint1}

# Every small float f{bits}e{E}m{M} that ml_dtypes lacks (all finite-only, saturating).
OTHER_SMALL_FLOATS = [f"f{b}e{e}m{b - 1 - e}" for b in range(2, 9) for e in range(1, b)
                      if f"f{b}e{e}m{b - 1 - e}" not in ("f8e4m3", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1")]
OTHER_INTS = [f"int{b}" for b in (3, 5, 6, 7)] + [f"uint{b}" for b in (3, 5, 6, 7)] + \
    ["i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64"]


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, *name.encode()])


def ml_codes(x: np.ndarray, mlt) -> np.ndarray:
    with np.errstate(all="ignore"):
        y = x.astype(mlt)
    return y.view(np.uint16 if y.itemsize == 2 else np.uint8)


def assert_same_codes(got, want, x, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    bad = np.flatnonzero(got != want)
    if bad.size:
        i = bad[0]
        xi = np.asarray(x).reshape(-1)[i]
        raise AssertionError(f"{what} (seed {SEED}): {bad.size}/{got.size} mismatches; first x={xi!r} "
                             f"({float(xi).hex()}): got code {got.reshape(-1)[i]}, want {want.reshape(-1)[i]}")


def assert_same_floats(got, want, what):
    """Bit-exact float64 equality, where any NaN equals any NaN of the same sign."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    both_nan = np.isnan(got) & np.isnan(want)
    same = (got.view(np.uint64) == want.view(np.uint64)) | (both_nan & (np.signbit(got) == np.signbit(want)))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{what}: {bad.size} mismatches, first at code {bad[0]}: {got[bad[0]]!r} vs {want[bad[0]]!r}"


# ------------------------------------------------------------------------------------------------
# Independent references


def brute_decode_small_float(t: D.DType) -> np.ndarray:
    """Value of every code from the textbook formula, one code at a time, via exact fractions."""
    E, M, bits = t.exp, t.man, t.bits
    bias = 2 ** (E - 1) - 1
    out = []
    for c in range(2 ** bits):
        s, e, m = c >> (bits - 1), (c >> M) & (2 ** E - 1), c & (2 ** M - 1)
        if e == 0:
            v = Fraction(m, 2 ** M) * Fraction(2) ** (1 - bias)
        else:
            v = (1 + Fraction(m, 2 ** M)) * Fraction(2) ** (e - bias)
        out.append(-float(v) if s else float(v))
    return np.array(out)


def ref_encode_float(x: np.ndarray, t: D.DType, values: np.ndarray) -> np.ndarray:
    """Nearest-even choice over the full list `values` (value of every code), with the overflow and NaN
    rules of tile.ir.dtypes. Works on exact float64 comparisons: the midpoint of two neighbours is
    exactly representable in float64 for every format here."""
    bits = t.bits
    half = 2 ** (bits - 1)
    pos_codes = np.array([c for c in range(half) if np.isfinite(values[c])])
    pos_vals = values[pos_codes]
    assert np.all(np.diff(pos_vals) > 0)
    vmax = pos_vals[-1]
    # A virtual value one ulp above the largest finite one, with the next code: rounding to it is overflow.
    virt = vmax + 2.0 ** (np.frexp(vmax)[1] - 1 - t.man)
    vals = np.append(pos_vals, virt)
    codes = np.append(pos_codes, pos_codes[-1] + 1)
    x = np.asarray(x, np.float64).reshape(-1)
    ax = np.abs(x)
    fin = np.isfinite(x)
    i = np.clip(np.searchsorted(vals, np.where(fin, ax, 0), side="right") - 1, 0, len(vals) - 2)
    lo, hi = vals[i], vals[i + 1]
    mid = (lo + hi) / 2
    assert np.all((mid - lo == hi - mid))                    # the midpoint is exact
    take_hi = (ax > mid) | ((ax == mid) & (codes[i + 1] % 2 == 0))
    j = np.where(ax >= virt, len(vals) - 1, np.where(take_hi, i + 1, i))
    mag = codes[j].astype(np.int64)
    overflow = (j == len(vals) - 1) | np.isinf(x)
    if t.name == "f8e4m3fn":
        mag = np.where(overflow, 0x7F, mag)
        nan_mag = 0x7F
    elif t.is_ieee_like:
        inf = (2 ** t.exp - 1) << t.man
        mag = np.where(overflow, inf, mag)
        nan_mag = inf | (1 << (t.man - 1))
    else:
        mag = np.where(overflow, pos_codes[-1], mag)
        nan_mag = None
    sign = np.signbit(x).astype(np.int64) * half
    code = sign + mag
    nan = np.isnan(x)
    if nan_mag is None:
        code = np.where(nan, np.where(np.signbit(x), 0, half), code)   # zero of the opposite sign
    else:
        code = np.where(nan, sign + nan_mag, code)
    return code


def ref_encode_int(x: np.ndarray, t: D.DType) -> np.ndarray:
    """float64 NumPy reference: round half to even, saturate, NaN -> 0, two's complement bits."""
    lo, hi = int(t.min_value), int(t.max_value)
    r = np.rint(np.asarray(x, np.float64)).reshape(-1)
    out = []
    for v in r.tolist():
        k = 0 if v != v else (lo if v <= lo else hi if v >= hi else int(v))
        out.append(k % 2 ** t.bits)
    return np.array(out, dtype=np.uint64)


# ------------------------------------------------------------------------------------------------
# Input generators


def float_cases(values: np.ndarray, rng: np.random.Generator, n: int, dt) -> np.ndarray:
    """Inputs around one format: random bit patterns, a wide dynamic range, exact ties between adjacent
    values and their neighbours, overflow, subnormals, +-0, +-inf and NaN, all with random signs."""
    pos = np.unique(np.abs(values[np.isfinite(values)]))
    vmax, vmin = pos[-1], pos[1]
    ulp_top = pos[-1] - pos[-2]
    virt = vmax + ulp_top if ulp_top > 0 else 2 * vmax
    mids = np.append((pos[:-1] + pos[1:]) / 2, (vmax + virt) / 2).astype(dt)
    finfo = np.finfo(dt)
    ibits = np.uint32 if dt == np.float32 else np.uint64
    parts = [
        rng.integers(0, np.iinfo(ibits).max, n, dtype=ibits, endpoint=True).view(dt),
        (2.0 ** rng.uniform(np.log2(vmin) - 6, np.log2(vmax) + 4, n) * rng.uniform(1, 2, n)),
        mids, np.nextafter(mids, dt(np.inf)), np.nextafter(mids, dt(-np.inf)),
        pos, np.nextafter(pos.astype(dt), dt(np.inf)), np.nextafter(pos.astype(dt), dt(-np.inf)),
        vmax * np.array([1.0001, 1.01, 1.5, 2, 1e3, 1e30]), [finfo.max, finfo.tiny, finfo.smallest_subnormal],
        vmin * np.arange(0, 40) / 8,                             # target subnormals and below
        [0.0, np.inf, np.nan],
    ]
    with np.errstate(all="ignore"):
        x = np.concatenate([np.asarray(p, np.float64).astype(dt) for p in parts])
    x = np.where(rng.integers(0, 2, x.size).astype(bool), -x, x).astype(dt)
    return np.concatenate([x, -x[-3:]])                           # both signs of 0, inf, NaN for sure


def f64_cases(values: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """float64 inputs that float32 cannot hold: ties nudged by 2**-30 .. 2**-52 relative."""
    base = float_cases(values, rng, n, np.float64)
    k = rng.integers(24, 53, base.size)
    with np.errstate(all="ignore"):
        nudged = base * (1 + rng.choice([-1.0, 1.0], base.size) * 2.0 ** -k)
    return np.concatenate([base, nudged])


# ------------------------------------------------------------------------------------------------
# 1. decode of every code vs ml_dtypes


@pytest.mark.parametrize("name", list(ML_FLOATS))
def test_decode_every_code_matches_ml_dtypes_float(name):
    t, mlt = D.dtype(name), ML_FLOATS[name]
    codes = np.arange(2 ** t.bits, dtype=N.code_dtype(t))
    if t.bits < 8:
        want = codes.astype(np.uint8).view(mlt).astype(np.float64)
    else:
        with np.errstate(invalid="ignore"):
            want = codes.view(mlt).astype(np.float64)
    got = N.decode(codes, t)
    assert got.dtype == np.float64
    assert_same_floats(got, want, name)
    fin = got[np.isfinite(got)]
    assert fin.max() == t.max_value == float(md.finfo(mlt).max)


@pytest.mark.parametrize("name", list(ML_INTS))
def test_decode_every_code_matches_ml_dtypes_int(name):
    t, mlt = D.dtype(name), ML_INTS[name]
    codes = np.arange(2 ** t.bits, dtype=np.uint8)
    got = N.decode(codes, t)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, codes.view(mlt).astype(np.int64))
    assert (got.min(), got.max()) == (t.min_value, t.max_value)


# ------------------------------------------------------------------------------------------------
# 2. encode of float32 (and float64) inputs vs ml_dtypes


@pytest.mark.parametrize("name", list(ML_FLOATS))
def test_encode_float32_matches_ml_dtypes(name):
    t, mlt = D.dtype(name), ML_FLOATS[name]
    values = N.decode(np.arange(2 ** t.bits, dtype=N.code_dtype(t)), t)
    x = float_cases(values, rng_for(name), 3000, np.float32)
    got = N.encode(x, t)
    assert got.dtype == N.code_dtype(t) and got.shape == x.shape
    assert_same_codes(got, ml_codes(x, mlt), x, f"encode float32 -> {name}")
    # the brute-force reference agrees as well, and quantize is encode+decode
    assert_same_codes(got, ref_encode_float(x, t, values), x, f"brute-force {name}")
    assert_same_floats(N.quantize(x, t), values[got], f"quantize {name}")


@pytest.mark.parametrize("name", list(ML_FLOATS))
def test_encode_float64_single_rounding(name):
    """float64 inputs are rounded once, straight to the target. ml_dtypes 0.6 casts float64 through
    float32 (rounding twice), so it is the oracle only where that cannot matter: we require our code
    equal to the exact nearest-even reference everywhere, equal to ml_dtypes on float32-exact inputs,
    and, elsewhere, ml_dtypes to equal either ours or the float32-routed result."""
    t, mlt = D.dtype(name), ML_FLOATS[name]
    values = N.decode(np.arange(2 ** t.bits, dtype=N.code_dtype(t)), t)
    x = f64_cases(values, rng_for(name + "64"), 1500)
    got = N.encode(x, t)
    assert_same_codes(got, ref_encode_float(x, t, values), x, f"encode float64 -> {name}")
    ml = ml_codes(x, mlt)
    with np.errstate(all="ignore"):
        x32 = x.astype(np.float32)
    exact32 = (x32.astype(np.float64) == x) | np.isnan(x)
    assert_same_codes(got[exact32], ml[exact32], x[exact32], f"float32-exact float64 -> {name}")
    via32 = N.encode(x32, t)
    ok = (ml == got) | (ml == via32)
    assert_same_codes(np.where(ok, ml, got), ml, x, f"ml_dtypes float64 -> {name}")


def test_float64_double_rounding_examples():
    # 1 + 2**-4 + 2**-30 is just above the tie between 1 and 1.125 (e4m3fn, f6e2m3); float32 rounds it
    # onto the tie, which then goes to even (1.0). We round once and get 1.125.
    x = np.array([1 + 2 ** -4 + 2 ** -30, -(1 + 2 ** -4 + 2 ** -30)])
    assert N.quantize(x, "f8e4m3fn").tolist() == [1.125, -1.125]
    assert N.quantize(x, "f6e2m3").tolist() == [1.125, -1.125]
    assert N.quantize(x.astype(np.float32), "f8e4m3fn").tolist() == [1.0, -1.0]
    y = np.array([1 + 2 ** -8 + 2 ** -30])
    assert N.quantize(y, "bf16").tolist() == [1 + 2 ** -7]
    # smallest e4m3fn subnormal is 2**-9: a hair above half of it rounds up, exactly half goes to 0
    z = np.array([2 ** -10 * (1 + 2 ** -40), 2 ** -10, -(2 ** -10)])
    assert N.encode(z, "f8e4m3fn").tolist() == [1, 0, 0x80]


@pytest.mark.parametrize("name", ["f16", "f32"])
def test_ieee_matches_numpy(name):
    t = D.dtype(name)
    npt = {"f16": np.float16, "f32": np.float32}[name]
    rng = rng_for(name)
    ibits = 16 if name == "f16" else 32
    if name == "f16":
        all_vals = N.decode(np.arange(2 ** 16, dtype=np.uint16), "f16")
    else:   # float32 has too many values to list: take random ones and their upper neighbours
        a = rng.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        a = np.abs(a[np.isfinite(a)])
        all_vals = np.unique(np.concatenate([a, np.nextafter(a, np.float32(np.inf)), [0.0], 2.0 ** np.arange(-149, 128),
                                             [np.finfo(np.float32).max]]).astype(np.float64))
        all_vals = all_vals[np.isfinite(all_vals)]
    x = np.concatenate([f64_cases(all_vals, rng, 2000), rng.standard_normal(500) * 1e4])
    with np.errstate(all="ignore"):
        want = x.astype(npt).view(f"u{ibits // 8}")
    got = N.encode(x, t)
    ok = ~np.isnan(x)
    assert_same_codes(got[ok], want[ok], x[ok], f"{name} vs numpy")
    nan_vals = N.decode(got[~ok], t)
    assert np.all(np.isnan(nan_vals)) and np.all(np.signbit(nan_vals) == np.signbit(x[~ok]))
    # decode is the plain reinterpretation
    assert_same_floats(N.decode(got[ok], t), want[ok].view(npt).astype(np.float64), f"{name} decode")


def test_f64_and_integer_inputs_to_floats():
    rng = rng_for("f64")
    x = rng.standard_normal(1000) * 10.0 ** rng.integers(-300, 300, 1000)
    assert np.array_equal(N.encode(x, "f64"), x.view(np.uint64))
    assert np.array_equal(N.decode(x.view(np.uint64), "f64"), x)
    # integers round from their exact value: compare int64 -> f32 with the C conversion NumPy uses,
    # including magnitudes beyond 2**53 where going through float64 would round twice
    i = np.concatenate([rng.integers(-2 ** 63, 2 ** 63 - 1, 2000, dtype=np.int64, endpoint=True),
                        (2 ** 62 + rng.integers(0, 2 ** 40, 500)).astype(np.int64),
                        np.array([-2 ** 63, 2 ** 63 - 1, 0, 1, -1, 2 ** 24 + 1, 2 ** 53 + 1])])
    assert_same_codes(N.encode(i, "f32"), i.astype(np.float32).view(np.uint32), i, "int64 -> f32")
    small = rng.integers(-2 ** 20, 2 ** 20, 2000)
    for name in ("f8e4m3fn", "f6e2m3", "f5e2m2", "bf16"):
        assert_same_codes(N.encode(small, name), N.encode(small.astype(np.float64), name), small, name)
        assert_same_codes(N.encode(small.astype(np.int16).clip(-2**15, 2**15 - 1), name),
                          N.encode(small.astype(np.int16).astype(np.float64), name), small, name)


@pytest.mark.parametrize("name", list(ML_INTS) + OTHER_INTS)
def test_encode_float_to_int_rounds_and_saturates(name):
    # ml_dtypes' float -> int4/int2/... cast truncates toward zero and wraps modulo 2**bits (2.7 -> 2,
    # 9.0 -> -7 for int4). Our rule is round-half-to-even then saturate (NaN -> 0), so the oracle is
    # a float64 NumPy reference (np.rint + clamp), not ml_dtypes.
    t = D.dtype(name)
    rng = rng_for(name)
    lo, hi = int(t.min_value), int(t.max_value)
    span = float(max(hi, 4))
    halves = np.arange(-2 * min(span, 300), 2 * min(span, 300) + 1) / 2          # exact .5 ties
    x = np.concatenate([
        rng.uniform(-3 * span, 3 * span, 1000), halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
        [lo - 0.5, lo - 0.51, hi + 0.5, hi + 0.49, float(lo), float(hi), 1e300, -1e300, np.inf, -np.inf, np.nan, -np.nan, -0.0],
    ])
    for dt in (np.float64, np.float32):
        with np.errstate(all="ignore"):
            xd = x.astype(dt)
        got = N.encode(xd, t)
        assert got.dtype == N.code_dtype(t)
        assert_same_codes(got.astype(np.uint64), ref_encode_int(xd, t), xd, f"{dt.__name__} -> {name}")
        q = N.quantize(xd, t)
        assert q.min() >= lo and q.max() <= hi
    if name in ML_INTS:
        # where truncation, wrapping and our rule coincide (in-range integer values), ml_dtypes agrees
        k = np.arange(lo, hi + 1, dtype=np.float32)
        assert_same_codes(N.encode(k, t), ml_codes(k, ML_INTS[name]), k, f"ml_dtypes {name}")


@pytest.mark.parametrize("name", ["int3", "uint5", "i8", "u8", "i16", "u32", "i64", "u64", "int1", "uint1"])
def test_integer_inputs_saturate(name):
    t = D.dtype(name)
    rng = rng_for(name + "i")
    lo, hi = int(t.min_value), int(t.max_value)
    xi = np.concatenate([rng.integers(-2 ** 63, 2 ** 63 - 1, 300, dtype=np.int64, endpoint=True),
                         rng.integers(-300, 300, 300),
                         np.array([min(max(v, -2 ** 63), 2 ** 63 - 1) for v in (-2 ** 63, 2 ** 63 - 1, lo, hi, 0)], np.int64)])
    xu = np.concatenate([rng.integers(0, 2 ** 64 - 1, 300, dtype=np.uint64, endpoint=True),
                         np.array([2 ** 64 - 1, 2 ** 63, 0, 1], np.uint64)])
    for x in (xi, xu, xi.astype(np.int8), xu.astype(np.uint16)):
        want = [min(max(int(v), lo), hi) % 2 ** t.bits for v in x.tolist()]
        assert N.encode(x, t).astype(np.uint64).tolist() == want, (name, x.dtype)
        dec = N.decode(N.encode(x, t), t)
        assert [int(v) for v in dec.tolist()] == [min(max(int(v), lo), hi) for v in x.tolist()]


def test_bool_type():
    x = np.array([0.0, -0.0, 0.5, -3, np.nan, np.inf])
    assert N.encode(x, "bool").tolist() == [0, 0, 1, 1, 1, 1]
    assert N.encode(np.array([0, 7, -1]), "i1").tolist() == [0, 1, 1]
    assert N.decode(np.array([0, 1], np.uint8), "bool").tolist() == [0, 1]


# ------------------------------------------------------------------------------------------------
# 3. types ml_dtypes lacks: brute force


@pytest.mark.parametrize("name", OTHER_SMALL_FLOATS)
def test_small_float_brute_force(name):
    t = D.dtype(name)
    values = brute_decode_small_float(t)
    codes = np.arange(2 ** t.bits, dtype=np.uint8)
    got = N.decode(codes, t)
    assert_same_floats(got, values, f"decode {name}")                # every code is finite
    assert np.all(np.isfinite(got)) and got.max() == t.max_value and got.min() == t.min_value
    rng = rng_for(name)
    for x in (float_cases(values, rng, 600, np.float32), f64_cases(values, rng, 300)):
        enc = N.encode(x, t)
        assert_same_codes(enc, ref_encode_float(x, t, values), x, f"encode {x.dtype} -> {name}")
        # saturation: nothing beyond the largest finite magnitude, and quantize is idempotent
        q = N.quantize(x, t)
        assert np.all(np.abs(q) <= t.max_value)
        assert_same_codes(N.encode(q, t), np.where(np.isnan(x), N.encode(q, t), enc), x, f"idempotent {name}")


@pytest.mark.parametrize("name", ["int3", "uint5", "int6", "int7", "uint3", "uint6", "uint7", "i8", "u8", "i16", "u16"])
def test_int_decode_brute_force(name):
    t = D.dtype(name)
    b = t.bits
    want = [c - 2 ** b if (t.kind == "int" and c >= 2 ** (b - 1)) else c for c in range(2 ** b)]
    assert N.decode(np.arange(2 ** b, dtype=N.code_dtype(t)), t).tolist() == want
    assert N.decode(np.array([2 ** b - 1], np.uint64), t).dtype == np.int64


def test_wide_int_decode():
    assert N.decode(np.array([2 ** 64 - 1, 2 ** 63], np.uint64), "i64").tolist() == [-1, -2 ** 63]
    u = N.decode(np.array([2 ** 64 - 1], np.uint64), "u64")
    assert u.dtype == np.uint64 and int(u[0]) == 2 ** 64 - 1


# ------------------------------------------------------------------------------------------------
# 4. pack / unpack


def ref_pack(codes, bits) -> bytes:
    """The bit stream as one little-endian integer: element i is worth 2**(i*bits)."""
    stream = sum(int(c) << (i * bits) for i, c in enumerate(codes))
    return stream.to_bytes((len(codes) * bits + 7) // 8, "little")


def test_pack_bit_order_by_hand():
    assert N.pack(np.array([1, 2, 3]), 3).tolist() == [0xD1, 0x00]     # 1,0,0|0,1,0|1,1,0 LSB first
    assert N.pack(np.array([0xA, 0x5]), 4).tolist() == [0x5A]
    assert N.pack(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [0x0D, 0x01]
    assert N.pack(np.array([0b11111]), 5).tolist() == [0x1F]
    assert N.pack(np.array([[3], [1]]), 2).tolist() == [0b0111]            # any shape, C order
    assert N.pack(np.array([0x1234, 0xABCD], np.uint16), 16).tolist() == [0x34, 0x12, 0xCD, 0xAB]
    assert N.unpack(np.array([0xD1, 0x00], np.uint8), 3, 3).tolist() == [1, 2, 3]
    assert N.pack(np.array([], np.uint8), 3).size == 0


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 16, 32]),
       n=st.one_of(st.sampled_from([1, 3, 7, 13, 1001]), st.integers(0, 70)),
       seed=st.integers(0, 2 ** 32 - 1))
def test_pack_unpack_roundtrip(bits, n, seed):
    cdt = N.code_dtype(D.dtype(f"uint{bits}") if bits < 8 else D.int_type(bits, False))
    codes = np.random.default_rng(seed).integers(0, 2 ** bits, n, dtype=np.uint64, endpoint=False).astype(cdt)
    packed = N.pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == (n * bits + 7) // 8
    if n <= 100:
        assert packed.tobytes() == ref_pack(codes.tolist(), bits)
    out = N.unpack(packed, bits, n)
    assert out.dtype == cdt and np.array_equal(out, codes)
    # trailing garbage bytes are ignored; padding bits of the last byte are zero
    assert np.array_equal(N.unpack(np.append(packed, [0xFF, 0xFF]).astype(np.uint8), bits, n), codes)
    if (n * bits) % 8:
        assert packed[-1] >> ((n * bits) % 8) == 0


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError):
        N.pack(np.array([8]), 3)
    with pytest.raises(ValueError):
        N.pack(np.array([-1]), 3)
    with pytest.raises(ValueError):
        N.unpack(np.zeros(1, np.uint8), 3, 3)


def test_to_from_bits():
    rng = rng_for("tofrom")
    x = rng.standard_normal((5, 7)) * 3
    for name in ("f4e2m1", "f6e3m2", "f3e1m1", "int3", "uint5", "f8e4m3fn", "bf16"):
        t = D.dtype(name)
        packed = N.to_bits(x, t)
        assert packed.size == (35 * t.bits + 7) // 8
        back = N.from_bits(packed, t, (5, 7))
        assert back.shape == (5, 7)
        assert_same_floats(back.astype(np.float64), N.quantize(x, t).astype(np.float64), name)


# ------------------------------------------------------------------------------------------------
# 5. DType basics


def test_dtype_names_and_sizes():
    for name in ("f6e3m2", "f4e2m1", "int3", "uint7", "bool", "f3e1m1"):
        with pytest.raises(TypeError):
            D.dtype(name).nbytes
    assert D.dtype("bf16").nbytes == 2 and D.dtype("f8e4m3fn").nbytes == 1
    assert D.dtype("f6e3m2fn") is D.dtype("f6e3m2")
    assert D.dtype("f4e2m1fn") is D.dtype("f4e2m1")
    assert D.dtype("float8_e4m3fn") is D.f8e4m3fn
    for bad in ("f6e3m3", "f9e4m4", "f2e0m1", "int9", "float7", "", "f8e4m3fnx"):
        with pytest.raises(ValueError):
            D.dtype(bad)
    assert N.code_dtype(D.dtype("int3")) == np.uint8 and N.code_dtype(D.bf16) == np.uint16
    assert N.code_dtype(D.f32) == np.uint32 and N.code_dtype(D.i64) == np.uint64
