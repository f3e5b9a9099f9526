"""FA3's ping-pong of the two consumer warpgroups (issue 9): examples/attention.py with WS=True,
PINGPONG=True; passes/pingpong.py records `pingpong_barrier` on the consumers' key loop and
codegen/lower_pingpong.py issues `bar.sync` / `bar.arrive` around each iteration's wgmma issues.

CPU: the loop attributes after the pass and their round trip; the verifier, the front end and the
pass refusing what cannot apply (a located CompileError without warp_specialize, a located
PerformanceWarning on sm_80 and with one consumer warpgroup); the turn's window (FA3's "between":
each warpgroup's turn from p v of one iteration to q k^T of the next, its softmax outside) and the PTX
(the head start, the drain, the first turn before the loop and the last after it, in the loop one
sync before p v's fence and one arrive after q k^T's commit) with ptxas 0 spills and no warning; the interpreter giving the same bits with and without the attribute.
GPU (`-m gpu`): against float64 at ragged shapes, causal and not, plain and rotated (OVERLAP)."""
import functools
import re

import numpy as np
import pytest

import tile
from tile import bf16, f32, compiler
from helpers import LazyExample


ATTN = LazyExample("attention")
T4 = tile.Tensor[bf16, 4]
TOL, LSE_TOL = 2e-2, 1e-3
PP = dict(BM=128, num_warps=8, WS=True, PINGPONG=True)     # the FA3 tile, taking turns


def _lower(target="sm_90a", **kw):
    """(module after the target's pipeline, IR text after every pass) of examples/attention.py."""
    consts = dict(D=64, BN=64, CAUSAL=True, OVERLAP=False, STAGES=2)
    consts.update(kw)
    b = ATTN.attention.bind((T4, T4, T4, T4, f32), consts, signature_ok=True)
    t = compiler.resolve(target)
    m, _ = ATTN.attention._frontend(b, t)
    return compiler.lower(m, t)


@functools.lru_cache(maxsize=None)
def _lowered(overlap, pingpong=True, causal=True):
    return _lower(OVERLAP=overlap, CAUSAL=causal, **dict(PP, PINGPONG=pingpong))


def _key_loop(fn):
    ws = next(o for o in fn.body.ops if o.name == "warp_specialize")
    return ws, next(o for o in ws.regions[1].walk() if o.name == "for" and o.attrs.get("pipelined"))


# ------------------------------------------------------------------------------ the IR
def test_attribute_recorded_on_the_consumers_loop_and_round_trips():
    from tile.ir.parser import parse_module
    from tile.ir.printer import print_module
    m, after = _lowered(False)
    ws, loop = _key_loop(m.functions[0])
    assert loop.attrs["pingpong"] is True
    # ids distinct from the consumers' and the producer's barriers (1, 2): 3 and 4
    assert loop.attrs["pingpong_barrier"] == 3
    assert {ws.attrs["consumer_barrier"], ws.attrs["producer_barrier"]}.isdisjoint({3, 4})
    assert not [o for o in ws.regions[0].walk() if o.attrs.get("pingpong")]          # not the producer's loop
    assert "pingpong = true" in after["canonicalize"] and "pingpong_barrier" not in after["warp_specialize"]
    text = after["pingpong"]
    assert "pingpong = true" in text and "pingpong_barrier = 3" in text
    assert print_module(parse_module(text)) == text


def test_verifier_refuses_barriers_without_pingpong():
    """Edited IR keeping the barriers but not the request: refused at the loop's line (parse verifies)."""
    from tile.ir.errors import ParseError
    from tile.ir.parser import parse_module
    text = _lowered(False)[1]["pingpong"].replace("pingpong = true, ", "")
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "pingpong_barrier = 3" in x)
    with pytest.raises(ParseError, match=rf"line {line}, .*attention\.py:\d+:\d+: op 'for': pingpong_barrier "
                       r"without pingpong = true"):
        parse_module(text)


@tile.kernel
def _pingpong_without_ws(A: tile.Tensor[bf16, 2], C: tile.Tensor[f32, 2]):
    acc = tile.zeros((64, 64), f32)
    for k in tile.range(0, A.shape[1], 64, stages=2, pingpong=True):
        a = tile.load(A, (0, k), (64, 64))
        acc = tile.dot(a, a.T, acc)
    tile.store(C, (0, 0), acc)


def test_without_warp_specialize_is_a_located_error():
    with pytest.raises(tile.CompileError, match=r"test_pingpong\.py:\d+.*it needs warp_specialize=True"):
        _pingpong_without_ws.compile(tile.Tensor[bf16, 2], tile.Tensor[f32, 2], target="sm_90a")


@pytest.mark.parametrize("target,kw,why", [
    ("sm_80", PP, "the target sm_80 has no wgmma"),
    ("sm_90a", dict(PP, BM=64, num_warps=4), r"exactly 2 consumer warpgroups \(num_warps = 8\), got num_warps = 4"),
], ids=["sm_80", "one-warpgroup"])
def test_refused_with_a_located_warning(target, kw, why):
    with pytest.warns(tile.PerformanceWarning, match=r"kernel 'attention' at attention\.py:\d+:\d+: the loop asked for "
                      r"pingpong=True but its consumer warpgroups do not take turns: (it needs )?" + why):
        m, _ = _lower(target, **kw)
    assert not [o for o in m.functions[0].walk() if "pingpong" in o.attrs or "pingpong_barrier" in o.attrs]


# ------------------------------------------------------------------------------ the PTX
def _instructions(ptx):
    return [ln.strip() for ln in ptx.splitlines()
            if ln.strip() and not ln.strip().startswith(("//", "$L")) and not ln.strip().endswith("{")]


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_ptx_turns_between_iterations(overlap):
    """FA3's turns: a warpgroup's turn runs from p v (RS: A from registers) of one iteration to q k^T
    (SS: two descriptors) of the next, so its softmax lies outside every turn."""
    from tile.codegen import ptxas_report
    D, BN = (128, 128) if not overlap else (128, 64)
    ck = ATTN.attention.compile(T4, T4, T4, T4, f32, target="sm_90a", D=D, BN=BN, CAUSAL=True, OVERLAP=overlap, **PP)
    assert 'pingpong_window = "between"' in str(ck.ir_after["pingpong"])
    ins = _instructions(ck.ptx)
    # the head start (warpgroup 1 -> barrier 3) and the drain (warpgroup 0 on barrier 3): once each
    assert ins.count("bar.arrive \t3, 256;") == 1 and ins.count("bar.sync \t3, 256;") == 1
    head, drain = ins.index("bar.arrive \t3, 256;"), ins.index("bar.sync \t3, 256;")
    syncs = [i for i, x in enumerate(ins) if re.fullmatch(r"bar\.sync \t%r\d+, 256;", x)]
    arrives = [i for i, x in enumerate(ins) if re.fullmatch(r"bar\.arrive \t%r\d+, 256;", x)]
    assert len(syncs) == 2 and len(arrives) == 2, (syncs, arrives)
    mine, other = ins[syncs[0]].split()[1][:-1], ins[arrives[0]].split()[1][:-1]
    assert {ins[i].split()[1][:-1] for i in syncs} == {mine} and {ins[i].split()[1][:-1] for i in arrives} == {other}
    wg = re.search(r"shr\.u32 \t(%r\d+), %r\d+, 7;", ck.ptx).group(1)      # thread id / 128
    assert f"add.s32 \t{mine}, {wg}, 3;" in ins and f"sub.s32 \t{other}, 4, {wg};" in ins
    # (the PTX's block order is LLVM's, not the program's: each barrier is found by its neighbours)
    # one sync right before the fence of p v (RS: A from registers too): its turn opens there
    turn = [i for i in syncs if ins[i + 1] == "wgmma.fence.sync.aligned;"]
    assert len(turn) == 1
    pv = [x for x in ins[turn[0] + 2:turn[0] + 12] if "wgmma.mma_async" in x]
    assert pv and all(x.count("{%r") == 2 for x in pv)
    # nothing but p v's wgmmas from that sync to their commit: no softmax in the turn
    commit = ins.index("wgmma.commit_group.sync.aligned;", turn[0])
    assert all("wgmma" in x or x.startswith("{") for x in ins[turn[0] + 1:commit]), ins[turn[0]:commit]
    # one arrive right after the commit of q k^T (SS: the accumulator's registers, then two
    # descriptors), before that group's wait: the turn closes there
    close = [i for i in arrives if ins[i - 1] == "wgmma.commit_group.sync.aligned;"]
    assert len(close) == 1
    qk = next(x for x in reversed(ins[:close[0]]) if "wgmma.mma_async" in x)
    assert qk.count("{%r") == 1
    # the first turn opens before the loop, after the head start; the last closes after the loop,
    # right before the drain
    first = next(i for i in syncs if i not in turn)
    last = next(i for i in arrives if i not in close)
    assert head < first < min(turn + close) and max(turn + close) < last < drain
    assert all(x.startswith(("@", "bra", "setp", "bar.")) for x in ins[last:drain]), ins[last:drain + 1]
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep["log"]
    assert "warning" not in rep["log"].lower(), rep["log"]                  # "Performance Loss", C7515 ...


def test_one_wgmma_or_a_deadlock_risk_takes_the_window_within_an_iteration():
    """"between" needs two wgmma dots and a ring the turn's stage wait cannot deadlock on (S >= 2, or
    S >= 3 when the last dot stays in flight); otherwise the turn is the iteration's first to last
    wgmma, as before."""
    from tile.passes.pingpong import _window
    from tile.ir.parser import parse_module
    text = _lowered(False)[1]["pingpong"]
    assert 'pingpong_window = "between"' in text
    fn = parse_module(text).functions[0]
    _, loop = _key_loop(fn)
    assert _window(loop) == ("between", None)
    dots = [o for o in loop.regions[0].ops if o.name == "dot"]
    dots[-1].attrs["inflight"] = 1                  # p v in flight on a 2-stage ring: the release comes late
    assert _window(loop) == ("within", None)
    loop.attrs["pipelined"] = 3
    assert _window(loop) == ("between", None)
    dots[0].attrs["atom"] = "mma.m16n8k16"           # one wgmma dot left
    assert _window(loop) == ("within", None)


# ------------------------------------------------------------------------------ the interpreter
def test_same_ir_but_the_attributes():
    """The pass changes nothing but the loop's attributes: the IR after the pipeline, without them, is
    the WS kernel's without PINGPONG (so every value is the same; the interpreter ignores them)."""
    with_pp, without = _lowered(True, True, False)[1], _lowered(True, False, False)[1]
    last = "shared_memory_planning"
    assert "pingpong_barrier = 3" in with_pp[last]
    stripped = re.sub(r"pingpong = true, |, pingpong_barrier = 3|, pingpong_window = \"between\"", "", with_pp[last])
    assert stripped.replace("PINGPONG = true", "PINGPONG = false", 1) == without[last]    # (the constexpr)


def test_interpreter_same_bits_with_and_without():
    """Causal, S = 77 (one query block, a ragged key tail): the specialized IR with ping-pong in the
    interpreter (two host threads), bit for bit the WS kernel without it, and close to float64."""
    import ml_dtypes
    from tile.ir.parser import parse_module
    from tile.runtime.interpreter import run
    rng = np.random.default_rng()
    B, H, HKV, S, D = 1, 2, 1, 77, 64
    q, k, v = (rng.standard_normal(s).astype(ml_dtypes.bfloat16) for s in ((B, H, S, D), (B, HKV, S, D), (B, HKV, S, D)))
    outs = []
    for pp in (True, False):
        fn = parse_module(_lowered(False, pp)[1]["shared_memory_planning"]).functions[0]
        assert bool([o for o in fn.walk() if o.attrs.get("pingpong")]) == pp
        o = np.full((B, H, S, D), np.nan, ml_dtypes.bfloat16)
        run(fn, (tile.cdiv(S, 128), B * H), [q, k, v, o, float(1.0 / np.sqrt(D))])
        outs.append(o)
    assert not np.isnan(outs[0].astype(np.float32)).any()
    assert np.array_equal(outs[0].view(np.uint16), outs[1].view(np.uint16))
    ref = ATTN.reference(q, k, v, True, float(1.0 / np.sqrt(D)))
    assert np.linalg.norm(outs[0].astype(np.float64) - ref) / np.linalg.norm(ref) < TOL


# ------------------------------------------------------------------------------ GPU
GPU = [(128, False, 128, False), (128, True, 128, False), (128, True, 128, True), (128, False, 64, True),
       (64, True, 128, True), (64, False, 64, False)]


@pytest.mark.gpu
@pytest.mark.parametrize("D,causal,BN,overlap", GPU, ids=[
    f"D{d}{'-causal' if c else ''}-BN{n}{'-overlap' if o else ''}" for d, c, n, o in GPU])
def test_gpu_pingpong_against_float64(D, causal, BN, overlap, hopper):
    """Ragged lengths (several key blocks, a ragged tail; an odd number of query blocks), GQA, LSE,
    fresh inputs twice; S = 1 (one key block); S = 129 (the second query block's rows past S)."""
    for S, H, HKV in ((389, 4, 2), (389, 4, 2), (1, 2, 1), (129, 2, 2)):
        err, lse_err = ATTN.run(B=2, H=H, HKV=HKV, S=S, D=D, causal=causal, lse=True, BN=BN, OVERLAP=overlap, **PP)
        assert err < TOL and lse_err < LSE_TOL, (S, err, lse_err)


def test_a_barrier_between_the_turns_is_a_located_error():
    """Edited IR with a consumers' barrier between the two wgmmas (the pass would have refused it):
    code generation says where, instead of emitting a kernel that hangs."""
    from tile.codegen import CompileError
    from tile.ir.parser import parse_module
    lines = _lowered(False)[1]["shared_memory_planning"].splitlines()
    k = next(i for i, x in enumerate(lines) if " dot " in x and '.ss"' in x)
    lines.insert(k, '      barrier {id = 1, threads = 256} loc("edited.tir":1:1)')     # before q k^T: in a turn
    m = parse_module("\n".join(lines) + "\n")
    with pytest.raises(CompileError, match=r"attention\.py:\d+:\d+: op 'dot': pingpong: a barrier of both consumer "
                       r"warpgroups inside a turn"):
        compiler.generate(m, compiler.resolve("sm_90a"))


# ------------------------------------------------------------------------------ the protocol
def _turns_deadlock(window, n, S, inflight):
    """Play the barriers of a ping-pong loop (codegen/lower_pingpong.py, passes/warp_specialize.py)
    as three processes -- the producer and the two consumer warpgroups -- and return whether they get
    stuck. Named barrier b: a phase completes with two arrivals (128 threads each: an arrive or a
    sync), a sync waits for its phase. mbarrier full[s]: one producer arrival per use (the bytes land
    at once here); empty[s]: one arrival per consumer warpgroup per release."""
    B = 3
    named = {}                                  # barrier -> arrivals so far
    full, empty = [0] * S, [0] * S              # completed phases
    empty_arrivals = [0] * S

    def arrive(b):
        named[b] = named.get(b, 0) + 1
        return (named[b] - 1) // 2              # the phase this arrival belongs to

    def consumer(w):
        mine, other = B + w, B + 1 - w
        if w == 1:
            arrive(B)                           # warpgroup 0's head start
        if window == "between":
            ph = arrive(mine)
            yield lambda: named[mine] >= 2 * (ph + 1)
        for j in range(n):
            yield lambda: full[j % S] > j // S                  # the stage's bytes
            if window == "within":
                ph = arrive(mine)
                yield lambda: named[mine] >= 2 * (ph + 1)
            # q k^T issued
            if window == "between":
                arrive(other)
            # softmax; then p v
            if window == "between":
                ph = arrive(mine)
                yield lambda: named[mine] >= 2 * (ph + 1)
            # p v issued (and waited for, or left in flight)
            if window == "within":
                arrive(other)
            r = j - 1 if inflight else j                        # the stage this iteration releases
            if r >= 0:
                empty_arrivals[r % S] += 1
                if empty_arrivals[r % S] % 2 == 0:
                    empty[r % S] += 1
        if window == "between":
            arrive(other)                       # the last turn ends
        if w == 0:
            ph = arrive(B)                      # the drain
            yield lambda: named[B] >= 2 * (ph + 1)

    def producer():
        for j in range(n):
            if j >= S:
                yield lambda: empty[j % S] >= j // S            # released by both warpgroups
            full[j % S] += 1

    procs = [consumer(0), consumer(1), producer()]
    waiting = [None] * 3
    live = [True] * 3
    while any(live):
        progressed = False
        for i, p in enumerate(procs):
            if not live[i] or (waiting[i] is not None and not waiting[i]()):
                continue
            try:
                waiting[i] = next(p)
            except StopIteration:
                live[i] = False
            progressed = True
        if not progressed:
            return True
    return any(c % 2 for c in named.values())    # an arrival nobody synced on would break the next kernel


@pytest.mark.parametrize("inflight", [False, True])
@pytest.mark.parametrize("S", [2, 3, 4])
def test_turns_never_deadlock_where_the_pass_takes_them(S, inflight):
    """The pass's rule (passes/pingpong.py, "Deadlock freedom of between"): FA3's window holds the
    next stage's wait, which is safe with S >= 2 stages and S >= 3 when the last dot stays in flight.
    Played out for 0..7 iterations: no deadlock and no barrier left with a lone arrival where "between"
    is taken, "within" always safe -- and the case the pass refuses does deadlock, so the rule is needed."""
    safe = S >= (3 if inflight else 2)
    for n in range(8):
        assert not _turns_deadlock("within", n, S, inflight), (n, S, inflight)
        if safe:
            assert not _turns_deadlock("between", n, S, inflight), (n, S, inflight)
    if not safe:
        assert any(_turns_deadlock("between", n, S, inflight) for n in range(8))
