"""Mixture-of-experts layer: top-k routing, token permutation, grouped GEMM over the expert weights
with SwiGLU, and the weighted combine back to token order.

    probs = softmax(x @ Wr + bias); (ids, w) = top-k of probs, renormalized
    y[t]  = sum_j w[t, j] * (silu(x[t] @ W1g[e]) * (x[t] @ W1u[e])) @ W2[e],   e = ids[t, j]

Kernels: `router` (logits, softmax, iterative top-k), `moe_up` (rows gathered by token index, the
gate and up projections of the block's expert, SwiGLU), `moe_down` (grouped down projection) and
`moe_combine` (gathers each token's expert rows, weights and sums them). The permutation metadata
(which padded row holds which assignment, which expert each row block belongs to) is a counting
sort done on the GPU: the router counts each block's assignments per expert, `moe_offsets` turns the
counts into padded segment offsets with prefix sums, `moe_scatter` writes each assignment's row -- no
host loop, no host sync (`route`). The expert GEMMs' grid is sized for the worst case and blocks past
the last segment exit at once. Experts that receive no tokens get no row blocks. `align` is the same
counting sort on the host in NumPy: the test oracle, and the path with token rounding.
`round_tokens=True` is SonicMoE's tile-aware token rounding: each expert's token count is rounded
to the nearest multiple of the row tile BM — by dropping its lowest-scored assignments or by adding
the best-scored tokens not yet routed to it — so no row tile is partly padding.

Run: python examples/moe.py
"""
import numpy as np

import tile
from tile import bf16, f32, i32


@tile.kernel
def router(X: tile.Tensor[bf16, 2], Wr: tile.Tensor[bf16, 2], bias: tile.Tensor[f32, 1], P: tile.Tensor[f32, 2],
           ids: tile.Tensor[i32, 2], wts: tile.Tensor[f32, 2], counts: tile.Tensor[i32, 2],
           E: tile.constexpr = 8, TOPK: tile.constexpr = 2, BT: tile.constexpr = 16, BK: tile.constexpr = 32):
    D = X.shape[1]
    t0 = tile.block_id(0) * BT
    logits = tile.zeros((BT, E), f32)
    for k in tile.range(0, D, BK):
        logits = tile.dot(tile.load(X, (t0, k), (BT, BK)), tile.load(Wr, (k, 0), (BK, E)), logits)
    logits = logits + tile.load(bias, (0,), (E,))[None, :]   # load-balancing bias per expert
    p = tile.exp(logits - tile.max(logits, axis=1)[:, None])
    p = p / tile.sum(p, axis=1)[:, None]
    tile.store(P, (t0, 0), p)
    experts = tile.arange(0, E)[None, :]
    slots = tile.arange(0, TOPK)[None, :]
    top_ids = tile.zeros((BT, TOPK), i32)
    top_w = tile.zeros((BT, TOPK), f32)
    for j in tile.static_range(TOPK):                      # iterative arg-max, unrolled
        best = tile.argmax(p, axis=1)
        top_ids = tile.where(slots == j, best[:, None], top_ids)
        top_w = tile.where(slots == j, tile.max(p, axis=1)[:, None], top_w)
        p = tile.where(experts == best[:, None], -1.0, p)
    tile.store(ids, (t0, 0), top_ids)
    tile.store(wts, (t0, 0), top_w / tile.sum(top_w, axis=1)[:, None])
    # This block's assignments per expert (rows past the last token count for none): the input of
    # the alignment's prefix sums, so routing needs no second pass over `ids`.
    valid = (tile.arange(0, BT) + t0 < X.shape[0])[:, None]
    n = tile.zeros((E,), i32)
    for j in tile.static_range(TOPK):
        n = n + tile.sum(((top_ids[:, j][:, None] == experts) & valid).astype(i32), axis=0)
    tile.store(counts, (tile.block_id(0), 0), n[None, :])


# ---- alignment on the GPU: a counting sort of the (token, slot) assignments by expert, each expert's
# segment padded to a multiple of BM, in two launches and without a host sync. The grid of the
# expert GEMMs is sized for the worst case (T * TOPK assignments + E * (BM - 1) padding rows); row
# blocks past the last expert's segment have block_expert = -1 and exit at once.

@tile.kernel
def moe_offsets(counts: tile.Tensor[i32, 2], blockoff: tile.Tensor[i32, 2], block_expert: tile.Tensor[i32, 1],
                rows: tile.Tensor[i32, 2], E: tile.constexpr = 8, BM: tile.constexpr = 16,
                BB: tile.constexpr = 32, BF: tile.constexpr = 128):
    """One block. blockoff[b, e] = first padded row of router block b's assignments to expert e;
    block_expert[i] = expert of row block i (-1 past the end); rows[r] = -1 for the padding rows r of
    every segment (the scatter writes the others)."""
    NB = counts.shape[0]
    seen = tile.zeros((E,), i32)                           # assignments to each expert, all blocks
    for b0 in tile.range(0, NB, BB):
        seen = seen + tile.sum(tile.load(counts, (b0, 0), (BB, E)), axis=0)
    padded = (seen + (BM - 1)) // BM * BM
    ends = tile.cumsum(padded, 0)                          # expert e's segment is [ends - padded, ends)
    # second pass over the counts (never over what this kernel wrote: its threads would need a
    # barrier to see each other's global stores): each block's first row per expert
    before = ends - padded                                 # segment start + assignments in blocks < b0
    for b0 in tile.range(0, NB, BB):
        c = tile.load(counts, (b0, 0), (BB, E))
        tile.store(blockoff, (b0, 0), tile.cumsum(c, 0, exclusive=True) + before[None, :])
        before = before + tile.sum(c, axis=0)
    for i in tile.range(0, block_expert.shape[0], BF):
        first_row = (tile.arange(0, BF) + i) * BM
        e = tile.sum((ends[None, :] <= first_row[:, None]).astype(i32), axis=1)
        tile.store(block_expert, (i,), tile.where(e < E, e, -1))
    # the padding rows of each segment (fewer than BM per expert) read token -1; rows past the last
    # segment belong to no row block (block_expert -1) and are never read
    BJ = min(BM, 32)                                        # (E x BJ tiles keep the registers few)
    for j0 in tile.static_range(0, BM, BJ):
        j = tile.arange(0, BJ)[None, :] + j0
        pad = tile.where(j < (padded - seen)[:, None], (ends - padded + seen)[:, None] + j, -1)
        tile.scatter(rows, tile.reshape(pad, (E * BJ,)), 0, tile.full((E * BJ, 1), -1, i32))


@tile.kernel
def moe_scatter(ids: tile.Tensor[i32, 2], blockoff: tile.Tensor[i32, 2], rows: tile.Tensor[i32, 2],
                pos: tile.Tensor[i32, 2], E: tile.constexpr = 8, TOPK: tile.constexpr = 2, BT: tile.constexpr = 16):
    """Router block b's assignments: the padded row of each (token, slot), in token order within an
    expert (as the host `align`): rows[row] = token, pos[token, slot] = row."""
    b = tile.block_id(0)
    t0 = b * BT
    tid = tile.load(ids, (t0, 0), (BT, TOPK), other=-1)     # -1: past the last token, no expert
    experts = tile.arange(0, E)[None, :]
    # before[t, e]: assignments to e of this block's tokens before t (a token has each expert once)
    before = tile.load(blockoff, (b, 0), (1, E))
    for j in tile.static_range(TOPK):
        before = before + tile.cumsum((tid[:, j][:, None] == experts).astype(i32), 0, exclusive=True)
    tok = (tile.arange(0, BT) + t0)[:, None]
    slots = tile.arange(0, TOPK)[None, :]
    p = tile.full((BT, TOPK), -1, i32)
    for j in tile.static_range(TOPK):
        hit = tid[:, j][:, None] == experts
        row = tile.where(tid[:, j] >= 0, tile.sum(tile.where(hit, before, 0), axis=1), -1)
        tile.scatter(rows, row, 0, tok)                    # row -1 (no assignment) is skipped
        p = tile.where(slots == j, row[:, None], p)
    tile.store(pos, (t0, 0), p)


@tile.kernel
def moe_up(X: tile.Tensor[bf16, 2], W1: tile.Tensor[bf16, 3], rows: tile.Tensor[i32, 2],
           block_expert: tile.Tensor[i32, 1], Hbuf: tile.Tensor[bf16, 2], F: tile.constexpr = 64,
           BM: tile.constexpr = 16, BN: tile.constexpr = 32, BK: tile.constexpr = 32):
    D = X.shape[1]
    pm = tile.block_id(0)
    pn = tile.block_id(1)
    e = block_expert[pm]
    if e >= 0:                                              # -1: a row block past the last segment
        tok = tile.reshape(tile.load(rows, (pm * BM, 0), (BM, 1)), (BM,))   # token of each row; -1: padding
        gate = tile.zeros((BM, BN), f32)
        up = tile.zeros((BM, BN), f32)
        for k in tile.range(0, D, BK, stages=3):
            x = tile.gather(X, tok, k, BK)                  # the permutation is fused into the load
            gate = tile.dot(x, tile.load(W1, (e, k, pn * BN), (BK, BN)), gate)
            up = tile.dot(x, tile.load(W1, (e, k, F + pn * BN), (BK, BN)), up)
        tile.store(Hbuf, (pm * BM, pn * BN), (gate * tile.sigmoid(gate) * up).astype(bf16))


@tile.kernel
def moe_down(Hbuf: tile.Tensor[bf16, 2], W2: tile.Tensor[bf16, 3], block_expert: tile.Tensor[i32, 1],
             Ybuf: tile.Tensor[bf16, 2], BM: tile.constexpr = 16, BN: tile.constexpr = 32, BK: tile.constexpr = 32):
    F = Hbuf.shape[1]
    pm = tile.block_id(0)
    pn = tile.block_id(1)
    e = block_expert[pm]
    if e >= 0:
        acc = tile.zeros((BM, BN), f32)
        for k in tile.range(0, F, BK, stages=3):
            acc = tile.dot(tile.load(Hbuf, (pm * BM, k), (BM, BK)), tile.load(W2, (e, k, pn * BN), (BK, BN)), acc)
        tile.store(Ybuf, (pm * BM, pn * BN), acc.astype(bf16))


@tile.kernel
def moe_combine(Ybuf: tile.Tensor[bf16, 2], pos: tile.Tensor[i32, 2], wts: tile.Tensor[f32, 2],
                Out: tile.Tensor[bf16, 2], TOPK: tile.constexpr = 2, BT: tile.constexpr = 16,
                BD: tile.constexpr = 32):
    t0 = tile.block_id(0) * BT
    d0 = tile.block_id(1) * BD
    p = tile.load(pos, (t0, 0), (BT, TOPK), other=-1)      # padded row of each assignment; -1 = dropped
    w = tile.load(wts, (t0, 0), (BT, TOPK))
    acc = tile.zeros((BT, BD), f32)
    for j in tile.static_range(TOPK):
        y = tile.gather(Ybuf, p[:, j], d0, BD)
        acc = acc + y.astype(f32) * w[:, j][:, None]
    tile.store(Out, (t0, d0), acc.astype(bf16))


def align(ids, wts, probs, E, BM, round_tokens=False):
    """Counting sort of the (token, slot) assignments by expert, each expert's rows padded to a
    multiple of BM. Returns rows[P] (token of each padded row, -1 = padding), block_expert[P // BM],
    and pos/weights [T, W] (the padded row and weight of each of a token's W >= TOPK assignments;
    row -1 = none). With round_tokens, tokens an expert gains by rounding up get extra slots,
    weighted by their router probability; dropped assignments get row -1."""
    T, TOPK = ids.shape
    members = [[(t, float(wts[t, j])) for t in range(T) for j in range(TOPK) if ids[t, j] == e] for e in range(E)]
    if round_tokens:
        for e in range(E):
            n, r = len(members[e]), len(members[e]) % BM
            if r == 0:
                continue
            if r < BM / 2 or n + BM - r > T:                # round down: drop the lowest-scored
                members[e] = sorted(members[e], key=lambda tw: -tw[1])[:n - r]
            else:                                           # round up: add the best unrouted tokens
                routed = {t for t, _ in members[e]}
                cand = [int(t) for t in np.argsort(-probs[:, e], kind="stable") if t not in routed]
                members[e] += [(t, float(probs[t, e])) for t in cand[:BM - r]]
    slots = [[] for _ in range(T)]
    rows, block_expert = [], []
    for e in range(E):
        start = len(rows)
        for t, w in members[e]:
            slots[t].append((len(rows), w, e))
            rows.append(t)
        rows += [-1] * (-(len(rows) - start) % BM)
        block_expert += [e] * ((len(rows) - start) // BM)
    W = max(TOPK, max(len(s) for s in slots))
    pos = np.full((T, W), -1, np.int32)
    weights = np.zeros((T, W), np.float32)
    assignments = []
    for t, sl in enumerate(slots):
        for j, (row, w, e) in enumerate(sl):
            pos[t, j], weights[t, j] = row, w
            assignments.append((t, e, w))
    return np.array(rows, np.int32), np.array(block_expert, np.int32), pos, weights, assignments


def reference(x, w1, w2, F, assignments):
    """float64: y[t] = sum over (t, expert, weight) of weight * swiglu-MLP_expert(x[t])."""
    y = np.zeros((x.shape[0], w2.shape[2]))
    for t, e, w in assignments:
        g, u = x[t] @ w1[e, :, :F], x[t] @ w1[e, :, F:]
        y[t] += w * ((g / (1.0 + np.exp(-g)) * u) @ w2[e])
    return y


def padded_rows(T, TOPK, E, BM):
    """Rows of the expert GEMMs' grid when the routing is not known on the host: every assignment
    plus the most padding E segments can have, in whole row blocks."""
    return tile.cdiv(T * TOPK + E * (BM - 1), BM) * BM


def poisoned(shape, dtype):
    """A host array every element of which a kernel must overwrite (NaN, or -7 for integers)."""
    return np.full(shape, np.nan if dtype == f32 else -7, np.float32 if dtype == f32 else np.int32)


def route(x, wr, bias, E, TOPK, BM, BT=16, empty=poisoned):
    """Router and alignment in three launches, with no host loop and no host sync (with GPU arrays
    from `empty(shape, dtype)`, e.g. `tile.empty` or a torch allocator, nothing leaves the device).
    Returns probs [T, E], ids, wts [T, TOPK], rows [Pmax, 1], block_expert [Pmax // BM], pos [T, TOPK]."""
    T = x.shape[0]
    nb = tile.cdiv(T, BT)
    Pmax = padded_rows(T, TOPK, E, BM)
    P = empty((T, E), f32)
    ids, wts, pos = empty((T, TOPK), i32), empty((T, TOPK), f32), empty((T, TOPK), i32)
    counts, blockoff = empty((nb, E), i32), empty((nb, E), i32)
    rows, block_expert = empty((Pmax, 1), i32), empty((Pmax // BM,), i32)
    router[(nb,)](x, wr, bias, P, ids, wts, counts, E=E, TOPK=TOPK, BT=BT)
    moe_offsets[(1,)](counts, blockoff, block_expert, rows, E=E, BM=BM)
    moe_scatter[(nb,)](ids, blockoff, rows, pos, E=E, TOPK=TOPK, BT=BT)
    return P, ids, wts, rows, block_expert, pos


def run(T=40, D=64, F=64, E=8, TOPK=2, BM=16, round_tokens=False, seed=None, empty_expert=True):
    """Launch the kernels on fresh random inputs; return the relative error of the output.
    Without token rounding the whole layer runs on the GPU (router, alignment, expert GEMMs, combine);
    SonicMoE token rounding is done by the host `align`."""
    rng = np.random.default_rng(seed)
    x = tile.asarray(rng.standard_normal((T, D)), bf16)
    wr = tile.asarray(rng.standard_normal((D, E)) / np.sqrt(D), bf16)
    bias = (0.1 * rng.standard_normal(E)).astype(np.float32)
    if empty_expert:
        bias[E - 1] = -30.0                                 # expert E-1 receives no tokens
    w1 = tile.asarray(rng.standard_normal((E, D, 2 * F)) / np.sqrt(D), bf16)
    w2 = tile.asarray(rng.standard_normal((E, F, D)) / np.sqrt(F), bf16)
    P, ids, wts, rows, block_expert, pos = route(x, wr, bias, E, TOPK, BM)

    # The routing must agree with a float64 softmax/top-k on the same inputs (up to near-ties).
    logits = x.numpy().astype(np.float64) @ wr.numpy().astype(np.float64) + bias
    ref_p = np.exp(logits - logits.max(1, keepdims=True))
    ref_p /= ref_p.sum(1, keepdims=True)
    assert np.allclose(P, ref_p, atol=1e-5), "router probabilities differ"
    top = np.sort(ref_p, axis=1)[:, ::-1][:, :TOPK]
    assert np.allclose(np.take_along_axis(ref_p, ids, 1), top, atol=1e-5), "top-k experts differ"

    # The GPU alignment is the host counting sort, exactly (its grid has whole blocks of padding after).
    h_rows, h_blocks, h_pos, h_weights, assignments = align(ids, wts, ref_p, E, BM, round_tokens)
    n = len(h_rows)
    if not round_tokens:
        assert (rows[:n, 0] == h_rows).all(), "GPU alignment rows differ"        # rows[n:] are never read
        assert (block_expert[:n // BM] == h_blocks).all() and (block_expert[n // BM:] == -1).all()
        # (the host lists a token's rows by expert, the GPU by router slot, beside that slot's weight)
        assert (np.sort(pos, 1) == np.sort(h_pos, 1)).all(), "GPU alignment positions differ"
    else:                                                   # token rounding: the host's metadata
        rows = np.full((padded_rows(T, h_pos.shape[1], E, BM), 1), -1, np.int32)
        rows[:n, 0] = h_rows
        block_expert = np.full(len(rows) // BM, -1, np.int32)
        block_expert[:n // BM] = h_blocks
        pos, wts = h_pos, h_weights
    Pn = len(rows)
    Hbuf = tile.asarray(np.full((Pn, F), np.nan), bf16)
    Ybuf = tile.asarray(np.full((Pn, D), np.nan), bf16)
    out = tile.asarray(np.full((T, D), np.nan), bf16)
    moe_up[(Pn // BM, tile.cdiv(F, 32))](x, w1, rows, block_expert, Hbuf, F=F, BM=BM)
    moe_down[(Pn // BM, tile.cdiv(D, 32))](Hbuf, w2, block_expert, Ybuf, BM=BM)
    moe_combine[(tile.cdiv(T, 16), tile.cdiv(D, 32))](Ybuf, pos, wts, out, TOPK=pos.shape[1])
    ref = reference(x.numpy().astype(np.float64), w1.numpy().astype(np.float64),
                    w2.numpy().astype(np.float64), F, assignments)
    got = out.numpy().astype(np.float64)
    assert np.isfinite(got).all(), "some outputs were not written"
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), h_blocks


if __name__ == "__main__":
    for rounding in (False, True):
        err, blocks = run(round_tokens=rounding)
        print(f"moe T=40 E=8 top-2 token_rounding={rounding!s:5s} experts used={sorted(set(blocks.tolist()))} "
              f"on {tile.current_target()}: relative error {err:.2e}")
        assert err < 2e-2, err
