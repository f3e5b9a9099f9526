"""FlashAttention-2 style forward pass: online softmax over key blocks, causal or not, grouped-query
heads (H query heads share HKV key/value heads), head dims 64 and 128, ragged sequence lengths.

Q: [B, H, S, D], K and V: [B, HKV, S, D], O: [B, H, S, D], all bf16; statistics in f32.
Run: python examples/attention.py
"""
import numpy as np

import tile
from tile import bf16, f32

LOG2E = 1.4426950408889634
NEG_INF = float("-inf")


@tile.kernel
def attention(Q: tile.Tensor[bf16, 4], K: tile.Tensor[bf16, 4], V: tile.Tensor[bf16, 4], O: tile.Tensor[bf16, 4],
              sm_scale: float, D: tile.constexpr = 64, BM: tile.constexpr = 64, BN: tile.constexpr = 64,
              CAUSAL: tile.constexpr = False):
    H = Q.shape[1]
    S = Q.shape[2]
    HKV = K.shape[1]
    bm = tile.block_id(0)
    if CAUSAL:
        bm = tile.num_blocks(0) - 1 - bm                   # the longest rows first (a shorter tail)
    bh = tile.block_id(1)
    b = bh // H
    h = bh % H
    hk = h // (H // HKV)                                   # the shared key/value head of this query head
    q = tile.load(Q, (b, h, bm * BM, 0), (BM, D))          # a 2-D tile of a 4-D tensor
    m_i = tile.full((BM,), NEG_INF, f32)                   # running row max (log2 domain)
    l_i = tile.zeros((BM,), f32)                           # running row sum
    acc = tile.zeros((BM, D), f32)
    qk_scale = sm_scale * LOG2E
    rows = bm * BM + tile.arange(0, BM)
    hi = S
    last = rows
    if CAUSAL:
        hi = min(S, (bm + 1) * BM)                         # keys past the block's last row are all masked
        last = tile.minimum(rows, S - 1)                   # each row's last visible key
    for n in tile.range(0, hi, BN, stages=2):               # K/V tiles double-buffered
        k = tile.load(K, (b, hk, n, 0), (BN, D))
        v = tile.load(V, (b, hk, n, 0), (BN, D))
        s = tile.dot(q, k.T) * qk_scale
        cols = n + tile.arange(0, BN)
        valid = cols[None, :] < S
        if CAUSAL:
            valid = cols[None, :] <= last[:, None]         # (one compare: last < S)
        s = tile.where(valid, s, NEG_INF)
        m_new = tile.maximum(m_i, tile.max(s, axis=1))
        p = tile.exp2(s - m_new[:, None])
        alpha = tile.exp2(m_i - m_new)
        l_i = l_i * alpha + tile.sum(p, axis=1)
        acc = acc * alpha[:, None] + tile.dot(p.astype(bf16), v)
        m_i = m_new
    tile.store(O, (b, h, bm * BM, 0), (acc / l_i[:, None]).astype(bf16))


def reference(q, k, v, causal, sm_scale):
    """float64 reference; k, v have HKV heads, each shared by H // HKV query heads."""
    B, H, S, D = q.shape
    rep = H // k.shape[1]
    k = np.repeat(k.astype(np.float64), rep, axis=1)
    v = np.repeat(v.astype(np.float64), rep, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) * sm_scale
    if causal:
        s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v)


def run(B=1, H=4, HKV=2, S=100, D=64, causal=False, BM=64, BN=64, seed=None):
    """Launch on fresh random inputs; return the relative error against the float64 reference."""
    rng = np.random.default_rng(seed)
    q = tile.asarray(rng.standard_normal((B, H, S, D)), bf16)
    k = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16)
    v = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16)
    o = tile.asarray(np.full((B, H, S, D), np.nan), bf16)
    sm_scale = 1.0 / np.sqrt(D)
    attention[(tile.cdiv(S, BM), B * H)](q, k, v, o, sm_scale, D=D, BM=BM, BN=BN, CAUSAL=causal)
    ref = reference(q.numpy(), k.numpy(), v.numpy(), causal, sm_scale)
    out = o.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


if __name__ == "__main__":
    for D in (64, 128):
        for causal in (False, True):
            err = run(S=100, D=D, causal=causal)
            print(f"attention D={D} causal={causal!s:5s} GQA 4/2 S=100 on {tile.current_target()}: "
                  f"relative error {err:.2e}")
            assert err < 2e-2, err
