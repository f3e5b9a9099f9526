"""`import tile` is light: tile.load_compiled runs an AOT artifact without the front end, passes, code
generator or llvmlite; the language namespace still works as before once used."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("tile.dsl", "tile.passes", "tile.codegen", "llvmlite", "lark", "tile.compiler", "tile.kernel")


def _run(code: str, tmp_path):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_load_compiled_without_the_compiler(tmp_path):
    from tile.ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
    from tile.ir.core import Function
    from tile.ir.dtypes import dtype
    from tile.ir.types import ScalarType, TensorType
    f = Function("k", [TensorType(dtype("f32"), (None,)), ScalarType(dtype("i32"))], ["X", "n"])
    art = Artifact(KernelMeta(name="k", target="sm_90a", num_threads=128, params=flatten_params(f)),
                   ptx="// ptx", signature=signature_of_function(f))
    art.save(tmp_path / "k.tilec")
    out = _run(f"""\
        import sys, json
        import tile
        k = tile.load_compiled({str(tmp_path / 'k.tilec')!r})
        import tile.runtime.launch                    # what k[grid](...) imports
        launcher = k[(1,)]
        print(json.dumps({{"loaded": sorted(m for m in {HEAVY!r} if m in sys.modules),
                          "name": k.name, "sig": k.artifact.signature}}))
        """, tmp_path)
    assert out["loaded"] == [], f"load_compiled imported {out['loaded']}"
    assert out["name"] == "k" and out["sig"] == [["X", "tensor<?xf32>"], ["n", "i32"]]


def test_import_tile_is_light_and_the_language_loads_on_use(tmp_path):
    out = _run("""\
        import sys, json, time
        t = time.perf_counter()
        import tile
        dt = time.perf_counter() - t
        before = sorted(m for m in ("tile.dsl", "tile.passes", "tile.codegen", "llvmlite") if m in sys.modules)
        from tile import bf16, f32, kernel
        import tile.kernel                            # the submodule import leaves tile.kernel the decorator
        ok = callable(tile.kernel) and tile.kernel is kernel and tile.kernel.__module__ == "tile.kernel"
        names = {n: hasattr(tile, n) for n in ("load", "store", "sum", "constexpr", "Tensor", "CompileError",
                                               "Kernel", "current_target", "int4", "Array", "layout", "compiler")}
        from tile import *
        print(json.dumps({"before": before, "seconds": dt, "ok": ok, "names": names, "bf16": str(bf16),
                          "star": "Kernel" in dir() and "load" in dir() and "sum" not in dir(),
                          "module": tile.CompileError.__module__}))
        """, tmp_path)
    assert out["before"] == []
    assert out["ok"] and all(out["names"].values()), out["names"]
    assert out["bf16"] == "bf16" and out["star"] and out["module"] == "tile"
    assert out["seconds"] < 1.0


def test_kernels_still_resolve_tile_names(tmp_path):
    (tmp_path / "kern.py").write_text(textwrap.dedent("""\
        import tile
        from tile import f32

        @tile.kernel
        def add1(X: tile.Tensor[f32, 1], BLOCK: tile.constexpr = 4):
            x = tile.load(X, (0,), (BLOCK,))
            tile.store(X, (0,), tile.exp(x * 0.0) + x)
        """))
    out = _run("""\
        import os, json, numpy as np
        os.environ["TILEC_TARGET"] = "cpu"
        import kern
        x = np.arange(4, dtype=np.float32)
        kern.add1[(1,)](x)
        print(json.dumps(x.tolist()))
        """, tmp_path)
    assert out == [1.0, 2.0, 3.0, 4.0]


def test_unknown_attribute_is_an_attribute_error():
    import pytest
    import tile
    with pytest.raises(AttributeError, match="module 'tile' has no attribute 'nope'"):
        tile.nope


def test_tilec_never_imports_torch(tmp_path):
    """torch is optional: `import tile`, `tile.torch_op` (the attribute, not a call), the runtime's
    launch module and a launch in the interpreter load no torch (meaningful where torch is installed)."""
    (tmp_path / "kern2.py").write_text(textwrap.dedent("""\
        import tile
        from tile import f32

        @tile.kernel
        def add1(X: tile.Tensor[f32, 1], BLOCK: tile.constexpr = 4):
            tile.store(X, (0,), tile.load(X, (0,), (BLOCK,)) + 1.0)
        """))
    out = _run("""\
        import os, sys, json, numpy as np
        os.environ["TILEC_TARGET"] = "cpu"
        import tile
        op = tile.torch_op
        import tile.torchlib, tile.runtime.launch, tile.runtime.device
        import kern2
        x = np.zeros(4, np.float32)
        kern2.add1[(1,)](x)
        print(json.dumps({"torch": "torch" in sys.modules, "callable": callable(op), "x": x.tolist()}))
        """, tmp_path)
    assert out == {"torch": False, "callable": True, "x": [1.0, 1.0, 1.0, 1.0]}
