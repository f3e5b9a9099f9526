"""Verifier fuzzing: every gallery kernel's IR after every sm_90a pass, mutated (numbers, dtypes, op
names, `atom` / `vec` / `copy` / `warps` and other attributes, layouts swapped between values, operands
swapped or replaced), must give a located ParseError / VerifyError / TileError or compile to PTX that
ptxas assembles -- never an internal error, never another exception (tests/fuzz/verifier.py).

A deterministic subset (pinned seeds) plus fresh random mutations each run within a time budget;
a failure names the kernel, the pass, the seed and the edit (replay: `mutate(text, Random(seed))`).
"""
import functools
import os
import random
import shutil
import time
import traceback
from pathlib import Path

import pytest
from helpers import signature_kwargs

from fuzz import verifier as V

GALLERY = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
BUDGET_S = float(os.environ.get("TILEC_VERIFIER_FUZZ_S", "20"))
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")


@functools.lru_cache(maxsize=None)
def gallery_ir():
    """[(kernel, pass, text)] for every gallery kernel after every sm_90a pass."""
    from tile import cli
    from tile.ir.parser import parse_module
    from tile.kernel import Kernel
    from tile.passes.manager import run_pipeline
    out = []
    for path in GALLERY:
        mod = cli.load_file(str(path))
        for k in [v for v in vars(mod).values() if isinstance(v, Kernel)]:
            kw = signature_kwargs(k)
            front = k.compile(target="cpu", **kw).ir
            _, ir_after = run_pipeline(parse_module(front), "sm_90a")
            for name, text in ir_after.items():
                out.append((k.name, name, text))
    return out


def _one(kernel, pname, text, seed, kind=None):
    new, desc = V.mutate(text, random.Random(seed), kind)
    try:
        return V.check(new, "sm_90a")
    except Exception as e:         # noqa: BLE001 - any violation, with the replay information
        tb = "".join(traceback.format_exception_only(type(e), e)).strip()
        if not isinstance(e, AssertionError):
            tb += "\n" + "".join(traceback.format_tb(e.__traceback__)[-4:])
        raise AssertionError(f"{kernel} after {pname}, seed {seed}, edit {desc}:\n{tb[:3000]}") from None


# Pinned (kernel index, pass, seed, kind) cases: the kinds that hit instruction selection's attributes
# on the kernels that have them, at fixed seeds. Regressions found by the fuzzer are added here.
PINNED = [(kind, 1) for kind in V.KINDS]


@needs_ptxas
@pytest.mark.parametrize("kind,seed", PINNED, ids=[f"{k}-{s}" for k, s in PINNED])
def test_pinned_mutations(kind, seed):
    irs = gallery_ir()
    rnd = random.Random(seed * 7919 + V.KINDS.index(kind))
    k, p, t = irs[rnd.randrange(len(irs))]
    _one(k, p, t, rnd.randrange(2 ** 32), kind)


REGRESSIONS = []     # (kernel, pass, seed, kind) found by the random part; see the report


@needs_ptxas
@pytest.mark.parametrize("case", REGRESSIONS or [None])
def test_regressions(case):
    if case is None:
        pytest.skip("none yet")
    kernel, pname, seed, kind = case
    text = {(k, p): t for k, p, t in gallery_ir()}[(kernel, pname)]
    _one(kernel, pname, text, seed, kind)


@needs_ptxas
def test_random_mutations():
    """Fresh random edits for BUDGET_S seconds (TILEC_VERIFIER_FUZZ_S)."""
    irs = gallery_ir()
    base = random.SystemRandom().randrange(2 ** 32)
    t0 = time.time()
    counts = {}
    i = 0
    while time.time() - t0 < BUDGET_S:
        k, p, t = irs[(base + i) % len(irs)]
        r = _one(k, p, t, base + i)
        counts[r] = counts.get(r, 0) + 1
        i += 1
    print(f"verifier fuzz: {i} mutations from seed {base}: {counts}")
    assert i > 0
