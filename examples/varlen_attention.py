"""Variable-length prefill attention (FlashAttention's varlen API): a batch of sequences of different
lengths packed one after another, causal or not, grouped-query heads.

    q        [total, H, D]      sequence b holds rows cu_seqlens[b] .. cu_seqlens[b+1]-1
    k, v     [total, HKV, D]    (H // HKV query heads share each key/value head)
    cu_seqlens [B + 1] int32    0 = cu_seqlens[0] <= cu_seqlens[1] <= ... = total
    out      [total, H, D]      attention of each sequence to itself (causal: row i sees keys <= i)

Grid (query blocks of the longest sequence, H, B): a block whose rows start past its sequence's end
exits at once (causal: the longest rows are taken first). Keys are gathered by row index, -1 (zeros)
past the sequence's end, so a block never reads the next sequence. The online softmax is the
gallery's prefill one (examples/attention.py): scores scaled by sm_scale * log2(e), exp2.

Run: python examples/varlen_attention.py
"""
import math

import numpy as np

import tile
from tile import bf16, f32, i32

LOG2E = 1.4426950408889634
NEG_INF = float("-inf")


@tile.kernel
def varlen_attention(Q: tile.Tensor[bf16, 2], K: tile.Tensor[bf16, 2], V: tile.Tensor[bf16, 2],
                     cu_seqlens: tile.Tensor[i32, 1], O: tile.Tensor[bf16, 2], sm_scale: float,
                     D: tile.constexpr = 128, BM: tile.constexpr = 64, BN: tile.constexpr = 64,
                     CAUSAL: tile.constexpr = False, STAGES: tile.constexpr = 2):
    """Q/O: [total, H * D] views of [total, H, D]; K/V: [total, HKV * D] views of [total, HKV, D]."""
    bm = tile.block_id(0)
    if CAUSAL:
        bm = tile.num_blocks(0) - 1 - bm                   # the longest rows first (a shorter tail)
    h = tile.block_id(1)
    H = tile.num_blocks(1)
    b = tile.block_id(2)
    hk = h // (H // (K.shape[1] // D))                     # the shared key/value head of this query head
    start = cu_seqlens[b]
    L = cu_seqlens[b + 1] - start
    if bm * BM < L:                                        # else: past this sequence's end, nothing to do
        qpos = bm * BM + tile.arange(0, BM)
        live = tile.broadcast_to((qpos < L)[:, None], (BM, D))
        q = tile.load(Q, (start + bm * BM, h * D), (BM, D), mask=live)
        m_i = tile.full((BM,), NEG_INF, f32)                # running row max (log2 domain)
        l_i = tile.zeros((BM,), f32)                        # running row sum
        acc = tile.zeros((BM, D), f32)
        qk_scale = sm_scale * LOG2E
        hi = L
        last = qpos
        if CAUSAL:
            hi = min(L, (bm + 1) * BM)                      # keys past the block's last row are all masked
            last = tile.minimum(qpos, L - 1)                # each row's last visible key
        for n in tile.range(0, hi, BN, stages=STAGES):
            kpos = n + tile.arange(0, BN)
            rows = tile.where(kpos < L, start + kpos, -1)   # -1 reads zeros: never the next sequence
            k = tile.gather(K, rows, hk * D, D)
            v = tile.gather(V, rows, hk * D, D)
            s = tile.dot(q, k.T) * qk_scale
            valid = kpos[None, :] < L
            if CAUSAL:
                valid = kpos[None, :] <= last[:, None]      # (one compare: last < L)
            s = tile.where(valid, s, NEG_INF)
            m_new = tile.maximum(m_i, tile.max(s, axis=1))
            p = tile.exp2(s - m_new[:, None], ftz=True)               # every row sees key 0 of the first tile: m_new finite
            alpha = tile.exp2(m_i - m_new, ftz=True)
            l_i = l_i * alpha + tile.sum(p, axis=1)
            acc = acc * alpha[:, None] + tile.dot(p.astype(bf16), v)
            m_i = m_new
        tile.store(O, (start + bm * BM, h * D), (acc * (1.0 / l_i)[:, None]).astype(bf16), mask=live)


def varlen_attn(q, k, v, cu_seqlens, max_seqlen=None, causal=False, sm_scale=None, BM=64, BN=64, STAGES=2,
                num_warps=4, out=None):
    """out [total, H, D] bf16 for packed q [total, H, D], k/v [total, HKV, D] (NumPy/tile.Array or torch).
    BM = 128 wants num_warps = 8 (two warpgroups of 64 rows: no register spills)."""
    total, H, D = q.shape
    HKV = k.shape[1]
    if max_seqlen is None:
        cu = np.asarray(cu_seqlens.cpu() if hasattr(cu_seqlens, "cpu") else cu_seqlens)
        max_seqlen = int(np.diff(cu).max()) if len(cu) > 1 else 0
    B = len(cu_seqlens) - 1
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    view = _view
    if out is None:
        out = _empty(q, (total, H * D))
    grid = (max(1, -(-max_seqlen // BM)), H, B)
    varlen_attention[grid](view(q, (total, H * D)), view(k, (total, HKV * D)), view(v, (total, HKV * D)),
                           cu_seqlens, out, sm_scale, D=D, BM=BM, BN=BN, CAUSAL=causal, STAGES=STAGES,
                           num_warps=num_warps)
    return view(out, (total, H, D))


def _view(x, shape):
    """x in another shape: a view for torch and NumPy arrays, a copy of a tile.Array."""
    if isinstance(x, tile.Array):
        return tile.from_codes(x.codes().reshape(shape), x.dtype)
    return x.reshape(shape)


def _empty(like, shape):
    if type(like).__module__.startswith("torch"):
        import torch
        return torch.empty(shape, dtype=torch.bfloat16, device=like.device)
    return tile.asarray(np.full(shape, np.nan), bf16)


def reference(q, k, v, cu_seqlens, causal):
    """float64, sequence by sequence."""
    total, H, D = q.shape
    rep = H // k.shape[1]
    out = np.full((total, H, D), np.nan)
    for b in range(len(cu_seqlens) - 1):
        a, e = int(cu_seqlens[b]), int(cu_seqlens[b + 1])
        if a == e:
            continue
        qb = q[a:e].astype(np.float64)
        kb = np.repeat(k[a:e].astype(np.float64), rep, axis=1)
        vb = np.repeat(v[a:e].astype(np.float64), rep, axis=1)
        s = np.einsum("qhd,khd->hqk", qb, kb) / math.sqrt(D)
        if causal:
            s = np.where(np.tril(np.ones((e - a, e - a), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[a:e] = np.einsum("hqk,khd->qhd", p / p.sum(-1, keepdims=True), vb)
    return out


def run(lengths=(1, 37, 64, 100), H=4, HKV=2, D=64, causal=False, BM=32, BN=32, num_warps=4, seed=None):
    """Launch on fresh random inputs; return the relative error against the float64 reference."""
    rng = np.random.default_rng(seed)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(cu[-1])
    q = tile.asarray(rng.standard_normal((total, H, D)), bf16)
    k = tile.asarray(rng.standard_normal((total, HKV, D)), bf16)
    v = tile.asarray(rng.standard_normal((total, HKV, D)), bf16)
    out = varlen_attn(q, k, v, cu, causal=causal, BM=BM, BN=BN, num_warps=num_warps)
    ref = reference(q.numpy(), k.numpy(), v.numpy(), cu, causal)
    got = out.numpy().astype(np.float64)
    assert np.isfinite(got).all(), "some outputs were not written"
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


if __name__ == "__main__":
    for D in (64, 128):
        for causal in (False, True):
            err = run(lengths=(1, 37, 64, 100), D=D, causal=causal)
            print(f"varlen attention D={D} causal={causal!s:5s} lengths 1,37,64,100 GQA 4/2 on "
                  f"{tile.current_target()}: relative error {err:.2e}")
            assert err < 2e-2, err
