"""The gallery GEMM (examples/gemm.py: C = gelu(scale * A @ B + bias), bf16 in and out, f32 accumulator)
as a PyTorch custom op, called from a `torch.compile(fullgraph=True)` model and from a captured CUDA
graph; every result is checked against a float64 reference.

Run: python examples/torch_custom_op.py [M N K]   (needs torch; on the GPU if there is one, else on CPU
tensors through the tilec interpreter, where the CUDA-graph part is skipped)

`tile.torch_op` registers the kernel with `torch.library.custom_op` and a fake implementation derived
from the output spec below, so torch.compile traces the op without a graph break, and launches go on
torch's current stream, which is what CUDA-graph capture needs. tilec itself never imports torch:
this file does (inside its functions, so the gallery's tests can load it without torch).
"""
import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np

import tile


def _gallery(name):
    """examples/<name>.py loaded by its path: a module called `gemm` elsewhere on sys.path (the
    benchmark package has one) must not stand in for the gallery's."""
    spec = importlib.util.spec_from_file_location(f"tilec_gallery_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_gemm = _gallery("gemm")
gemm, reference = _gemm.gemm, _gemm.reference            # the gallery kernel and its float64 reference


@functools.lru_cache(maxsize=None)
def gemm_op(act: str = "gelu"):
    """`tilec_gallery::gemm_bias_<act>(A, B, bias, scale) -> C`: the gallery GEMM with its bias and
    activation epilogue fixed at registration (constexprs); C is allocated by the op."""
    return tile.torch_op(
        gemm, f"tilec_gallery::gemm_bias_{act}",
        grid=lambda m: (tile.cdiv(m["A"].shape[0], m["BM"]), tile.cdiv(m["B"].shape[1], m["BN"])),
        outputs={"C": lambda m: (m["A"].shape[0], m["B"].shape[1])},      # dtype: C's annotation, bf16
        constexprs={"HAS_BIAS": True, "ACT": act})


def make_model(K: int, N: int, act: str = "gelu", device=None, seed=0):
    """A torch module whose forward is the custom op plus ordinary torch code around it."""
    import torch
    op = gemm_op(act)                     # registered once, outside the traced forward

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.weight = torch.nn.Parameter((torch.randn(K, N, generator=g) / K ** 0.5).to(torch.bfloat16),
                                             requires_grad=False)
            self.bias = torch.nn.Parameter(torch.randn(N, generator=g), requires_grad=False)
            self.scale = 1.5

        def forward(self, x, residual):
            y = op(x.to(torch.bfloat16), self.weight, self.bias, self.scale)
            return y.float() + residual

    return Block().to(device)


def _ref(A, W, bias, scale, act, residual=None):
    """float64 reference on the exact bf16 inputs the kernel sees."""
    y = reference(A.float().cpu().numpy(), W.float().cpu().numpy(), bias.cpu().numpy(), scale, act)
    return y if residual is None else y + residual.cpu().double().numpy()


def _rel(out, ref) -> float:
    out = out.double().cpu().numpy()
    assert np.isfinite(out).all(), "some outputs were not written"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def run(M=256, N=192, K=160, act="gelu", seed=0, device=None) -> dict:
    """Eager, torch.compile(fullgraph=True) and CUDA-graph replays of the op on `device` (default: the
    GPU if torch sees one, else the CPU); relative errors against the float64 reference (CUDA graphs
    only on the GPU)."""
    import torch
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")
    torch.manual_seed(seed)
    model = make_model(K, N, act, device=dev, seed=seed)
    W, bias, scale = model.weight, model.bias, model.scale
    errs = {}

    # eager
    x = torch.randn(M, K, device=dev)
    r = torch.randn(M, N, device=dev)
    out = model(x, r)
    errs["eager"] = _rel(out, _ref(x.to(torch.bfloat16), W, bias, scale, act, r))

    # torch.compile: fullgraph=True fails on any graph break; CPU runs use aot_eager (no C++ compiler needed)
    compiled = torch.compile(model, fullgraph=True, backend="inductor" if cuda else "aot_eager")
    for trial in range(2):
        x, r = torch.randn(M, K, device=dev), torch.randn(M, N, device=dev)
        out = compiled(x, r)
        errs[f"compiled {trial}"] = _rel(out, _ref(x.to(torch.bfloat16), W, bias, scale, act, r))

    if cuda:
        # CUDA graph: warm up on a side stream (compile, module load, the launch fast path), capture
        # one call, then replay it on new input contents written into the captured tensor
        op = gemm_op(act)
        A = torch.randn(M, K, device=dev).to(torch.bfloat16)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                op(A, W, bias, scale)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            C = op(A, W, bias, scale)
        for trial in range(2):
            A.copy_(torch.randn(M, K, device=dev))
            g.replay()
            torch.cuda.synchronize()
            errs[f"cuda graph {trial}"] = _rel(C, _ref(A, W, bias, scale, act))
    return errs


if __name__ == "__main__":
    M, N, K = (int(v) for v in sys.argv[1:4]) if len(sys.argv) >= 4 else (256, 192, 160)
    errs = run(M, N, K)
    for what, err in errs.items():
        print(f"gemm op {M}x{N}x{K} {what:13s} on {tile.current_target()}: relative error {err:.2e}")
        assert err < 1e-2, (what, err)
