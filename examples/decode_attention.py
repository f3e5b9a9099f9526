"""Split-KV flash decoding: attention of a few new query tokens per sequence against a long KV cache,
with a contiguous cache or a paged one (vLLM's layout, through a block table).

    q        [B, HQ, LQ, D]       LQ = 1..8 new tokens per sequence (speculative decoding)
    k, v     [B, HKV, S_max, D]   contiguous cache, or
             [P, PAGE, HKV, D]    paged cache: page block_table[b, j] holds positions j*PAGE .. j*PAGE+PAGE-1
    seqlens  [B] int32            tokens in each sequence's cache, the LQ new ones included (>= LQ)
    out      [B, HQ, LQ, D]       query token i of sequence b sees cache positions < seqlens[b] - LQ + 1 + i

Grid (splits, HKV * row_blocks, B): the HQ / HKV query heads that share a KV head are packed, with
their LQ tokens, as the rows of one tile (GQA and MQA read each K/V tile once for the whole group;
rows past group * LQ are padding up to the MMA minimum of 16), and the sequence is split across
blocks so that every SM streams the cache even for a small batch. Each split writes its partial
output (f32, normalized) and its log-sum-exp (log2 domain); `decode_combine` (a second launch)
merges the splits. With one split the kernel writes the bf16 output itself and no combine runs.
K/V rows are gathered by index (`tile.gather`, pipelined as cp.async copies): positions past a
split's end get row -1, which reads zeros, so the cache past `seqlens` is never read (it may hold
anything, NaN included). Scores are scaled by sm_scale * log2(e) and exponentiated with exp2.

Run: python examples/decode_attention.py
"""
import math

import numpy as np

import tile
from tile import bf16, f32, i32

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
NEG_INF = float("-inf")


@tile.inline
def kv_rows(block_table, b, n, hi, base, BN, PAGE):
    """Cache rows of positions n .. n+BN-1 of sequence b (-1, which reads zeros, at and past hi).
    PAGE = 0: a contiguous cache, rows base + position; else a paged cache through block_table."""
    pos = n + tile.arange(0, BN)
    if PAGE == 0:
        rows = base + pos
    elif PAGE >= BN:                                        # the tile lies in one page
        rows = block_table[b, n // PAGE] * PAGE + (n % PAGE) + tile.arange(0, BN)
    else:                                                   # BN // PAGE whole pages
        pages = tile.load(block_table, (b, n // PAGE), (BN // PAGE,))
        rows = (pages[:, None] * PAGE + tile.arange(0, PAGE)[None, :]).reshape((BN,))
    return tile.where(pos < hi, rows, -1)


@tile.inline
def split_kv_attention(Q, K, V, block_table, seqlens, O, O_part, L_part, sm_scale, group, lq, split_len,
                       D, BM, BN, STAGES, PAGE, SPLIT):
    """One block: the BM packed rows (query head, token) of one row block of one KV head's group, over
    positions [split * split_len, (split + 1) * split_len) of one sequence's cache."""
    sp = tile.block_id(0)
    nrb = tile.cdiv(group * lq, BM)                         # row blocks per KV head (1 unless group * lq > BM)
    hk = tile.block_id(1) // nrb
    rb = tile.block_id(1) % nrb
    HKV = tile.num_blocks(1) // nrb
    b = tile.block_id(2)
    seqlen = seqlens[b]
    r = rb * BM + tile.arange(0, BM)                        # row within the group: head (r // lq), token (r % lq)
    live = r < group * lq
    row0 = (b * HKV + hk) * group * lq + rb * BM            # first row in Q's [B * HQ * LQ, D] view
    q = tile.load(Q, (row0, 0), (BM, D), mask=tile.broadcast_to(live[:, None], (BM, D)))
    lim = seqlen - lq + 1 + r % lq                          # row r sees positions < lim (causal for lq > 1)
    lo = sp * split_len
    hi = min(lo + split_len, seqlen)
    if PAGE > 0:
        col0 = hk * D                                       # paged: [P * PAGE, HKV * D]
        base = 0
    else:
        col0 = 0                                            # contiguous: [B * HKV * S_max, D]
        base = (b * HKV + hk) * (K.shape[0] // (tile.num_blocks(2) * HKV))
    m_i = tile.full((BM,), NEG_INF, f32)                    # running row max (log2 domain)
    l_i = tile.zeros((BM,), f32)                            # running row sum
    acc = tile.zeros((BM, D), f32)
    qk_scale = sm_scale * LOG2E
    for n in tile.range(lo, hi, BN, stages=STAGES):         # K/V tiles in a cp.async ring
        rows = kv_rows(block_table, b, n, hi, base, BN, PAGE)
        k = tile.gather(K, rows, col0, D)
        v = tile.gather(V, rows, col0, D)
        s = tile.dot(q, k.T) * qk_scale
        pos = n + tile.arange(0, BN)
        s = tile.where(pos[None, :] < lim[:, None], s, NEG_INF)
        m_new = tile.maximum(m_i, tile.max(s, axis=1))
        m_use = tile.where(m_new == NEG_INF, 0.0, m_new)    # a row that has seen no key yet: no -inf - -inf
        p = tile.exp2(s - m_use[:, None], ftz=True)
        alpha = tile.exp2(m_i - m_use, ftz=True)
        l_i = l_i * alpha + tile.sum(p, axis=1)
        acc = acc * alpha[:, None] + tile.dot(p.astype(bf16), v)
        m_i = m_new
    seen = l_i > 0.0                                        # false only for a split with no key for the row
    l_safe = tile.where(seen, l_i, 1.0)
    o = acc / l_safe[:, None]
    wmask = tile.broadcast_to(live[:, None], (BM, D))
    if SPLIT:
        tile.store(O_part, (sp, row0, 0), o, mask=wmask)
        tile.store(L_part, (sp, row0), tile.where(seen, m_i + tile.log2(l_safe), NEG_INF), mask=live)
    else:
        tile.store(O, (row0, 0), o.astype(bf16), mask=wmask)


@tile.kernel
def flash_decode(Q: tile.Tensor[bf16, 2], K: tile.Tensor[bf16, 2], V: tile.Tensor[bf16, 2],
                 seqlens: tile.Tensor[i32, 1], O: tile.Tensor[bf16, 2], O_part: tile.Tensor[f32, 3],
                 L_part: tile.Tensor[f32, 2], sm_scale: float, group: int, lq: int, split_len: int,
                 D: tile.constexpr = 128, BM: tile.constexpr = 16, BN: tile.constexpr = 64,
                 STAGES: tile.constexpr = 3, SPLIT: tile.constexpr = True):
    """Contiguous cache. Q/O: [B * HQ * LQ, D] views of [B, HQ, LQ, D]; K/V: [B * HKV * S_max, D] views
    of [B, HKV, S_max, D]; O_part [splits, B * HQ * LQ, D], L_part [splits, B * HQ * LQ] (SPLIT)."""
    split_kv_attention(Q, K, V, seqlens, seqlens, O, O_part, L_part, sm_scale, group, lq, split_len,
                       D, BM, BN, STAGES, 0, SPLIT)


@tile.kernel
def paged_decode(Q: tile.Tensor[bf16, 2], K: tile.Tensor[bf16, 2], V: tile.Tensor[bf16, 2],
                 block_table: tile.Tensor[i32, 2], seqlens: tile.Tensor[i32, 1], O: tile.Tensor[bf16, 2],
                 O_part: tile.Tensor[f32, 3], L_part: tile.Tensor[f32, 2], sm_scale: float, group: int, lq: int,
                 split_len: int, PAGE: tile.constexpr = 64, D: tile.constexpr = 128, BM: tile.constexpr = 16,
                 BN: tile.constexpr = 64, STAGES: tile.constexpr = 3, SPLIT: tile.constexpr = True):
    """Paged cache: K/V are [P * PAGE, HKV * D] views of [P, PAGE, HKV, D]; block_table [B, max_pages]."""
    tile.static_assert(PAGE % BN == 0 or BN % PAGE == 0, "PAGE and BN must divide one another")
    split_kv_attention(Q, K, V, block_table, seqlens, O, O_part, L_part, sm_scale, group, lq, split_len,
                       D, BM, BN, STAGES, PAGE, SPLIT)


@tile.kernel
def decode_combine(O_part: tile.Tensor[f32, 3], L_part: tile.Tensor[f32, 2], O: tile.Tensor[bf16, 2],
                   LSE: tile.Tensor[f32, 1], D: tile.constexpr = 128, BR: tile.constexpr = 16):
    """out[r] = sum_s 2^(L[s, r] - M) O_part[s, r] / sum_s 2^(L[s, r] - M), M = max_s L[s, r]; splits
    without a key for a row (L = -inf) weigh 0. LSE (natural log) of the whole row, for cascading."""
    splits = O_part.shape[0]
    r0 = tile.block_id(0) * BR
    m = tile.full((BR,), NEG_INF, f32)
    for s in tile.range(0, splits):
        m = tile.maximum(m, tile.load(L_part, (s, r0), (BR,)))
    m = tile.where(m == NEG_INF, 0.0, m)                    # (rows past the end: nothing to weigh)
    den = tile.zeros((BR,), f32)
    acc = tile.zeros((BR, D), f32)
    for s in tile.range(0, splits):
        w = tile.exp2(tile.load(L_part, (s, r0), (BR,)) - m)
        den = den + w
        acc = acc + w[:, None] * tile.load(O_part, (s, r0, 0), (BR, D))
    seen = den > 0.0                                        # (a row that sees no key at all: 0, lse -inf)
    den = tile.where(seen, den, 1.0)
    tile.store(O, (r0, 0), (acc / den[:, None]).astype(bf16))
    tile.store(LSE, (r0,), tile.where(seen, (m + tile.log2(den)) * LN2, NEG_INF))


# ---------------------------------------------------------------------------------------------- host
def row_block(group, lq, max_rows=64):
    """BM: the packed rows of a KV head's group (group * lq), padded to a power of two >= 16 (the MMA
    minimum) and capped at max_rows (a larger group takes several row blocks)."""
    n = group * lq
    return min(max(16, 1 << (n - 1).bit_length()), max_rows)


def blocks_per_sm(D, BN, STAGES, smem_per_sm=227 * 1024, regs_per_thread=200, threads=128):
    """Blocks of the decode kernel resident on one SM, as its K/V ring buffers and its registers (about
    200 a thread at D = 128, ptxas's report) allow."""
    return max(1, min(smem_per_sm // (STAGES * 2 * BN * D * 2 + 4096), 65536 // (regs_per_thread * threads)))


def num_splits(B, HKV, S, num_sms=132, row_blocks=1, D=128, BN=64, STAGES=3, max_splits=256, min_tiles=4):
    """How many blocks share one sequence's cache: the fewest splits whose grid fills the GPU's block
    slots (num_sms * blocks_per_sm) nearly as evenly as the best choice does (FlashAttention's wave
    efficiency rule), each split keeping at least `min_tiles` K/V tiles so its pipeline fills."""
    slots = num_sms * blocks_per_sm(D, BN, STAGES)
    pairs = B * HKV * row_blocks
    tiles = max(1, -(-S // BN))
    cap = max(1, min(max_splits, tiles // min_tiles))

    def eff(s):
        waves = pairs * s / slots
        return waves / math.ceil(waves)
    best = max(eff(s) for s in range(1, cap + 1))
    return next(s for s in range(1, cap + 1) if eff(s) >= 0.9 * best)


def _view(x, shape):
    """x in another shape: a view for torch and NumPy arrays, a copy of a tile.Array."""
    if isinstance(x, tile.Array):
        return tile.from_codes(x.codes().reshape(shape), x.dtype)
    return x.reshape(shape)


def _empty(like, shape, dtype):
    """An output buffer on the same side as `like` (torch on the GPU, else a tile.Array)."""
    if type(like).__module__.startswith("torch"):
        import torch
        return torch.empty(shape, dtype={bf16: torch.bfloat16, f32: torch.float32}[dtype], device=like.device)
    return tile.asarray(np.full(shape, np.nan), dtype)


def decode_plan(B, HQ, HKV, LQ, D, S, splits=None, BN=64, STAGES=3, num_sms=132):
    """Launch parameters for a cache of S positions per sequence: the packed row tile BM, row blocks,
    splits and split_len (a multiple of BN), the grid and the kernel's constants."""
    group = HQ // HKV
    BM = row_block(group, LQ)
    nrb = -(-(group * LQ) // BM)
    if splits is None:
        splits = num_splits(B, HKV, S, num_sms, nrb, D, BN, STAGES)
    split_len = -(-(-(-S // splits)) // BN) * BN
    splits = -(-S // split_len)
    return dict(group=group, BM=BM, splits=splits, split_len=split_len, grid=(splits, HKV * nrb, B),
                consts=dict(D=D, BM=BM, BN=BN, STAGES=STAGES, SPLIT=splits > 1))


def decode_attention(q, k_cache, v_cache, seqlens, block_table=None, sm_scale=None, splits=None, BN=64,
                     STAGES=3, num_sms=132, return_lse=False):
    """out [B, HQ, LQ, D] (bf16). Contiguous cache k/v [B, HKV, S_max, D], or with block_table [B, max_pages]
    a paged cache [P, PAGE, HKV, D]. splits: None = num_splits(...). return_lse: also the natural
    log-sum-exp [B * HQ * LQ] (None with one split)."""
    B, HQ, LQ, D = q.shape
    if block_table is not None:
        P, PAGE, HKV, _ = k_cache.shape
        S = block_table.shape[1] * PAGE
        kv_shape = (P * PAGE, HKV * D)
    else:
        _, HKV, S, _ = k_cache.shape
        kv_shape = (B * HKV * S, D)
    plan = decode_plan(B, HQ, HKV, LQ, D, S, splits, BN, STAGES, num_sms)
    splits = plan["splits"]
    R = B * HQ * LQ
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    Q = _view(q, (R, D))
    K, V = _view(k_cache, kv_shape), _view(v_cache, kv_shape)
    out = _empty(q, (R, D), bf16)
    part = _empty(q, (splits, R, D) if splits > 1 else (1, 1, D), f32)
    lpart = _empty(q, (splits, R) if splits > 1 else (1, 1), f32)
    scalars = (sm_scale, plan["group"], LQ, plan["split_len"])
    if block_table is not None:
        paged_decode[plan["grid"]](Q, K, V, block_table, seqlens, out, part, lpart, *scalars, PAGE=PAGE,
                                   **plan["consts"])
    else:
        flash_decode[plan["grid"]](Q, K, V, seqlens, out, part, lpart, *scalars, **plan["consts"])
    lse = None
    if splits > 1:
        lse = _empty(q, (R,), f32)
        decode_combine[(-(-R // 16),)](part, lpart, out, lse, D=D)
    out = _view(out, (B, HQ, LQ, D))
    return (out, lse) if return_lse else out


def reference(q, k, v, seqlens):
    """float64: q [B, HQ, LQ, D], k/v [B, HKV, S, D] (contiguous); token i of sequence b sees positions
    < seqlens[b] - LQ + 1 + i. Returns (out, lse) with lse the natural log-sum-exp."""
    B, HQ, LQ, D = q.shape
    rep = HQ // k.shape[1]
    out = np.zeros((B, HQ, LQ, D))
    lse = np.zeros((B, HQ, LQ))
    for b in range(B):
        L = int(seqlens[b])
        kb = np.repeat(k[b, :, :L].astype(np.float64), rep, axis=0)
        vb = np.repeat(v[b, :, :L].astype(np.float64), rep, axis=0)
        s = np.einsum("hqd,hkd->hqk", q[b].astype(np.float64), kb) / math.sqrt(D)
        visible = np.arange(L)[None, :] < (L - LQ + 1 + np.arange(LQ))[:, None]
        s = np.where(visible[None], s, -np.inf)
        m = s.max(-1, keepdims=True)
        p = np.exp(s - m)
        out[b] = np.einsum("hqk,hkd->hqd", p / p.sum(-1, keepdims=True), vb)
        lse[b] = (m[..., 0] + np.log(p.sum(-1)))
    return out, lse


def paginate(k, v, seqlens, PAGE, rng, extra_pages=3):
    """Paged copies of contiguous caches k/v [B, HKV, S, D] and their block table [B, max_pages]: pages
    in random order, unused pages and the slots past each sequence's end filled with NaN."""
    B, HKV, S, D = k.shape
    max_pages = -(-S // PAGE)
    P = B * max_pages + extra_pages
    order = rng.permutation(P)
    kc = np.full((P, PAGE, HKV, D), np.nan, np.float32)
    vc = kc.copy()
    table = np.zeros((B, max_pages), np.int32)
    for b in range(B):
        for j in range(max_pages):
            page = table[b, j] = order[b * max_pages + j]
            n = max(0, min(PAGE, int(seqlens[b]) - j * PAGE))
            kc[page, :n] = np.transpose(k[b, :, j * PAGE:j * PAGE + n], (1, 0, 2))
            vc[page, :n] = np.transpose(v[b, :, j * PAGE:j * PAGE + n], (1, 0, 2))
    return kc, vc, table


def run(B=2, HQ=8, HKV=2, LQ=1, D=64, S=100, seqlens=None, page=0, splits=None, BN=32, seed=None):
    """Launch on fresh random inputs (the cache past each sequence's length is NaN); return
    (relative error of out, max abs error of the log-sum-exp, 0 with one split) against the float64
    reference."""
    rng = np.random.default_rng(seed)
    if seqlens is None:
        seqlens = rng.integers(LQ, S + 1, B)
    seqlens = np.asarray(seqlens, np.int32)
    q = tile.asarray(rng.standard_normal((B, HQ, LQ, D)), bf16)
    kf = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16).numpy()
    vf = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16).numpy()
    ref, ref_lse = reference(q.numpy(), kf, vf, seqlens)
    for b in range(B):                                      # never to be read
        kf[b, :, seqlens[b]:] = np.nan
        vf[b, :, seqlens[b]:] = np.nan
    table = None
    if page:
        kf, vf, table = paginate(kf, vf, seqlens, page, rng)
    k, v = tile.asarray(kf, bf16), tile.asarray(vf, bf16)
    out, lse = decode_attention(q, k, v, seqlens, block_table=table, splits=splits, BN=BN, return_lse=True)
    got = out.numpy().astype(np.float64)
    assert np.isfinite(got).all(), "some outputs were not written (or NaN leaked in)"
    lse_err = 0.0
    if lse is not None:
        lse_err = float(np.abs(lse.numpy().reshape(ref_lse.shape) - ref_lse).max())
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), lse_err


if __name__ == "__main__":
    for LQ, page in ((1, 0), (4, 0), (1, 16), (3, 64)):
        err, lse_err = run(B=3, HQ=8, HKV=2, LQ=LQ, D=64, S=150, page=page, splits=3)
        print(f"decode LQ={LQ} GQA 8/2 S<=150 {'paged ' + str(page) if page else 'contiguous'} on "
              f"{tile.current_target()}: relative error {err:.2e}, lse error {lse_err:.1e}")
        assert err < 2e-2 and lse_err < 1e-2, (err, lse_err)
