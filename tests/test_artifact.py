"""The compiled-artifact contract: codegen produces one `Artifact`, it serializes and loads back
whole, `tilec compile -o K.tilec` writes it, `tile.load_compiled` launches it (GPU part marked)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tile
from tile.ir.artifact import FORMAT, Artifact, KernelMeta, flatten_params

ROOT = Path(__file__).resolve().parent.parent
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")


def _tilec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tile.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_artifact_round_trips_whole(tmp_path):
    meta = KernelMeta("k", "sm_90a", 256, shared_bytes=4096, params=[], cluster=(2, 1, 1))
    art = Artifact(meta, ptx="// ptx", cubin=b"\x7fELF\x00bytes", signature=[["X", "tensor<?x?xf32>"], ["n", "i32"]],
                   extra={"registers": 90}, llvm_ir="not kept")
    art.save(tmp_path / "k.tilec")
    back = Artifact.load(tmp_path / "k.tilec")
    assert back.meta == meta and back.meta.cluster == (2, 1, 1) and back.ptx == "// ptx"
    assert back.cubin == art.cubin and back.signature == art.signature and back.extra == {"registers": 90}
    assert back.llvm_ir == ""                              # in-process views are not serialized
    doc = json.loads((tmp_path / "k.tilec").read_text())
    assert doc["format"] == FORMAT
    doc["format"] = "something else"
    with pytest.raises(ValueError, match="not a tilec artifact"):
        Artifact.from_json(doc)
    doc["format"] = FORMAT
    doc["ptx"] = doc["cubin"] = None
    with pytest.raises(ValueError, match="holds no code"):
        Artifact.from_json(doc)


def test_codegen_produces_the_artifact():
    from tile.compiler import compile as tc_compile
    k = _vadd()
    ck = k.compile(tile.Tensor[tile.f32, 1], tile.Tensor[tile.f32, 1], target="sm_90a")
    art = ck.artifact
    assert isinstance(art, Artifact) and art.target == "sm_90a" and ".entry vadd" in art.ptx
    assert art.meta.params == flatten_params(ck.function) and art.meta.num_threads == 128
    assert art.signature == [["X", "tensor<?xf32>"], ["Y", "tensor<?xf32>"]]
    again = tc_compile(ck.module, "sm_90a")
    assert again.ptx == art.ptx


def _vadd():
    @tile.kernel
    def vadd(X: tile.Tensor[tile.f32, 1], Y: tile.Tensor[tile.f32, 1]):
        i = tile.block_id(0) * 128
        tile.store(Y, (i,), tile.load(X, (i,), (128,)) * 2.0 + 1.0)
    return vadd


def test_cli_writes_an_artifact(tmp_path):
    out = tmp_path / "gemm.tilec"
    r = _tilec("compile", str(ROOT / "examples" / "gemm.py") + "::gemm", "--target", "sm_90a", "-o", str(out))
    assert r.returncode == 0, r.stderr
    art = tile.load_compiled(out).artifact
    assert art.name == "gemm" and art.target == "sm_90a" and "wgmma" in art.ptx
    assert [n for n, _ in art.signature] == ["A", "B", "C", "bias", "scale"]
    assert art.meta.shared_bytes > 0 and art.meta.num_threads == 128


@pytest.mark.gpu
def test_load_compiled_launches(tmp_path):
    from tile.compiler import gpu_arch
    arch = gpu_arch()
    if arch is None:
        pytest.skip("no NVIDIA GPU/driver found")
    k = _vadd()
    ck = k.compile(tile.Tensor[tile.f32, 1], tile.Tensor[tile.f32, 1], target=arch)
    ck.artifact.save(tmp_path / "v.tilec")
    loaded = tile.load_compiled(tmp_path / "v.tilec")
    x = np.random.default_rng().standard_normal(1000).astype(np.float32)
    y = np.full(1000, np.nan, np.float32)
    loaded[(8,)](x, y)
    np.testing.assert_array_equal(y, x * np.float32(2) + np.float32(1))


def test_drivers_share_one_interface():
    """runtime.cuda and runtime.hip expose the same driver interface (runtime/driver.py), with the
    same launch signature, so the launcher is written once."""
    import inspect
    from tile.runtime import cuda, hip
    from tile.runtime.driver import INTERFACE, driver_for
    for mod in (cuda, hip):
        missing = [n for n in INTERFACE if not hasattr(mod, n)]
        assert not missing, (mod.__name__, missing)
    sig = [list(inspect.signature(m.Function.launch).parameters) for m in (cuda, hip)]
    assert sig[0] == sig[1] == ["self", "grid", "block", "args", "shared_bytes", "stream", "cluster"]
    assert driver_for("sm_90a") is cuda and driver_for("gfx942") is hip
    with pytest.raises(ValueError, match="interpreter"):
        driver_for("cpu")
