"""tile.torch_op and torch's current stream on an NVIDIA GPU (`pytest -m gpu`; skipped without a GPU
or without torch, which tilec does not depend on): the op inside torch.compile(fullgraph=True) with
inductor (also its CUDA-graph mode), CUDA-graph capture and replay with changed input contents (the
op and a plain `kernel[grid]` launch), and launches on torch's current stream inside
`with torch.cuda.stream(s)`, ordered with the torch work around them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (an optional integration)")

import tile                                              # noqa: E402
from tile import bf16, f32                               # noqa: E402

pytestmark = pytest.mark.gpu


def _gpu() -> bool:
    try:
        from tile.kernel import gpu_arch
        return torch.cuda.is_available() and gpu_arch() is not None and hasattr(torch.library, "custom_op")
    except Exception:                                     # noqa: BLE001
        return False


@pytest.fixture(autouse=True)
def _need_gpu(monkeypatch):
    if not _gpu():
        pytest.skip("needs an NVIDIA GPU, torch with CUDA and torch >= 2.4")
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    from tile import compiler
    compiler.reset_target()
    yield
    torch._dynamo.reset()


_ids = itertools.count()


def uname(base):
    return f"tilec_gpu_test::{base}_{next(_ids)}"


@tile.kernel
def add1(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], n: int, BLOCK: tile.constexpr = 256):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


@tile.kernel
def axpb(X: tile.Tensor[bf16, 2], Y: tile.Tensor[f32, 2], a: float, b: float,
         BM: tile.constexpr = 32, BN: tile.constexpr = 64):
    i, j = tile.block_id(0) * BM, tile.block_id(1) * BN
    tile.store(Y, (i, j), tile.load(X, (i, j), (BM, BN)).astype(f32) * a + b)


def add1_op():
    return tile.torch_op(add1, uname("add1"), grid=lambda m: (tile.cdiv(m["X"].shape[0], m["BLOCK"]),),
                         outputs={"Y": "like X"}, scalars={"n": lambda m: m["X"].numel()})


def axpb_op():
    return tile.torch_op(axpb, uname("axpb"),
                         grid=lambda m: (tile.cdiv(m["X"].shape[0], m["BM"]), tile.cdiv(m["X"].shape[1], m["BN"])),
                         outputs={"Y": lambda m: (m["X"].shape, torch.float32)})


def _ref_axpb(x, a, b):
    return x.double() * a + b


# ------------------------------------------------------------------------------ the gallery example
def test_gallery_example_on_the_gpu():
    from helpers import load_example
    errs = load_example("torch_custom_op").run(M=300, N=200, K=136)
    assert {"eager", "compiled 0", "compiled 1", "cuda graph 0", "cuda graph 1"} <= set(errs)
    assert all(e < 1e-2 for e in errs.values()), errs


# ------------------------------------------------------------------------------ torch.compile
def test_compile_fullgraph_inductor_with_the_op_in_the_graph():
    op = axpb_op()
    graphs = []

    def backend(gm, example_inputs):                      # record the graph, then compile it with inductor
        graphs.append(gm)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, example_inputs)

    def f(x, r):
        y = op((x * 2).to(torch.bfloat16), 1.5, -0.25)
        return torch.relu(y) + r

    cf = torch.compile(f, fullgraph=True, backend=backend)
    for shape in ((100, 70), (128, 64)):
        x = torch.randn(*shape, device="cuda")
        r = torch.randn(*shape, device="cuda")
        out = cf(x, r)
        ref = torch.relu(_ref_axpb((x * 2).to(torch.bfloat16), 1.5, -0.25)) + r.double()
        assert torch.allclose(out.double(), ref, atol=1e-5), shape
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any(op._qualname.replace("::", ".") in t for t in targets), targets


def test_compile_reduce_overhead_cuda_graphs_replay_new_inputs():
    """inductor's CUDA-graph mode records the op in a CUDA graph and replays it."""
    op = add1_op()
    f = torch.compile(lambda x: op(x) * 2, fullgraph=True, mode="reduce-overhead")
    for k in range(5):                                    # warm-up runs, recording, then replays
        x = torch.full((5000,), float(k), device="cuda") + torch.arange(5000, device="cuda")
        out = f(x)
        assert torch.equal(out, (x + 1) * 2), k
        out = out.clone()                                 # outputs of a replay are overwritten by the next


# ------------------------------------------------------------------------------ CUDA graphs
def _capture(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):                            # warm-up: compile, module load, fast launcher
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def test_cuda_graph_capture_and_replay_of_the_op():
    op = axpb_op()
    x = torch.randn(200, 300, device="cuda").to(torch.bfloat16)
    g, y = _capture(lambda: op(x, 2.0, 1.0))
    for k in range(3):
        x.copy_(torch.randn(200, 300, device="cuda"))     # new contents in the captured input
        y.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert torch.allclose(y.double(), _ref_axpb(x, 2.0, 1.0), atol=1e-5), k


def test_cuda_graph_capture_of_a_plain_kernel_launch():
    n = 10_000
    x = torch.randn(n, device="cuda")
    y = torch.empty_like(x)
    grid = (tile.cdiv(n, 256),)
    g, _ = _capture(lambda: add1[grid](x, y, n))
    for k in range(3):
        x.copy_(torch.randn(n, device="cuda"))
        y.zero_()
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, x + 1), k


# ------------------------------------------------------------------------------ the current stream
def _sleep_then_fill(x, v):
    torch.cuda._sleep(50_000_000)                          # tens of ms of GPU time on the current stream
    x.fill_(v)


def test_launches_follow_torch_current_stream():
    """On a side stream a long sleep, then a fill of X, then the kernel, then a copy of Y: in order only
    if the kernel is on the side stream (the legacy stream does not wait for torch's non-blocking
    streams). The first launch takes the general path, the later ones the fast path."""
    n = 1 << 16
    x = torch.zeros(n, device="cuda")
    y = torch.zeros(n, device="cuda")
    grid = (tile.cdiv(n, 256),)
    s = torch.cuda.Stream()
    outs = []
    torch.cuda.synchronize()
    add1._fast.clear()
    with torch.cuda.stream(s):
        for v in range(4):
            _sleep_then_fill(x, float(v))
            add1[grid](x, y, n)
            outs.append(y.clone())
    torch.cuda.synchronize()
    for v, o in enumerate(outs):
        assert torch.all(o == v + 1), (v, o[:4])
    assert any(e is not None for e in add1._fast.values())


def test_the_op_follows_torch_current_stream():
    op = add1_op()
    n = 1 << 16
    x = torch.zeros(n, device="cuda")
    s = torch.cuda.Stream()
    outs = []
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        for v in range(3):
            _sleep_then_fill(x, float(v))
            outs.append(op(x) * 1)
    torch.cuda.synchronize()
    for v, o in enumerate(outs):
        assert torch.all(o == v + 1), v


def test_an_explicit_stream_still_wins():
    n = 1 << 16
    x = torch.zeros(n, device="cuda")
    y = torch.zeros(n, device="cuda")
    other = torch.cuda.Stream()
    s = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        with torch.cuda.stream(other):
            _sleep_then_fill(x, 5.0)
        add1[(tile.cdiv(n, 256),)](x, y, n, stream=other)     # on `other`, after its fill
        other_done = torch.cuda.Event()
        other_done.record(other)
    other_done.synchronize()
    assert torch.all(y == 6.0)


def test_cpu_tensors_run_in_the_interpreter_on_a_gpu_machine():
    op = add1_op()
    x = torch.arange(300, dtype=torch.float32)
    assert torch.equal(op(x), x + 1)
    assert np.array_equal(op(x.cuda()).cpu().numpy(), (x + 1).numpy())
