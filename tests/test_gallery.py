"""Every gallery kernel runs (in the interpreter here) on fresh random inputs and matches its float64
NumPy reference; each example's own `run` poisons the outputs and checks every element was written.

Tolerances: bf16 outputs and bf16-rounded intermediates give relative errors near 2^-8, so 1e-2
(2e-2 where two bf16 roundings chain: attention's P and MoE's hidden activations). The decode
kernels' log-sum-exp is f32 arithmetic on bf16 inputs: within 1e-4 of the float64 one."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")


@pytest.mark.parametrize("act,bias", [("none", False), ("relu", True), ("gelu", True), ("silu", False)])
def test_gemm_ragged(act, bias):
    assert load("gemm").run(M=100, N=72, K=80, act=act, with_bias=bias) < 1e-2


def test_gemm_persistent():
    """The persistent form (a few blocks looping over all output tiles) in the interpreter."""
    assert load("gemm").run(M=70, N=50, K=40, BM=32, BN=16, BK=16, PERSISTENT=True, sms=3, act="relu") < 1e-2


def test_gemm_other_tiles():
    assert load("gemm").run(M=33, N=47, K=70, BM=32, BN=16, BK=16, act="none", with_bias=False) < 1e-2


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_attention(D, causal):
    assert load("attention").run(B=1, H=4, HKV=2, S=70, D=D, causal=causal, BM=32, BN=32) < 2e-2


def test_attention_mha_batch():
    assert load("attention").run(B=2, H=2, HKV=2, S=45, D=64, causal=True, BM=16, BN=32) < 2e-2


@pytest.mark.parametrize("wtype", ["int3", "int4", "uint5", "int6", "f6e3m2", "f4e2m1", "uint1", "int8"])
def test_lowbit_gemm(wtype):
    assert load("lowbit_gemm").run(M=5, N=64, K=128, wtype=wtype, G=32) < 1e-2


def test_lowbit_gemm_group64():
    assert load("lowbit_gemm").run(M=9, N=40, K=128, wtype="int3", G=64) < 1e-2


@pytest.mark.parametrize("round_tokens", [False, True])
def test_moe(round_tokens):
    err, blocks = load("moe").run(T=40, round_tokens=round_tokens)
    assert err < 2e-2
    assert 7 not in set(blocks.tolist()), "expert 7 should receive no tokens"


# ---------------------------------------------------------------- serving attention
# Decode: the cache past each sequence's length is NaN (never to be read), outputs are NaN-poisoned,
# and the lengths are ragged: 1, primes, multiples of the tile and of a split, one past a page.
@pytest.mark.parametrize("LQ", [1, 4])
def test_decode_split_kv(LQ):
    """Split-KV with 5 splits of 32 positions: with LQ=4 the last split of the 65- and 97-long
    sequences has keys only for the last query token (the others' rows there are fully masked and
    must weigh 0 in the combine); the 4- and 1-long sequences leave whole splits without a key."""
    lens = [65, 97, 128, max(LQ, 1), 4 + LQ]
    err, lse_err = load("decode_attention").run(B=5, HQ=8, HKV=2, LQ=LQ, D=64, S=150, seqlens=lens, splits=5, BN=32)
    assert err < 2e-2 and lse_err < 1e-4, (err, lse_err)


def test_decode_one_split_writes_the_output():
    """splits = 1: the kernel writes bf16 itself, no combine (a length-1 sequence among them)."""
    err, _ = load("decode_attention").run(B=3, HQ=4, HKV=4, LQ=1, D=128, S=100, seqlens=[1, 53, 100], splits=1, BN=32)
    assert err < 2e-2


def test_decode_mqa_row_blocks():
    """MQA, 16 query heads x 5 tokens = 80 packed rows: two row blocks of 64 (the second 16 live)."""
    err, lse_err = load("decode_attention").run(B=2, HQ=16, HKV=1, LQ=5, D=64, S=70, seqlens=[70, 5], splits=2, BN=32)
    assert err < 2e-2 and lse_err < 1e-4


@pytest.mark.parametrize("page,BN", [(16, 32), (64, 32), (32, 32)])
def test_paged_decode(page, BN):
    """Paged cache in random page order, NaN in unused pages and past each sequence's end; pages
    smaller than, larger than and equal to the K/V tile; lengths at page boundaries +- 1."""
    lens = [page - 1, page, page + 1, 2 * page + 3][: 4]
    err, lse_err = load("decode_attention").run(B=4, HQ=8, HKV=2, LQ=2, D=64, S=2 * page + 3, seqlens=lens,
                                                page=page, splits=2, BN=BN)
    assert err < 2e-2 and lse_err < 1e-4, (err, lse_err)


def test_num_splits_fills_the_gpu():
    d = load("decode_attention")
    for B, HKV, S in [(16, 8, 4096), (4, 8, 16384), (64, 8, 1024), (1, 1, 1 << 17), (256, 8, 512)]:
        s = d.num_splits(B, HKV, S)
        slots = 132 * d.blocks_per_sm(128, 64, 3)
        assert 1 <= s <= 256 and B * HKV * s >= 0.85 * slots or s == 1, (B, HKV, S, s)
        assert S // s >= 4 * 64                            # each split keeps its pipeline busy


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("D", [64, 128])
def test_varlen_attention(causal, D):
    """Packed ragged sequences: 1, a prime, an empty one, a whole tile, one past two tiles."""
    err = load("varlen_attention").run(lengths=(1, 37, 0, 64, 65), H=4, HKV=2, D=D, causal=causal, BM=32, BN=32)
    assert err < 2e-2
