"""Every gallery kernel runs (in the interpreter here) on fresh random inputs and matches its float64
NumPy reference; each example's own `run` poisons the outputs and checks every element was written.

Tolerances: bf16 outputs and bf16-rounded intermediates give relative errors near 2^-8, so 1e-2
(2e-2 where two bf16 roundings chain: attention's P and MoE's hidden activations)."""
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
