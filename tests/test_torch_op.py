"""tile.torch_op on CPU tensors: registration (the op's schema), the fake implementation under
FakeTensorMode and torch.compile(fullgraph=True), torch.library.opcheck, the output specs, in-place
ops, the write check and the errors. The op's real runs go through the tilec interpreter
(TILEC_TARGET=cpu), which reads and writes CPU torch tensors in place.

torch is not a dependency of tilec (nor of CI, which has no torch): the whole module is skipped where
torch cannot be imported. To run it, install a CPU build of torch into a private environment. The
same checks on the GPU (torch.compile with inductor, CUDA-graph capture, the current stream) are in
test_torch_op_gpu.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (an optional integration; CI has no torch)")
if not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):
    pytest.skip("tile.torch_op needs torch >= 2.4 (torch.library.custom_op)", allow_module_level=True)

import tile                                              # noqa: E402
from tile import bf16, f32                               # noqa: E402


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    yield
    torch._dynamo.reset()


_ids = itertools.count()


def uname(base):
    """A fresh op name per registration (torch's op registry is process-wide)."""
    return f"tilec_test::{base}_{next(_ids)}"


@tile.kernel
def add1(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], n: int, BLOCK: tile.constexpr = 64):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


@tile.kernel
def axpb(X: tile.Tensor[f32, 2], Y: tile.Tensor[f32, 2], a: float, b: float = 0.5,
         BM: tile.constexpr = 16, BN: tile.constexpr = 16):
    i, j = tile.block_id(0) * BM, tile.block_id(1) * BN
    tile.store(Y, (i, j), tile.load(X, (i, j), (BM, BN)) * a + b)


@tile.kernel
def split(X: tile.Tensor[bf16, 1], Lo: tile.Tensor[f32, 1], Hi: tile.Tensor[f32, 1], t: float,
          BLOCK: tile.constexpr = 32):
    i = tile.block_id(0) * BLOCK
    x = tile.load(X, (i,), (BLOCK,)).astype(f32)
    tile.store(Lo, (i,), tile.minimum(x, t))
    tile.store(Hi, (i,), tile.maximum(x, t))


@tile.kernel
def scale_(X: tile.Tensor[f32, 1], s: float, BLOCK: tile.constexpr = 32):
    i = tile.block_id(0) * BLOCK
    tile.store(X, (i,), tile.load(X, (i,), (BLOCK,)) * s)


def grid1(block_name="BLOCK", src="X"):
    return lambda m: (tile.cdiv(m[src].shape[0], m[block_name]),)


def add1_op():
    return tile.torch_op(add1, uname("add1"), grid=grid1(), outputs={"Y": "like X"},
                         scalars={"n": lambda m: m["X"].numel()})


def axpb_op(**kw):
    return tile.torch_op(axpb, uname("axpb"), outputs={"Y": "like X"},
                         grid=lambda m: (tile.cdiv(m["X"].shape[0], m["BM"]), tile.cdiv(m["X"].shape[1], m["BN"])), **kw)


def split_op():
    return tile.torch_op(split, uname("split"), grid=grid1(),
                         outputs={"Lo": lambda m: m["X"].shape, "Hi": lambda m: (m["X"].shape, torch.float32)})


# ------------------------------------------------------------------------------ registration
def test_schema_follows_the_kernel_signature():
    op = add1_op()
    assert str(op._opoverload._schema).endswith("(Tensor X) -> Tensor")          # n is computed, Y allocated
    op = axpb_op()
    assert str(op._opoverload._schema).endswith("(Tensor X, float a, float b=0.5) -> Tensor")
    op = split_op()
    assert str(op._opoverload._schema).endswith("(Tensor X, float t) -> (Tensor, Tensor)")
    assert op.tile_kernel is split


def test_torch_ops_namespace_and_eager_result():
    op = add1_op()
    x = torch.arange(100, dtype=torch.float32)
    ns, name = op._qualname.split("::")
    y1 = op(x)
    y2 = getattr(getattr(torch.ops, ns), name)(x)
    assert torch.equal(y1, x + 1) and torch.equal(y2, x + 1)
    assert y1.data_ptr() != x.data_ptr()


def test_scalars_constexprs_and_defaults():
    x = torch.randn(40, 24)
    op = axpb_op(constexprs={"BM": 8, "BN": 32})
    assert torch.allclose(op(x, 2.0), x * 2 + 0.5)
    assert torch.allclose(op(x, 2.0, -1.0), x * 2 - 1.0)
    seen = []

    def choose(m):                                        # per-run constexprs, a function of meta
        seen.append((tuple(m["X"].shape), m["BM"]))
        return {"BM": 32 if m["X"].shape[0] > 32 else 8}
    op = axpb_op(constexprs=choose)
    assert torch.allclose(op(x, 3.0), x * 3 + 0.5)
    assert seen == [((40, 24), 16)]                       # meta holds the kernel's default before the choice


def test_two_outputs_bf16_input_and_the_dtype_from_the_annotation():
    op = split_op()
    x = torch.linspace(-3, 3, 70).to(torch.bfloat16)
    lo, hi = op(x, 0.25)
    assert lo.dtype == hi.dtype == torch.float32 and lo.shape == hi.shape == (70,)
    xf = x.float()
    assert torch.equal(lo, torch.clamp(xf, max=0.25)) and torch.equal(hi, torch.clamp(xf, min=0.25))


def test_fake_function_allocates_outputs():
    op = tile.torch_op(split, uname("split_fake"), grid=grid1(), outputs=["Lo", "Hi"],
                       fake=lambda X, t: (X.new_empty(X.shape, dtype=torch.float32),
                                          X.new_empty(X.shape, dtype=torch.float32)))
    x = torch.linspace(-1, 1, 33).to(torch.bfloat16)
    lo, hi = op(x, 0.0)
    assert torch.equal(lo, torch.clamp(x.float(), max=0.0))
    torch.library.opcheck(op, (x, 0.0))


def test_in_place_op_with_mutates_args():
    op = tile.torch_op(scale_, uname("scale_"), grid=grid1(), mutates_args=("X",))
    assert str(op._opoverload._schema).endswith("(Tensor(a0!) X, float s) -> ()")
    x = torch.arange(50, dtype=torch.float32)
    assert op(x, 3.0) is None
    assert torch.equal(x, torch.arange(50, dtype=torch.float32) * 3)

    def f(x):
        y = x + 1
        op(y, 2.0)
        return y * 1
    x = torch.arange(10, dtype=torch.float32)
    assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(x), (x + 1) * 2)
    torch.library.opcheck(op, (torch.randn(40), 0.5))


def test_an_undeclared_write_is_an_error():
    op = tile.torch_op(scale_, uname("scale_bad"), grid=grid1())          # writes X, declares nothing
    with pytest.raises(TypeError, match="writes 'X'.*mutates_args"):
        op(torch.ones(8), 2.0)
    op = tile.torch_op(scale_, uname("scale_unchecked"), grid=grid1(), check_writes=False)
    x = torch.ones(8)
    op(x, 2.0)
    assert torch.equal(x, torch.full((8,), 2.0))


# ------------------------------------------------------------------------------ fake, compile, opcheck
def test_fake_tensor_mode_gives_shapes_dtypes_devices_without_running():
    from torch._subclasses.fake_tensor import FakeTensorMode
    op, sp = add1_op(), split_op()
    with FakeTensorMode():
        x = torch.empty(1000)
        y = op(x)
        lo, hi = sp(torch.empty(7, dtype=torch.bfloat16), 1.0)
    assert type(y).__name__ == "FakeTensor" and y.shape == (1000,) and y.dtype == torch.float32
    assert lo.shape == (7,) and lo.dtype == hi.dtype == torch.float32
    y = op(torch.empty(5, device="meta"))                 # meta tensors use the fake implementation too
    assert y.device.type == "meta" and y.shape == (5,)


def test_torch_compile_fullgraph_puts_the_op_in_the_graph():
    op = axpb_op()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def f(x, r):
        return torch.relu(op(x * 2, 1.5)) + r

    x, r = torch.randn(33, 20), torch.randn(33, 20)
    out = torch.compile(f, fullgraph=True, backend=backend)(x, r)
    assert torch.allclose(out, torch.relu(x * 2 * 1.5 + 0.5) + r, atol=1e-6)
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any(op._qualname.replace("::", ".") in t for t in targets), targets


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_backends_and_dynamic_shapes(backend):
    if backend == "inductor":
        import shutil
        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            pytest.skip("inductor on CPU needs a C++ compiler")
    op = add1_op()
    f = torch.compile(lambda x: op(x) * 2, fullgraph=True, backend=backend, dynamic=True)
    for n in (100, 37, 256):
        x = torch.randn(n)
        assert torch.allclose(f(x), (x + 1) * 2), n


def test_opcheck():
    x = torch.randn(70)
    torch.library.opcheck(add1_op(), (x,))
    torch.library.opcheck(axpb_op(), (torch.randn(20, 40), 2.0, 1.0))
    torch.library.opcheck(split_op(), (torch.randn(50).to(torch.bfloat16), 0.1))


# ------------------------------------------------------------------------------ other forms
def test_decorator_and_launch_wrapper_forms():
    @tile.torch_op(uname("dec"), grid=grid1(), outputs={"Y": "like X"}, scalars={"n": lambda m: m["X"].numel()})
    @tile.kernel
    def dec(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], n: int, BLOCK: tile.constexpr = 16):
        i = tile.block_id(0) * BLOCK
        tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) - 1.0)
    x = torch.arange(20, dtype=torch.float32)
    assert torch.equal(dec(x), x - 1)

    def wrapper(x: torch.Tensor) -> torch.Tensor:            # a hand-written launch wrapper
        y = torch.empty_like(x)
        add1[(tile.cdiv(x.shape[0], 64),)](x, y, x.shape[0])
        return y
    op = tile.torch_op(wrapper, uname("wrapped"), fake=lambda x: torch.empty_like(x))
    assert torch.equal(op(x), x + 1)
    torch.library.opcheck(op, (x,))


def test_kernel_launch_with_cpu_torch_tensors_runs_in_the_interpreter():
    x = torch.arange(64, dtype=torch.float32)[::2]          # strided: the kernel reads through the strides
    y = torch.zeros(64)[::2]
    add1[(1,)](x, y, 32)
    assert torch.equal(y, x + 1)
    xb = torch.linspace(-2, 2, 32).to(torch.bfloat16)       # bf16: an ml_dtypes view of the same memory
    lo, hi = torch.empty(32), torch.empty(32)
    split[(1,)](xb, lo, hi, 0.0)
    assert torch.equal(lo, torch.clamp(xb.float(), max=0.0))


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="namespace::op"):
        tile.torch_op(add1, "no_namespace", grid=(1,))
    with pytest.raises(TypeError, match="grid= is required"):
        tile.torch_op(add1, uname("e"), outputs={"Y": "like X"})
    with pytest.raises(ValueError, match="output 'Z' is not a parameter"):
        tile.torch_op(add1, uname("e"), grid=(1,), outputs={"Z": "like X"})
    with pytest.raises(ValueError, match="output 'n' must be a tensor"):
        tile.torch_op(add1, uname("e"), grid=(1,), outputs={"n": "like X"})
    with pytest.raises(TypeError, match="need a spec"):
        tile.torch_op(add1, uname("e"), grid=(1,), outputs=["Y"])
    with pytest.raises(ValueError, match="'BLOK' is not a constexpr"):
        tile.torch_op(add1, uname("e"), grid=(1,), outputs={"Y": "like X"}, constexprs={"BLOK": 8})
    with pytest.raises(ValueError, match="mutates_args: 'Y'"):
        tile.torch_op(add1, uname("e"), grid=(1,), outputs={"Y": "like X"}, mutates_args=("Y",))
    op = tile.torch_op(add1, uname("e"), grid=(1,), outputs={"Y": "like Q"})
    with pytest.raises(ValueError, match="like 'Q'"):
        op(torch.ones(3), 3)


def test_unannotated_parameters_need_an_annotation():
    @tile.kernel
    def untyped(X, Y: tile.Tensor[f32, 1], BLOCK: tile.constexpr = 8):
        tile.store(Y, (0,), tile.load(X, (0,), (BLOCK,)))
    with pytest.raises(TypeError, match="'X' has no annotation"):
        tile.torch_op(untyped, uname("u"), grid=(1,), outputs={"Y": "like X"})


def test_values_match_numpy_reference_for_the_gallery_gemm():
    """The example's op on CPU tensors (interpreter) against the float64 reference, eager and compiled."""
    from helpers import load_example
    errs = load_example("torch_custom_op").run(M=70, N=40, K=48, device="cpu")
    assert set(errs) == {"eager", "compiled 0", "compiled 1"}
    assert all(e < 1e-2 for e in errs.values()), errs
    assert np.isfinite(list(errs.values())).all()
