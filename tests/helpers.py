"""Helpers the test files share (the tests directory is on sys.path under pytest)."""
import os


def on_cpu(fn, *args, **kwargs):
    """fn(*args) with launches in the interpreter (TILEC_TARGET=cpu for the call)."""
    saved = os.environ.get("TILEC_TARGET")
    os.environ["TILEC_TARGET"] = "cpu"
    try:
        return fn(*args, **kwargs)
    finally:
        if saved is None:
            del os.environ["TILEC_TARGET"]
        else:
            os.environ["TILEC_TARGET"] = saved


def gpu_and_interpreter(kernel, grid, args, outs, **consts):
    """Run kernel on the GPU and in the interpreter on copies of the same inputs; return
    [(gpu output, interpreter output)] for the argument positions in `outs`."""
    gpu_args = [a.copy() if hasattr(a, "copy") else a for a in args]
    kernel[grid](*gpu_args, **consts)
    cpu_args = [a.copy() if hasattr(a, "copy") else a for a in args]
    on_cpu(kernel[grid], *cpu_args, **consts)
    return [(gpu_args[i], cpu_args[i]) for i in outs]


def signature_kwargs(kernel):
    """Kernel.compile keyword arguments for a gallery kernel without launch arguments: its annotated
    signature, tensors whose dtype/rank come only from the launch given what the example's module
    names in EXAMPLE_SIGNATURES[kernel name] (IR type text per parameter), else int4 / rank 2."""
    from tile import cli
    given = getattr(kernel, "fn", None)
    given = dict(getattr(given, "__globals__", {}).get("EXAMPLE_SIGNATURES", {}).get(kernel.name, {}))
    try:
        return cli.signature_args(kernel, given)
    except cli.CLIError:
        defs = {p.name: f"tensor<{'x'.join(['?'] * (p.rank or 2))}x{p.dtype or 'int4'}>"
                for p in kernel.params if p.kind == "tensor" and (p.dtype is None or p.rank is None)}
        defs.update(given)
        return cli.signature_args(kernel, defs)


def load_example(name):
    """The gallery file examples/<name>.py as a module, loaded once per process (an example that
    registers torch custom ops must not register them twice)."""
    import importlib.util
    import sys
    from pathlib import Path
    key = f"gallery_shared_{name}"
    mod = sys.modules.get(key)
    if mod is None:
        path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))          # sibling imports (from gemm import ...)
        spec = importlib.util.spec_from_file_location(key, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[key] = mod
    return mod


def assemble(ptx: str, arch: str, tmp_path) -> dict:
    """ptxas -v on the PTX (it must assemble): the parsed resource report, its full text under 'log'."""
    import subprocess
    from tile.codegen import parse_ptxas_report
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    r = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return parse_ptxas_report(r.stderr)


class LazyExample:
    """examples/<name>.py, loaded at first attribute use, not at collection: load_example puts examples/
    on sys.path, and at collection that would land it behind the benchmarks/ folder other test files
    put there (whose gemm.py would then shadow the gallery's for examples/torch_custom_op.py)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(load_example(self._name), attr)
