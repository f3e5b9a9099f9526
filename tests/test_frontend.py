"""The front end (Python AST -> tile IR) and the kernel object, construct by construct.

Each kernel runs in the interpreter on fresh random nonzero inputs (the seed is in every failure
message; TILE_TEST_SEED replays one) with outputs poisoned (NaN / a sentinel) before the run, and is
compared with a float64 NumPy reference. Tolerances: f32 elementwise chains rtol 1e-5; f32 sums
1e-5 relative to sum(|x|); bf16-input dots with f32 accumulation 1e-5 relative to max |ref| (the
interpreter rounds the f32 accumulator once); integer and bit-exact paths (casts of low-bit codes,
gathers, index arithmetic) exactly.
The IR-text tests check the printed IR names its ops and values after the source and parses back to
the same text.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import tile
from tile import bf16, f32, i32
from tile.ir.parser import parse_module
from tile.ir.printer import print_module

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy)
SENTINEL = -12345


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")


def rng(name):
    return np.random.default_rng([SEED, *name.encode()])


def randn(name, shape, dtype=np.float32):
    """Random nonzero values (|x| >= 0.1)."""
    x = rng(name).standard_normal(shape)
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    return x.astype(dtype)


def randint(name, shape, lo, hi, dtype=np.int32):
    """Random nonzero integers in [lo, hi)."""
    x = rng(name).integers(lo, hi, shape)
    x = np.where(x == 0, 1, x)
    return x.astype(dtype)


def poisoned(shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return np.full(shape, np.nan, dtype)
    return np.full(shape, SENTINEL, dtype)


def close(out, ref, rtol=1e-5, atol=0.0):
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, rtol=rtol, atol=atol, err_msg=f"seed {SEED}")


def roundtrip(ck):
    assert print_module(parse_module(ck.ir)) == ck.ir
    return ck.ir


# ================================================================== elementwise with broadcasting
@tile.kernel
def bias_scale(X: tile.Tensor[f32], b: tile.Tensor[f32], Y: tile.Tensor[f32], s: float,
               BM: tile.constexpr = 16, BN: tile.constexpr = 32):
    M, N = X.shape
    i = tile.block_id(0) * BM
    x = tile.load(X, (i, 0), (BM, BN))
    bias = tile.load(b, (0,), (BN,))
    rows = i + tile.arange(0, BM)
    cols = tile.arange(BN)
    y = (x * s + bias[None, :]) / 2 - rows[:, None] + cols
    y = tile.where(y > 0, y, -y) ** 2
    tile.store(Y, (i, 0), y, mask=(rows[:, None] < M) & (cols[None, :] < N))


def test_elementwise_broadcast_where_pow():
    M, N = 37, 32
    x, b = randn("x", (M, N)), randn("b", (N,))
    y = poisoned((M, N))
    s = 1.75
    bias_scale[(tile.cdiv(M, 16),)](x, b, y, s)
    ref = (x.astype(np.float64) * s + b[None, :]) / 2 - np.arange(M)[:, None] + np.arange(N)[None, :]
    close(y, ref ** 2, atol=1e-6 * (ref ** 2).max())       # f32 cancellation in y before squaring


@tile.kernel
def int_arith(X: tile.Tensor[i32], Y: tile.Tensor[i32], Z: tile.Tensor[tile.i1], n: int, BN: tile.constexpr = 64):
    i = tile.block_id(0) * BN
    x = tile.load(X, (i,), (BN,))
    q = x // 3 + x % 5 - (x >> 1) + (x << 2) ^ 7
    tile.store(Y, (i,), q + n, mask=(i + tile.arange(0, BN)) < X.shape[0])
    tile.store(Z, (i,), ~(x < 0) | (x == n))


def c_div(a, b):
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) == (b < 0), q, -q)


def test_integer_ops_truncate_toward_zero():
    n = 40
    x = randint("x", (n,), -100, 100)
    a = x.astype(np.int64)
    zref = ~(a < 0) | (a == 9)
    y, z = poisoned((n,), np.int32), ~zref                  # z poisoned with the opposite of every answer
    int_arith[(1,)](x, y, z, 9)
    q = ((c_div(a, 3) + (a - 5 * c_div(a, 5)) - (a >> 1) + (a << 2)) ^ 7) + 9
    np.testing.assert_array_equal(y, q, err_msg=f"seed {SEED}")
    np.testing.assert_array_equal(z, zref)


# ================================================================== reductions
@tile.kernel
def reductions(X: tile.Tensor[f32, 2], RS: tile.Tensor[f32], CM: tile.Tensor[f32], T: tile.Tensor[f32],
               AM: tile.Tensor[i32], BM: tile.constexpr, BN: tile.constexpr):
    x = tile.load(X, (0, 0), (BM, BN))
    tile.store(RS, (0,), tile.sum(x, axis=1))
    tile.store(CM, (0,), x.max(axis=0))
    T[0] = tile.sum(x)
    T[1] = tile.min(x)
    T[2] = tile.prod(x[0:4, 0])
    tile.store(AM, (0,), tile.argmax(x, axis=1))
    AM[BM] = tile.argmin(x)


def test_reductions():
    M, N = 8, 16
    x = randn("x", (M, N))
    rs, cm, t, am = poisoned((M,)), poisoned((N,)), poisoned((3,)), poisoned((M + 1,), np.int32)
    reductions[(1,)](x, rs, cm, t, am, BM=M, BN=N)
    xd = x.astype(np.float64)
    close(rs, xd.sum(1), atol=1e-5 * np.abs(xd).sum())
    close(cm, xd.max(0), rtol=0)
    close(t[0], xd.sum(), atol=1e-5 * np.abs(xd).sum())
    close(t[1], xd.min(), rtol=0)
    close(t[2], np.prod(xd[0:4, 0]), rtol=1e-5)
    np.testing.assert_array_equal(am[:M], xd.argmax(1))
    assert am[M] == xd.argmin()


# ================================================================== dot
@tile.kernel
def matmul(A: tile.Tensor[bf16], B: tile.Tensor[bf16], C: tile.Tensor[f32],
           BM: tile.constexpr = 32, BN: tile.constexpr = 32, BK: tile.constexpr = 16):
    M, K = A.shape
    N = B.shape[1]
    bm, bn = tile.block_id(0), tile.block_id(1)
    acc = tile.zeros((BM, BN), f32)
    for k in tile.range(0, K, BK, stages=2):
        a = tile.load(A, (bm * BM, k), (BM, BK))
        b = tile.load(B, (k, bn * BN), (BK, BN))
        acc = tile.dot(a, b, acc)
    tile.store(C, (bm * BM, bn * BN), acc)


def test_dot_loop_ragged():
    M, N, K = 45, 40, 50
    a = tile.asarray(randn("a", (M, K)), bf16)
    b = tile.asarray(randn("b", (K, N)), bf16)
    c = poisoned((M, N))
    ck = matmul[(tile.cdiv(M, 32), tile.cdiv(N, 32))](a, b, c)
    ref = a.numpy().astype(np.float64) @ b.numpy().astype(np.float64)
    close(c, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert "stages = 2" in ck.ir and " dot " in ck.ir


@tile.kernel
def int8_dot(A: tile.Tensor[tile.i8], B: tile.Tensor[tile.i8], C: tile.Tensor[i32], N: tile.constexpr):
    a = tile.load(A, (0, 0), (N, N))
    b = tile.load(B, (0, 0), (N, N))
    tile.store(C, (0, 0), tile.dot(a, b) + tile.dot(a, b.T))


def test_dot_integer_default_acc():
    n = 16
    a, b = randint("a", (n, n), -50, 50, np.int8), randint("b", (n, n), -50, 50, np.int8)
    c = poisoned((n, n), np.int32)
    int8_dot[(1,)](a, b, c, N=n)
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    np.testing.assert_array_equal(c, a64 @ b64 + a64 @ b64.T)


# ================================================================== control flow
@tile.kernel
def control(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, flag: bool, BN: tile.constexpr = 16):
    total = 0.0                                   # a Python number carried by a runtime loop: becomes f32
    acc = 0                                       # retyped to the tile it becomes
    for j in range(n):
        x = tile.load(X, (j, 0), (BN,))
        total += tile.sum(x)
        acc = acc + x * (j + 1)
    steps = 0
    v = total
    while v > 1.0:
        v = v / 2
        steps += 1
    if flag:
        y = acc * 2.0
        w = 1
    elif n > 3:
        y = acc - 1.0
        w = 2
    else:
        y = acc
        w = 3
    tile.store(Y, (0, 0), y + w)
    Y[1, 0] = total
    Y[1, 1] = v
    Y[1, 2] = float(steps)
    Y[1, 3] = 5.0 if flag else 6.0


def control_ref(x, n, flag):
    xd = x.astype(np.float64)
    total = xd[:n].sum()
    acc = sum(xd[j] * (j + 1) for j in range(n))
    v, steps = total, 0
    while v > 1.0:
        v /= 2
        steps += 1
    y, w = (acc * 2, 1) if flag else ((acc - 1, 2) if n > 3 else (acc, 3))
    return y + w, total, v, steps, 5.0 if flag else 6.0


@pytest.mark.parametrize("n,flag", [(5, True), (5, False), (2, False)])
def test_for_while_if(n, flag):
    x = np.abs(randn("x", (6, 16))) + 0.5
    y = poisoned((2, 16))
    control[(1,)](x, y, n, flag)
    yr, total, v, steps, c = control_ref(x, n, flag)
    tol = 1e-5 * np.abs(x).sum()
    close(y[0], yr, rtol=1e-5)
    close(y[1, 0], total, atol=tol)
    assert y[1, 2] == steps
    close(y[1, 1], v, rtol=1e-5)
    assert y[1, 3] == c


def test_control_flow_ir():
    ck = control.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], int, bool)
    text = roundtrip(ck)
    for op in (" for ", " while ", " if ", "condition ", "yield "):
        assert op in text, op
    assert "^(%j: i32, %total" in text                  # the loop carries `total` and `acc` under their names
    assert "%acc" in text and "tile<16xf32>" in text


@tile.kernel
def tuple_carry(Y: tile.Tensor[i32], n: int):
    ab = (1, 1)
    for _ in range(n):
        a, b = ab
        ab = (b, a + b)
    Y[0] = ab[0]
    Y[1] = ab[1]


def test_loop_carries_tuples():
    y = poisoned((2,), np.int32)
    tuple_carry[(1,)](y, 10)
    assert list(y) == [89, 144]


# ================================================================== constexpr folding, static loops
@tile.kernel
def folding(Y: tile.Tensor[f32], N: tile.constexpr, MODE: tile.constexpr = "add"):
    half = N // 2                       # folds: stays a Python int
    tile.static_assert(half * 2 == N, "N must be even")
    acc = tile.zeros((half,), f32)
    for i in tile.static_range(3):      # unrolled: three adds, no loop
        acc = acc + (i + 1)
    if MODE == "add":                   # folds away
        acc = acc + 10
    else:
        acc = acc - 10
    k = tile.cdiv(N, 4) * 4 + max(N, 3) - min(2, 7) + abs(-1) + int(2.9) + (-7 // 2)
    tile.store(Y, (0,), acc + k)


def test_constexpr_folding():
    y = poisoned((8,))
    ck = folding[(1,)](y, N=8)
    # 1+2+3 + 10 + (8 + 8 - 2 + 1 + 2 - 3): C division truncates toward zero
    close(y[:4], np.full(4, 16 + 14.0), rtol=0)
    assert np.isnan(y[4:]).all()
    body = ck.ir
    assert " for " not in body and " if " not in body and " sub " not in body
    assert body.count(" add ") == 5                      # three unrolled adds, +10, +k
    assert "attributes {N = 8, MODE = \"add\"}" in body
    y2 = poisoned((8,))
    folding[(1,)](y2, N=8, MODE="sub")
    close(y2[:4], np.full(4, 6 - 10 + 14.0), rtol=0)


# ================================================================== inline helpers
@tile.inline
def softmax_rows(x, scale=1.0):
    m = tile.max(x, axis=1)
    p = tile.exp((x - m[:, None]) * scale)
    return p / tile.sum(p, axis=1)[:, None], m


@tile.inline
def clamp(x, lo, hi):
    if lo is None:
        return tile.minimum(x, hi)
    return tile.minimum(tile.maximum(x, lo), hi)


@tile.kernel
def use_inline(X: tile.Tensor[f32], Y: tile.Tensor[f32], M: tile.Tensor[f32], R: tile.constexpr, C: tile.constexpr):
    x = tile.load(X, (0, 0), (R, C))
    p, m = softmax_rows(x, scale=0.5)
    tile.store(Y, (0, 0), clamp(p, 0.05, 0.9))
    tile.store(M, (0,), clamp(m, None, 0.5))


def test_inline_helpers():
    x = randn("x", (4, 8))
    y, m = poisoned((4, 8)), poisoned((4,))
    ck = use_inline[(1,)](x, y, m, R=4, C=8)
    xd = x.astype(np.float64)
    mx = xd.max(1)
    p = np.exp((xd - mx[:, None]) * 0.5)
    p /= p.sum(1)[:, None]
    close(y, np.clip(p, 0.05, 0.9), rtol=1e-5)
    close(m, np.minimum(mx, 0.5), rtol=0)
    # the inlined ops carry their own source lines (inside softmax_rows)
    line = softmax_rows.fn.__code__.co_firstlineno
    assert f'loc("test_frontend.py":{line + 3}:' in ck.ir


# ================================================================== gather / scatter / atomics / masks
@tile.kernel
def gather_scatter(T: tile.Tensor[f32], idx: tile.Tensor[i32], O: tile.Tensor[f32], R: tile.constexpr,
                   C: tile.constexpr):
    rows = tile.load(idx, (0,), (R,))
    g = tile.gather(T, rows, 1, C, other=-1.0)
    tile.scatter(O, rows, 0, g * 2)


def test_gather_scatter():
    t = randn("t", (10, 6))
    idx = np.array([3, 0, 12, 7, -1], np.int32)          # 12 and -1 are outside T: read `other`, skip in scatter
    o = poisoned((10, 4))
    gather_scatter[(1,)](t, idx, o, R=5, C=4)
    ref = poisoned((10, 4))
    for r in (3, 0, 7):
        ref[r] = t[r, 1:5] * 2
    np.testing.assert_array_equal(o, ref)


@tile.kernel
def masked(X: tile.Tensor[f32], Y: tile.Tensor[f32], H: tile.Tensor[f32], BN: tile.constexpr = 32):
    n = X.shape[0]
    cols = tile.arange(0, BN)
    x = tile.load(X, (0,), (BN,), mask=cols % 2 == 0, other=-3.0)   # odd columns and the tail read -3
    tile.store(Y, (0,), x)
    tile.atomic_add(H, (0,), tile.full((4,), 1.0, f32))
    tile.atomic_max(H, (4,), tile.zeros((4,), f32) + x[0:4], mask=cols[0:4] < n)


def test_masks_other_atomics():
    n = 21
    x = np.abs(randn("x", (n,))) + 1
    y = poisoned((32,))
    h = np.concatenate([np.arange(1, 5, dtype=np.float32), np.full(4, -1, np.float32)])
    masked[(3,)](x, y, h)
    ref = np.full(32, -3.0)
    ref[:n:2] = x[::2]
    close(y, ref, rtol=0)
    close(h[:4], np.arange(1, 5) + 3.0, rtol=0)              # three blocks each add 1
    close(h[4:], np.maximum(-1, ref[:4]), rtol=0)


# ================================================================== sub-byte tensors
@tile.kernel
def dequant(W: tile.Tensor[2], S: tile.Tensor[f32], Y: tile.Tensor[f32], BN: tile.constexpr = 8):
    K, N = W.shape
    j = tile.block_id(0) * BN
    w = tile.load(W, (0, j), (4, BN))
    s = tile.load(S, (j,), (BN,))
    tile.store(Y, (0, j), w.astype(f32) * s)


@pytest.mark.parametrize("wt", ["int4", "uint3", "int2", "f4e2m1", "f6e3m2"])
def test_subbyte_load_cast(wt):
    dt = tile.dtype(wt)
    codes = rng("w" + wt).uniform(dt.min_value, dt.max_value, (4, 20))
    w = tile.asarray(codes, dt)
    s = randn("s", (20,))
    y = poisoned((4, 20))
    ck = dequant[(3,)](w, s, y)
    assert f"tensor<?x?x{wt}>" in ck.ir
    np.testing.assert_array_equal(y, (w.numpy().astype(np.float32) * s), err_msg=f"seed {SEED}")


# ================================================================== shapes, indexing, methods
@tile.kernel
def shapes(X: tile.Tensor[f32], Y: tile.Tensor[f32], Z: tile.Tensor[f32], U: tile.Tensor[tile.u8]):
    x = tile.load(X, (0, 0), (4, 8))
    t = x.T                                            # 8x4
    r = t.reshape(4, 8) + x[:, 0:1] + x[1, :][None, :]
    c = tile.concat((r, tile.trans(t)), axis=0)        # 8x8
    tile.store(Y, (0, 0), c)
    tile.store(Z, (0,), tile.broadcast_to(x[..., 2], (2, 4)).reshape((8,)) + tile.permute(x, (1, 0))[3, 2])
    bits = tile.load(U, (0,), (4,))
    tile.store(U, (4,), bits.bitcast(tile.int4).bitcast(tile.u8) + 1)


def test_shapes_indexing_methods():
    x = randn("x", (4, 8))
    y, z = poisoned((8, 8)), poisoned((8,))
    u = np.concatenate([randint("u", (4,), 1, 200, np.uint8), np.full(4, 0xAA, np.uint8)])   # 0xAA: poison
    shapes[(1,)](x, y, z, u)
    xd = x.astype(np.float64)
    r = xd.T.reshape(4, 8) + xd[:, 0:1] + xd[1, :][None, :]
    yr, zr = np.concatenate([r, xd]), np.broadcast_to(xd[:, 2], (2, 4)).reshape(8) + xd[2, 3]
    close(y, yr, rtol=1e-6, atol=1e-6 * np.abs(yr).max())     # f32 sums of 3 terms: absolute error
    close(z, zr, rtol=1e-6, atol=1e-6 * np.abs(zr).max())
    np.testing.assert_array_equal(u[4:], u[:4] + 1)


@tile.kernel
def scalars(X: tile.Tensor[f32], Y: tile.Tensor[f32], I: tile.Tensor[i32], a: int, s: float):
    M, N = X.shape
    v = X[1, 2]
    X[0, 0] += 1.0
    Y[0] = max(v, s) + min(a, M)                       # Python min/max on runtime scalars
    Y[1] = abs(-v) + float(a) / 4
    I[0] = int(s * 2.0) + X.stride(0) * 100 + X.stride(1)
    I[1] = tile.cdiv(a, N) + M * N
    I[2] = -7 // a + (-7) % a


def test_scalar_element_access_and_builtins():
    x = randn("x", (3, 5))
    x0 = x.copy()
    y, i = poisoned((2,)), poisoned((3,), np.int32)
    scalars[(1,)](x, y, i, 3, -2.75)
    assert x[0, 0] == np.float32(x0[0, 0] + np.float32(1.0))
    close(y[0], max(x0[1, 2], -2.75) + 3, rtol=1e-6)
    close(y[1], abs(x0[1, 2]) + 0.75, rtol=1e-6)
    assert list(i) == [int(-5.5) + 500 + 1, 1 + 15, -2 + -1]


# ================================================================== explicit level
@tile.kernel
def staged(X: tile.Tensor[f32], Y: tile.Tensor[f32], BK: tile.constexpr = 8, STAGES: tile.constexpr = 2):
    K = X.shape[1]
    buf = tile.alloc_shared((STAGES, 4, BK), f32)
    acc = tile.zeros((4, BK), f32)
    tile.copy_async(buf[0], X, (0, 0))
    tile.commit()
    for k in range(0, K, BK):
        i = (k // BK) % STAGES
        tile.copy_async(buf[(i + 1) % STAGES], X, (0, k + BK))
        tile.commit()
        tile.wait(1)
        tile.barrier()
        acc += buf[i].load()
        tile.barrier()
    tmp = tile.alloc_shared((4, BK), f32)
    tmp.store(acc)
    tile.barrier()
    tile.store(Y, (0, 0), tmp.load())


def test_shared_memory_and_async_copies():
    x = randn("x", (4, 30))
    y = poisoned((4, 8))
    ck = staged[(1,)](x, y)
    xp = np.concatenate([x, np.zeros((4, 2), np.float32)], 1).astype(np.float64)
    ref = xp.reshape(4, 4, 8).sum(1)
    close(y, ref, rtol=1e-5, atol=1e-6 * np.abs(xp).max())      # f32 sums of 4 terms: absolute error
    for op in ("alloc_shared", "subview", "async_copy", "async_commit", "async_wait {pending = 1}", "barrier",
               "shared_load", "shared_store"):
        assert op in ck.ir, op
    roundtrip(ck)


# ================================================================== IR text, names, locations
def test_ir_text_names_and_locations():
    ck = matmul.compile(tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], tile.Tensor[f32, 2], BM=64)
    text = roundtrip(ck)
    assert text.startswith("kernel @matmul(%A: tensor<?x?xbf16>, %B: tensor<?x?xbf16>, %C: tensor<?x?xf32>) "
                           "attributes {BM = 64, BN = 32, BK = 16}")
    for frag in ("%M = dim %A {axis = 0}", "%K = dim %A {axis = 1}", "%bm = block_id {axis = 0}",
                 "%acc = full {value = 0.0} : tile<64x32xf32>", "^(%k: i32, %acc_", "%a = load %A",
                 "{shape = [64, 16]} : tile<64x16xbf16>", "= dot %a, %b, %acc_", "store %C"):
        assert frag in text, frag
    line = matmul.fn.__code__.co_firstlineno
    assert f'loc("test_frontend.py":{line + 9}:13)' in text          # a = tile.load(...) at column 13
    assert ck.passes == list(ck.ir_after)
    assert ck.target == "cpu" and ck.module.functions[0].name == "matmul"


def test_every_kernel_here_round_trips():
    sigs = [
        (bias_scale, (tile.Tensor[f32, 2], tile.Tensor[f32, 1], tile.Tensor[f32, 2], float), {}),
        (reductions, (tile.Tensor[f32, 2],) + (tile.Tensor[f32, 1],) * 3 + (tile.Tensor[i32, 1],), dict(BM=4, BN=8)),
        (use_inline, (tile.Tensor[f32, 2], tile.Tensor[f32, 2], tile.Tensor[f32, 1]), dict(R=4, C=8)),
        (gather_scatter, (tile.Tensor[f32, 2], tile.Tensor[i32, 1], tile.Tensor[f32, 2]), dict(R=4, C=2)),
        (scalars, (tile.Tensor[f32, 2], tile.Tensor[f32, 1], tile.Tensor[i32, 1], int, float), {}),
        (dequant, (tile.Tensor[tile.int4, 2], tile.Tensor[f32, 1], tile.Tensor[f32, 2]), {}),
    ]
    for k, args, cs in sigs:
        ck = k.compile(*args, **cs)
        roundtrip(ck)
        assert all(op.loc is not None and op.loc.file == "test_frontend.py" for op in ck.module.functions[0].walk())
        for text in ck.ir_after.values():
            assert print_module(parse_module(text)) == text


# ================================================================== specialization and caching
def test_specialization_cache():
    x = randn("x", (4, 8))
    a = matmul.compile(tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], tile.Tensor[f32, 2])
    b = matmul.compile(tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], tile.Tensor[f32, 2], BM=32)
    assert a is b                                           # BM=32 is the default: one specialization
    c = matmul.compile(tile.Tensor[bf16, 2], tile.Tensor[bf16, 2], tile.Tensor[f32, 2], BM=16)
    assert c is not a and "BM = 16" in c.ir
    d1 = dequant.compile(tile.asarray(x, "int4"), x[0], x)
    d2 = dequant.compile(tile.asarray(x + 1, "int4"), x[1], x)
    d3 = dequant.compile(tile.asarray(x, "uint4"), x[0], x)
    assert d1 is d2 and d1 is not d3
    k1 = fill.compile(tile.Tensor[f32, 1], C=2)
    k2 = fill.compile(tile.Tensor[f32, 1], C=2.0)           # 2.0 is another constant than 2
    assert k1 is not k2 and "C = 2.0" in k2.ir
    assert fill.compile(tile.Tensor[f32, 1], C=2) is k1


@tile.kernel
def fill(Y: tile.Tensor[f32], C: tile.constexpr):
    tile.store(Y, (0,), tile.full((4,), C, f32))


def test_grid_callable_and_defaults():
    M, N = 20, 32
    x, b = randn("x", (M, N)), randn("b", (N,))
    y = poisoned((M, N))
    seen = {}

    def grid(meta):
        seen.update(meta)
        return (tile.cdiv(meta["X"].shape[0], meta["BM"]),)
    bias_scale[grid](x, b, y, 1.0, BM=8)
    assert seen["BM"] == 8 and seen["BN"] == 32 and seen["s"] == 1.0
    assert not np.isnan(y).any()


# ================================================================== the namespace
def test_namespace():
    for name in ("int1", "int4", "int7", "uint1", "uint7", "f6e3m2", "f6e2m3", "f5e2m2", "f4e2m1", "f3e1m1",
                 "f8e4m3fn", "f8e5m2", "bf16", "f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8"):
        assert getattr(tile, name) == tile.dtype(name)
    assert tile.dtype("f5e3m1").bits == 5
    assert tile.cdiv(10, 4) == 3 and tile.cdiv(8, 4) == 2
    with pytest.raises(tile.OutsideKernelError, match="inside a @tile.kernel"):
        tile.load(None, (0,), (4,))
    assert tile.Tensor[bf16, 2].rank == 2 and tile.Tensor[3].dtype is None
    assert tile.asarray is not None and tile.Array is not None
    assert isinstance(matmul, tile.Kernel)
    with pytest.raises(TypeError, match=r"matmul\[grid\]"):
        matmul(1, 2, 3)


@tile.kernel
def with_layout(X: tile.Tensor[f32], Y: tile.Tensor[f32], LAYOUT: tile.constexpr):
    s = tile.alloc_shared((2, 4, 8), f32, layout=LAYOUT)
    tile.copy_async(s[1], X, (0, 0))
    tile.commit()
    tile.wait()
    tile.barrier()
    tile.store(Y, (0, 0), s[1].load() * 2)


def test_shared_tile_with_layout():
    from tile.ir.layout import make_ordered_layout
    lay = make_ordered_layout((2, 4, 8), (2, 1, 0))
    x, y = randn("x", (4, 8)), poisoned((4, 8))
    ck = with_layout[(1,)](x, y, str(lay))                   # the layout's text form works too
    np.testing.assert_array_equal(y, x * 2)
    assert f'layout="{lay}"' in roundtrip(ck)
    ck2 = with_layout.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], lay)
    assert f'layout="{lay}"' in roundtrip(ck2)


# ---------------------------------------------------------------- explicit register layouts
def test_annotate_register_layout_is_kept():
    from tile.ir.register_layout import tv_blocked
    lay = str(tv_blocked((64, 64), (8, 16), (8, 4)))

    @tile.kernel
    def twice(X: tile.Tensor[tile.f32, 2], Y: tile.Tensor[tile.f32, 2], LAY: tile.constexpr = lay):
        x = tile.annotate(tile.load(X, (0, 0), (64, 64)), LAY)
        tile.store(Y, (0, 0), x * 2.0)

    X = np.random.default_rng().standard_normal((64, 64)).astype(np.float32)
    Y = np.full((64, 64), np.nan, np.float32)
    twice[(1,)](X, Y)
    assert np.array_equal(Y, 2 * X)
    ck = twice.compile(X, Y, target="sm_90a")
    after = ck.ir_after["layout_inference"]
    assert f'convert_layout' in after and lay in after            # the user's layout survives inference


def test_annotate_wrong_shape_is_located():
    from tile.ir.register_layout import tv_blocked
    lay = str(tv_blocked((64, 64), (8, 16), (8, 4)))

    @tile.kernel
    def bad(X: tile.Tensor[tile.f32, 2], LAY: tile.constexpr = lay):
        x = tile.annotate(tile.load(X, (0, 0), (32, 64)), LAY)

    with pytest.raises(tile.CompileError) as e:
        bad.compile(np.zeros((32, 64), np.float32), target="cpu")
    assert "annotate: the layout is for a (64, 64) tile" in str(e.value) and "^" in str(e.value)


def test_string_annotations_may_use_the_closure():
    """`from __future__ import annotations` (this file) with a kernel defined inside a function: its
    annotations may use names of the enclosing function that the kernel's body uses (its closure)."""
    def make():
        import tile as t

        @t.kernel
        def k(X: t.Tensor[t.f32, 1], n: int):
            t.store(X, (0,), t.load(X, (0,), (4,)) + 1.0)
        return k
    k = make()
    assert [(p.name, p.kind, p.dtype, p.rank) for p in k.params] == [("X", "tensor", tile.f32, 1),
                                                                     ("n", "scalar", tile.i32, None)]
