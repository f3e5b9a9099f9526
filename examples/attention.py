"""Prefill attention forward (FlashAttention-2 structure with some of FlashAttention-3's Hopper
techniques): online softmax over key blocks, causal or not, grouped-query heads (H query heads share
HKV key/value heads: MHA, GQA, MQA), head dims 64, 128 and 256, ragged sequence lengths, and
optionally the log-sum-exp of every row (for a backward pass or for combining splits).

Q: [B, H, S, D], K and V: [B, HKV, S, D], O: [B, H, S, D], all bf16; statistics in f32;
LSE (attention_lse): [B, H, S] f32, the natural log of each row's sum of exp(scores * sm_scale).

What the kernel does on Hopper (sm_90a):
* one block of BM query rows; BM = 128 with num_warps = 8 gives each of the two warpgroups 64 rows
  (one wgmma m64 row block each), the FA3 tile (BN = 128 for D <= 128, 64 for D = 256);
* K and V stream through a `stages`-deep ring of TMA copies completing on mbarriers (the loop's
  loads are pipelined by the compiler: `copy = "tma"` in the IR);
* q @ k^T is an SS wgmma (both from shared memory), p @ v an RS wgmma (p from registers);
* causal: the key blocks wholly below the diagonal run a loop without any mask; only the diagonal
  block(s) and the ragged tail (S not a multiple of BN) compare and select. The row blocks with the
  most keys are started first (the grid's last block first);
* OVERLAP = True: the loop is rotated so that the scores of the next key block (an SS wgmma) are
  issued before this block's softmax, and the tensor cores work while the exp2s run (FA3's
  intra-warpgroup pipelining); the compiler defers that wgmma's wait to the first use of its result.

* WS = True (Hopper): a producer warpgroup issues the K/V TMA copies and the num_warps consumer
  warps (their registers raised by setmaxnreg) compute (passes/warp_specialize.py). The key blocks run
  in ONE loop, the mask under a block-uniform branch taken from `free` on: the pass splits one
  pipelined loop, and one loop keeps one producer schedule and one stage/phase count (two loops one
  after the other would each need their own split, or a split around both with a counter carried
  from one to the other). The results are the same bits as the two-loop kernel's.
* PINGPONG = True (with WS, BM = 128, num_warps = 8): the two consumer warpgroups take turns issuing
  their wgmmas (named barriers around each iteration's wgmma issues: passes/pingpong.py), so that one's
  softmax runs while the other's GEMMs do (FA3's inter-warpgroup overlap). Same values. A turn runs
  from one block's p @ v to the next block's q @ k^T (FA3's window: the softmax outside every turn),
  where the pass can prove it safe (`pingpong_window = "between"` in the IR); measure before relying
  on a gain.
* the softmax costs about one instruction per score per step: the row max is taken on the raw
  scores and the scale fused into the exponent's subtraction (`tile.fma`), `exp2(..., ftz=True)` is
  one MUFU.EX2, p goes to bf16 two values per cvt, and the output divides once per row. The key loop
  is ~420 SASS instructions per thread per 128-key block (it was ~1220: non-ftz exp2, per-value NaN
  rebuilds of the bf16 rounding and signed-zero fix-ups of the max); sm_scale must be positive.

What FlashAttention-3 has that this kernel does not (yet): persistent blocks and fp8.

Run: python examples/attention.py
"""
import numpy as np

import tile
from tile import bf16, f32

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
NEG_INF = float("-inf")


@tile.inline
def online_softmax(s, v, m_i, l_i, acc, qk_scale):
    """Fold one key block into the running row max m_i, row sum l_i and output acc: s holds the block's
    raw scores q k^T (-inf where masked; every row has seen a key by its first block, so m_new is
    finite), v its values; qk_scale = sm_scale * log2(e) > 0 takes them to the log2 domain. The row
    max is taken before scaling (the same number: rounding x * qk_scale keeps the order) and the
    scaling is fused into the exponent's subtraction (one fma per score, as FlashAttention does)."""
    m_new = tile.maximum(m_i, tile.max(s, axis=1) * qk_scale)
    # ftz: a p below 2^-126 is +0 instead of a subnormal -- invisible beside the row's 1, and one
    # instruction per exponential instead of four
    p = tile.exp2(tile.fma(s, qk_scale, -m_new[:, None]), ftz=True)
    alpha = tile.exp2(m_i - m_new, ftz=True)
    l_i = l_i * alpha + tile.sum(p, axis=1)
    acc = acc * alpha[:, None] + tile.dot(p.astype(bf16), v)
    return m_new, l_i, acc


@tile.inline
def mask_scores(s, n, last, S, BN, CAUSAL):
    """s with -inf at the keys a row may not see: past S, and (causal) past the row's own position."""
    cols = n + tile.arange(0, BN)
    if CAUSAL:
        valid = cols[None, :] <= last[:, None]             # (one compare: last < S)
    else:
        valid = cols[None, :] < S
    return tile.where(valid, s, NEG_INF)


@tile.inline
def attention_rows(Q, K, V, O, LSE, sm_scale, D, BM, BN, CAUSAL, STAGES, OVERLAP, WS, PINGPONG, HAS_LSE):
    """One block: query rows bm*BM .. bm*BM+BM-1 of head (b, h) against all the keys they may see."""
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
    last = rows
    if CAUSAL:
        hi = min(S, (bm + 1) * BM)                         # keys past the block's last row are all masked
        free = bm * BM // BN * BN                          # keys below every row of the block (bm*BM < S)
        last = tile.minimum(rows, S - 1)                   # each row's last visible key
    else:
        hi = S
        free = S // BN * BN                                # whole key blocks: nothing to mask
    if WS:
        # warp-specialized (Hopper): ONE pipelined loop over every visible key block, so that a producer
        # warpgroup issues all of K/V's TMA copies in one schedule; the mask is computed only for the
        # blocks from `free` on (a block-uniform branch), as the second loop below does
        if OVERLAP:
            k0 = tile.load(K, (b, hk, 0, 0), (BN, D))
            s = tile.dot(q, k0.T)
            for n in tile.range(0, hi, BN, stages=STAGES, warp_specialize=True, pingpong=PINGPONG):
                if n >= free:                              # before the next block's wgmma: a branch between
                    s = mask_scores(s, n, last, S, BN, CAUSAL)   # it and its use would end its deferred wait
                k = tile.load(K, (b, hk, n + BN, 0), (BN, D))
                v = tile.load(V, (b, hk, n, 0), (BN, D))
                s_next = tile.dot(q, k.T)
                m_i, l_i, acc = online_softmax(s, v, m_i, l_i, acc, qk_scale)
                s = s_next
        else:
            for n in tile.range(0, hi, BN, stages=STAGES, warp_specialize=True, pingpong=PINGPONG):
                k = tile.load(K, (b, hk, n, 0), (BN, D))
                v = tile.load(V, (b, hk, n, 0), (BN, D))
                s = tile.dot(q, k.T)
                if n >= free:
                    s = mask_scores(s, n, last, S, BN, CAUSAL)
                m_i, l_i, acc = online_softmax(s, v, m_i, l_i, acc, qk_scale)
    elif OVERLAP:
        # rotated: the scores of block n+1 are issued before the softmax of block n (the wgmma runs
        # while the exp2s do); the last iteration's scores (of keys past hi) are not used
        k0 = tile.load(K, (b, hk, 0, 0), (BN, D))
        s = tile.dot(q, k0.T)
        for n in tile.range(0, free, BN, stages=STAGES):
            k = tile.load(K, (b, hk, n + BN, 0), (BN, D))
            v = tile.load(V, (b, hk, n, 0), (BN, D))
            s_next = tile.dot(q, k.T)
            m_i, l_i, acc = online_softmax(s, v, m_i, l_i, acc, qk_scale)
            s = s_next
        for n in tile.range(free, hi, BN, stages=STAGES):  # the diagonal block(s) and the ragged tail
            k = tile.load(K, (b, hk, n + BN, 0), (BN, D))
            v = tile.load(V, (b, hk, n, 0), (BN, D))
            s_next = tile.dot(q, k.T)
            m_i, l_i, acc = online_softmax(mask_scores(s, n, last, S, BN, CAUSAL), v, m_i, l_i, acc, qk_scale)
            s = s_next
    else:
        for n in tile.range(0, free, BN, stages=STAGES):   # K/V tiles through a TMA ring
            k = tile.load(K, (b, hk, n, 0), (BN, D))
            v = tile.load(V, (b, hk, n, 0), (BN, D))
            m_i, l_i, acc = online_softmax(tile.dot(q, k.T), v, m_i, l_i, acc, qk_scale)
        for n in tile.range(free, hi, BN, stages=STAGES):  # the diagonal block(s) and the ragged tail
            k = tile.load(K, (b, hk, n, 0), (BN, D))
            v = tile.load(V, (b, hk, n, 0), (BN, D))
            s = mask_scores(tile.dot(q, k.T), n, last, S, BN, CAUSAL)
            m_i, l_i, acc = online_softmax(s, v, m_i, l_i, acc, qk_scale)
    # one division per row, then a multiply per value (64 IEEE divisions per thread cost ~7% of a
    # 2k-key row block)
    tile.store(O, (b, h, bm * BM, 0), (acc * (1.0 / l_i)[:, None]).astype(bf16))
    if HAS_LSE:
        tile.store(LSE, (b, h, bm * BM), (m_i + tile.log2(l_i)) * LN2)


@tile.kernel
def attention(Q: tile.Tensor[bf16, 4], K: tile.Tensor[bf16, 4], V: tile.Tensor[bf16, 4], O: tile.Tensor[bf16, 4],
              sm_scale: float, D: tile.constexpr = 64, BM: tile.constexpr = 64, BN: tile.constexpr = 64,
              CAUSAL: tile.constexpr = False, STAGES: tile.constexpr = 2, OVERLAP: tile.constexpr = False,
              WS: tile.constexpr = False, PINGPONG: tile.constexpr = False):
    attention_rows(Q, K, V, O, O, sm_scale, D, BM, BN, CAUSAL, STAGES, OVERLAP, WS, PINGPONG, False)


@tile.kernel
def attention_lse(Q: tile.Tensor[bf16, 4], K: tile.Tensor[bf16, 4], V: tile.Tensor[bf16, 4],
                  O: tile.Tensor[bf16, 4], LSE: tile.Tensor[f32, 3], sm_scale: float, D: tile.constexpr = 64,
                  BM: tile.constexpr = 64, BN: tile.constexpr = 64, CAUSAL: tile.constexpr = False,
                  STAGES: tile.constexpr = 2, OVERLAP: tile.constexpr = False, WS: tile.constexpr = False,
                  PINGPONG: tile.constexpr = False):
    """attention, and LSE[b, h, i] = log(sum_j exp(q_i . k_j * sm_scale)) over the keys row i sees."""
    attention_rows(Q, K, V, O, LSE, sm_scale, D, BM, BN, CAUSAL, STAGES, OVERLAP, WS, PINGPONG, True)


def reference(q, k, v, causal, sm_scale, lse=False):
    """float64 reference (and, with lse, each row's natural log-sum-exp); k, v have HKV heads, each
    shared by H // HKV query heads."""
    B, H, S, D = q.shape
    rep = H // k.shape[1]
    k = np.repeat(k.astype(np.float64), rep, axis=1)
    v = np.repeat(v.astype(np.float64), rep, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) * sm_scale
    if causal:
        s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    den = p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", p / den, v)
    return (out, (m + np.log(den))[..., 0]) if lse else out


def run(B=1, H=4, HKV=2, S=100, D=64, causal=False, BM=64, BN=64, STAGES=2, OVERLAP=False, WS=False, num_warps=4,
        lse=False, sm_scale=None, seed=None, PINGPONG=False):
    """Launch on fresh random inputs; return the relative error against the float64 reference (with
    lse: also the largest absolute error of the log-sum-exp)."""
    rng = np.random.default_rng(seed)
    q = tile.asarray(rng.standard_normal((B, H, S, D)), bf16)
    k = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16)
    v = tile.asarray(rng.standard_normal((B, HKV, S, D)), bf16)
    o = tile.asarray(np.full((B, H, S, D), np.nan), bf16)
    sm_scale = 1.0 / np.sqrt(D) if sm_scale is None else sm_scale
    grid = (tile.cdiv(S, BM), B * H)
    consts = dict(D=D, BM=BM, BN=BN, CAUSAL=causal, STAGES=STAGES, OVERLAP=OVERLAP, WS=WS, PINGPONG=PINGPONG,
                  num_warps=num_warps)
    if lse:
        L = tile.asarray(np.full((B, H, S), np.nan), f32)
        attention_lse[grid](q, k, v, o, L, sm_scale, **consts)
    else:
        attention[grid](q, k, v, o, sm_scale, **consts)
    ref = reference(q.numpy(), k.numpy(), v.numpy(), causal, sm_scale, lse=lse)
    ref, ref_lse = ref if lse else (ref, None)
    out = o.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    if not lse:
        return err
    got = L.numpy().astype(np.float64)
    assert np.isfinite(got).all(), "some log-sum-exps were not written"
    return err, float(np.abs(got - ref_lse).max())


if __name__ == "__main__":
    for D in (64, 128):
        for causal in (False, True):
            err = run(S=100, D=D, causal=causal)
            print(f"attention D={D} causal={causal!s:5s} GQA 4/2 S=100 on {tile.current_target()}: "
                  f"relative error {err:.2e}")
            assert err < 2e-2, err
    err, lse_err = run(S=77, D=128, causal=True, BM=128, BN=64, OVERLAP=True, num_warps=8, lse=True)
    print(f"attention_lse D=128 causal, BM=128 (2 warpgroups), rotated loop: relative error {err:.2e}, "
          f"log-sum-exp max abs error {lse_err:.2e}")
    assert err < 2e-2 and lse_err < 2e-2, (err, lse_err)
    err, lse_err = run(S=77, D=128, causal=True, BM=128, BN=64, WS=True, num_warps=8, lse=True)
    print(f"attention_lse D=128 causal, warp-specialized (WS): relative error {err:.2e}, "
          f"log-sum-exp max abs error {lse_err:.2e}")
    assert err < 2e-2 and lse_err < 2e-2, (err, lse_err)
