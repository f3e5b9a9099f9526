"""@tile.autotune (tile/autotuner.py) without a GPU: the interpreter's untimed choice, pruning before
code generation (counted), the per-key memory of winners, restore / reset_to_zero between timed
trials and persistence across processes (both with a fake timer: a fake driver whose events read a
clock the fake launches advance), and parallel compilation giving the serial artifacts. The GPU
test (the gallery GEMM tuned on the device, checked against float64) is at the end."""
import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import on_cpu

import tile
from tile import autotuner, compiler, f32
from tile.runtime import cache as rc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test compiles and persists into its own empty cache directory."""
    c = rc.KernelCache(tmp_path / "cache")
    monkeypatch.setattr(rc, "_DEFAULT", c)
    monkeypatch.delenv("TILEC_AUTOTUNE_LOG", raising=False)
    monkeypatch.delenv("TILEC_AUTOTUNE_WORKERS", raising=False)
    return c


@tile.kernel
def accumulate(C: tile.Tensor[f32, 1], X: tile.Tensor[f32, 1], n: int, BLOCK: tile.constexpr = 32):
    """C += X (reads its output: a search that does not restore C corrupts it)."""
    i = tile.block_id(0) * BLOCK
    tile.store(C, (i,), tile.load(C, (i,), (BLOCK,)) + tile.load(X, (i,), (BLOCK,)))


@tile.kernel
def stage(X: tile.Tensor[f32, 2], Y: tile.Tensor[f32, 2], ROWS: tile.constexpr, COLS: tile.constexpr = 64):
    """Y = 2 X through a (ROWS, COLS) f32 shared tile: ROWS=1024 needs 256 KB of shared memory."""
    s = tile.alloc_shared((ROWS, COLS), f32)
    s.store(tile.load(X, (tile.block_id(0) * ROWS, 0), (ROWS, COLS)))
    tile.barrier()
    tile.store(Y, (tile.block_id(0) * ROWS, 0), s.load() * 2.0)


def grid1(meta):
    return (tile.cdiv(meta["n"], meta["BLOCK"]),)


COST_MS = {16: 3.0, 32: 1.0, 64: 2.0}     # the fake GPU's time per launch: BLOCK=32 is the fastest


class FakeEvent:
    def __init__(self, drv):
        self.drv, self.t = drv, None

    def record(self, stream=None):
        self.t = self.drv.clock
        return self

    def synchronize(self):
        pass

    def elapsed_ms(self, end):
        return end.t - self.t


class FakeDriver:
    """The driver interface's timing part: events read `clock`, which the fake launches advance."""

    def __init__(self):
        self.clock = 0.0

    def Event(self, timing=True):
        return FakeEvent(self)

    def synchronize(self):
        pass


class FakeBench:
    def __init__(self):
        self.driver = FakeDriver()
        self.device_name = "Fake GPU 80GB"

    def flusher(self, stream):
        return None


def fake_gpu(tuner, monkeypatch, C):
    """Time `tuner` with the fake bench; every launch advances the clock by its config's cost and
    records (BLOCK, C as the launch found it)."""
    bench = FakeBench()
    tuner._bench = bench
    seen = []
    run = tuner.kernel.run

    def timed_run(grid, *args, **kw):
        seen.append((kw["BLOCK"], C.copy()))
        bench.driver.clock += COST_MS[kw["BLOCK"]]
        return run(grid, *args, **kw)
    monkeypatch.setattr(tuner.kernel, "run", timed_run)
    return seen


def tuned(**kw):
    configs = [tile.Config(BLOCK=16), tile.Config(BLOCK=32, num_warps=2), tile.Config(BLOCK=64)]
    return tile.autotune(configs=configs, key=["n"], warmup=2, rep=5, **kw)(tile.kernel(accumulate.fn))


# ------------------------------------------------------------------------------------ Config
def test_config():
    c = tile.Config(BM=128, BN=64, num_warps=4, stages=3)
    assert c.all_kwargs() == {"BM": 128, "BN": 64, "num_warps": 4, "num_stages": 3}
    assert c == tile.Config({"BN": 64, "BM": 128}, num_warps=4, num_stages=3) and str(c) == \
        "BM=128, BN=64, num_warps=4, num_stages=3"
    assert tile.Config({"stages": 2}).all_kwargs() == {"stages": 2}      # a constexpr named like the option
    with pytest.raises(ValueError, match="power of two"):
        tile.Config(BM=1, num_warps=3)
    with pytest.raises(ValueError, match="disagree"):
        tile.Config(stages=2, num_stages=3)


def test_decorator_errors():
    with pytest.raises(ValueError, match="has no parameter 'M'.*A.shape"):
        tile.autotune(configs=[tile.Config(BLOCK=32)], key=["M"])(accumulate)
    with pytest.raises(ValueError, match="'n' is not a tensor parameter"):
        tile.autotune(configs=[tile.Config(BLOCK=32)], key=["n"], restore=["n"])(accumulate)
    with pytest.raises(ValueError, match="both reset_to_zero and restore"):
        tile.autotune(configs=[tile.Config(BLOCK=32)], restore=["C"], reset_to_zero=["C"])(accumulate)
    with pytest.raises(ValueError, match="only 'early_config_prune'"):
        tile.autotune(configs=[tile.Config(BLOCK=32)], prune_configs_by={"perf_model": None, "top_k": 2})(accumulate)
    t = tile.autotune(configs=[tile.Config(BLOCK=32)], restore_value=["C"],          # Triton's spellings
                      prune_configs_by={"early_config_prune": lambda cs, args: cs})(accumulate)
    assert t.restore == ["C"] and t.prune is not None
    t = tile.autotune(configs=[tile.Config(BLOCK=32)], key=["n"])(accumulate)
    c, x = np.zeros(64, np.float32), np.ones(64, np.float32)
    with pytest.raises(TypeError, match="BLOCK is chosen by @tile.autotune"):
        on_cpu(t[grid1], c, x, 64, BLOCK=64)


# ------------------------------------------------------------------------------- the interpreter
def test_interpreter_takes_the_first_valid_config_untimed():
    seen = []

    def prune(configs, args):
        seen.append(args["n"])
        return [c for c in configs if c.kwargs["BLOCK"] != 16]
    t = tuned(prune=prune)
    rng = np.random.default_rng(0)
    c0, x = rng.standard_normal(100).astype(np.float32), rng.standard_normal(100).astype(np.float32)
    c = c0.copy()
    on_cpu(t[grid1], c, x, 100)
    assert np.array_equal(c, c0 + x)                     # one launch: nothing ran before the real one
    assert seen == [100] and t.searches == 1
    assert [(tr.config.kwargs["BLOCK"], tr.status) for tr in t.last_search] == [(32, "chosen")]
    assert list(t.best.values()) == [tile.Config(BLOCK=32, num_warps=2)]
    assert not list((rc.default_cache().directory / "autotune").glob("*"))    # untimed choices are not kept


# ---------------------------------------------------------------------------------- pruning
def test_shared_memory_pruned_before_code_generation(monkeypatch):
    calls = []
    generate = compiler.generate

    def counting(module, target, **kw):
        calls.append(module.functions[0].attrs.get("shared_bytes"))
        return generate(module, target, **kw)
    monkeypatch.setattr(compiler, "generate", counting)
    t = tile.autotune(configs=[tile.Config(ROWS=1024), tile.Config(ROWS=32)], key=[])(stage)
    trials = t.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], target="sm_90a", workers=0)
    big, small = trials
    assert big.status == "pruned" and "262144 bytes of shared memory" in big.reason and "232448" in big.reason
    assert big.compiled is None and big.shared_bytes == 262144
    assert small.status == "ok" and small.shared_bytes == 8192 and small.compiled.ptx
    assert calls == [8192]                               # code generation ran for the small config only
    with pytest.raises(tile.TileError, match="262144 bytes"):      # what generating the big one costs
        stage.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], ROWS=1024, target="sm_90a")
    assert calls == [8192, 262144]


def test_threads_and_registers_pruned():
    t = tile.autotune(configs=[tile.Config(ROWS=32, num_warps=64)], key=[])(stage)
    (tr,) = t.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], target="sm_90a", workers=0)
    assert tr.status == "pruned" and "2048 threads per block" in tr.reason

    class Art:                                           # ptxas: 255 registers x 512 threads > 64K
        meta = type("M", (), {"shared_bytes": 0, "num_threads": 512})()
        extra = {"ptxas": {"registers": 255, "spill_stores": 8, "spill_loads": 8}}
    tr = autotuner.Trial(tile.Config(ROWS=32), compiled=type("CK", (), {"artifact": Art()})())
    autotuner._check_resources(tr, compiler.resolve("sm_90a"), autotuner._limits(compiler.resolve("sm_90a")))
    assert tr.status == "pruned" and "255 registers x 512 threads > 65536" in tr.reason and tr.spill_bytes == 16


# ------------------------------------------------------------------------- timing (fake GPU)
@pytest.mark.parametrize("mode", ["restore", "reset_to_zero", "neither"])
def test_trials_see_restored_or_zeroed_outputs(mode, monkeypatch):
    t = tuned(**({mode: ["C"]} if mode != "neither" else {}))
    rng = np.random.default_rng(1)
    c0, x = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    c = c0.copy()
    seen = fake_gpu(t, monkeypatch, c)
    on_cpu(t[grid1], c, x, 128)
    assert [tr.config.kwargs["BLOCK"] for tr in t.last_search] == [16, 32, 64]
    assert [tr.ms for tr in t.last_search] == [COST_MS[16], COST_MS[32], COST_MS[64]]
    assert list(t.best.values()) == [tile.Config(BLOCK=32, num_warps=2)]       # the fastest, not the first
    trials, real = seen[:-1], seen[-1]
    assert len(trials) >= 3 * 8 and real[0] == 32
    if mode == "restore":                               # every trial, and the real launch, found C as given
        assert all(np.array_equal(s, c0) for _, s in seen)
        assert np.array_equal(c, c0 + x)
    elif mode == "reset_to_zero":
        assert all(not s.any() for _, s in seen)
        assert np.array_equal(c, x)
    else:                                               # the control: without either, trials pile up
        assert not np.allclose(c, c0 + x)


def test_a_known_key_does_not_search_again(monkeypatch):
    t = tuned(restore=["C"])
    x = np.ones(128, np.float32)
    c = np.zeros(128, np.float32)
    seen = fake_gpu(t, monkeypatch, c)
    on_cpu(t[grid1], c, x, 128)
    n = len(seen)
    on_cpu(t[grid1], c, x, 128)
    assert t.searches == 1 and len(seen) == n + 1        # one launch, no trials
    assert np.array_equal(c, 2 * x)
    on_cpu(t[grid1], c[:96], x[:96], 96)                 # another key: a new search
    assert t.searches == 2 and len(seen) > n + 2 and len(t.best) == 2


def test_cache_info_and_clear_count_the_winners(monkeypatch, private_cache, capsys):
    from tile import cli
    monkeypatch.setenv("TILEC_CACHE_DIR", str(private_cache.directory))
    t = tuned()
    c, x = np.zeros(64, np.float32), np.ones(64, np.float32)
    fake_gpu(t, monkeypatch, c)
    on_cpu(t[grid1], c, x, 64)
    capsys.readouterr()
    assert cli.main(["cache", "info"]) == 0 and "autotune:  1 winner" in capsys.readouterr().out
    assert cli.main(["cache", "clear"]) == 0 and "and 1 autotune winner from" in capsys.readouterr().out
    assert not list((private_cache.directory / "autotune").glob("*.json"))


PERSIST = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, tile
from test_autotune import FakeBench, COST_MS, accumulate, grid1
t = tile.autotune(configs=[tile.Config(BLOCK=16), tile.Config(BLOCK=32), tile.Config(BLOCK=64)], key=["n"],
                  restore=["C"], warmup=1, rep=3)(accumulate)
t._bench = b = FakeBench()
run = t.kernel.run
def timed(grid, *a, **kw):
    b.driver.clock += COST_MS[kw["BLOCK"]]
    return run(grid, *a, **kw)
t.kernel.run = timed
c, x = np.zeros(64, np.float32), np.ones(64, np.float32)
t[grid1](c, x, 64)
assert np.array_equal(c, x)
print("SEARCHES", t.searches, repr(list(t.best.values())[0]))
"""


def test_winner_persists_across_processes(tmp_path):
    env = dict(os.environ, TILEC_TARGET="cpu", TILEC_CACHE_DIR=str(tmp_path / "shared"), TILEC_AUTOTUNE_LOG="1")
    script = PERSIST.format(tests=str(ROOT / "tests"))

    def run():
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().splitlines()[-1], p.stderr
    first, log1 = run()
    assert first == "SEARCHES 1 Config(BLOCK=32)"
    assert "3.0000 ms" in log1 and "winner: BLOCK=32" in log1
    (rec,) = (tmp_path / "shared" / "autotune").glob("accumulate-*.json")
    assert stat.S_IMODE(rec.stat().st_mode) == 0o600
    doc = json.loads(rec.read_text())
    assert doc["gpu"] == "Fake GPU 80GB" and json.loads(doc["config"]) == {"BLOCK": 32}
    second, log2 = run()
    assert second == "SEARCHES 0 Config(BLOCK=32)" and "chosen earlier" in log2


class HostMemoryDriver:
    """The driver calls ArgState makes, on host memory standing in for device memory."""

    def __init__(self):
        self.keep, self.calls = [], []

    def alloc(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        self.keep.append(buf)
        return type("Alloc", (), {"ptr": buf.ctypes.data, "nbytes": nbytes})()

    def memcpy_dtod(self, dst, src, nbytes, stream=None):
        self.calls.append(("copy", nbytes, stream))
        ctypes.memmove(dst, src, nbytes)

    def memset_d8(self, dst, value, nbytes, stream=None):
        self.calls.append(("set", nbytes, stream))
        ctypes.memset(dst, value, nbytes)

    def synchronize(self):
        pass


def test_argstate_on_device_tensors():
    """restore / reset_to_zero of GPU tensors: the byte span each covers, through the driver."""
    from tile.runtime.device import DeviceArray
    from tile.runtime.timing import ArgState
    rng = np.random.default_rng(2)
    big = rng.standard_normal((8, 6)).astype(np.float32)
    c0 = big.copy()
    C = DeviceArray.from_pointer(big.ctypes.data, (8, 6), "f32", owner=big)
    sub = DeviceArray.from_pointer(big[2:, 1:].ctypes.data, (6, 3), "f32", strides=(6, 1), owner=big)
    acc = np.ones(10, np.float32)
    Z = DeviceArray.from_pointer(acc.ctypes.data, (10,), "f32", owner=acc)
    drv = HostMemoryDriver()
    st = ArgState({"C": C, "Z": Z}, restore=["C"], zero=["Z"], driver=drv, stream=7)
    st.save()
    big[:] = -1.0
    acc[:] = 5.0
    st.prepare()
    assert np.array_equal(big, c0) and not acc.any()
    big[:] = 3.0
    st.finish()
    assert np.array_equal(big, c0) and not acc.any()
    assert ("copy", 8 * 6 * 4, 7) in drv.calls and ("set", 40, 7) in drv.calls
    st = ArgState({"C": sub}, restore=["C"], driver=drv)          # a strided view: its whole span
    st.save()
    big[:] = 0.0
    st.prepare()
    assert np.array_equal(big[2:, 1:4], c0[2:, 1:4]) and np.array_equal(big[2:7, 4:], c0[2:7, 4:])
    with pytest.raises(ValueError, match="strided view"):           # zeroing that span would hit neighbours
        ArgState({"C": sub}, zero=["C"], driver=drv)


# ------------------------------------------------------------------------ parallel compilation
def test_parallel_compilation_gives_the_serial_artifacts(tmp_path, monkeypatch):
    sig = (tile.Tensor[f32, 2], tile.Tensor[f32, 2])
    configs = [tile.Config(ROWS=32), tile.Config(ROWS=64, num_warps=8), tile.Config(ROWS=1024)]
    serial = tile.autotune(configs=configs, key=[])(tile.kernel(stage.fn)).compile(*sig, target="sm_90a", workers=0)
    monkeypatch.setattr(rc, "_DEFAULT", rc.KernelCache(tmp_path / "other"))
    calls = []
    monkeypatch.setattr(compiler, "generate", lambda *a, **k: calls.append(1))     # the parent must not generate
    k = tile.kernel(stage.fn)
    par = tile.autotune(configs=configs, key=[])(k).compile(*sig, target="sm_90a", workers=2)
    autotuner._drop_pool()
    assert [t.status for t in par] == ["ok", "ok", "pruned"] and not calls
    assert [t.source for t in par[:2]] == ["worker", "worker"]
    for s, p in zip(serial[:2], par[:2]):
        assert p.compiled.ptx == s.compiled.ptx and p.compiled.meta == s.compiled.meta
    assert len(list((tmp_path / "other").glob("??/*.json"))) == 2, sorted(str(p) for p in (tmp_path / "other").rglob("*"))      # the workers filled the disk cache
    assert par[1].compiled.module.functions[0].attrs["shared_bytes"] == 16384   # lowered on demand


def test_no_worker_processes_compiles_serially(monkeypatch):
    def no_pool(*a, **k):
        raise OSError("no processes here")
    monkeypatch.setattr(autotuner, "_pool", no_pool)
    t = tile.autotune(configs=[tile.Config(ROWS=32), tile.Config(ROWS=64)], key=[], log=True)(tile.kernel(stage.fn))
    trials = t.compile(tile.Tensor[f32, 2], tile.Tensor[f32, 2], target="sm_90a", workers=2)
    assert [tr.status for tr in trials] == ["ok", "ok"] and [tr.source for tr in trials] == ["built", "built"]


# --------------------------------------------------------------------------------- num_stages
def test_num_stages_sets_loops_without_their_own():
    @tile.kernel
    def two_loops(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1]):
        acc = tile.zeros((16,), f32)
        for k in tile.range(0, 64, 16):
            acc = acc + tile.load(X, (k,), (16,))
        for k in tile.range(0, 64, 16, stages=2):
            acc = acc + tile.load(X, (k,), (16,))
        tile.store(Y, (0,), acc)
    ir = two_loops.compile(tile.Tensor[f32, 1], tile.Tensor[f32, 1], target="cpu", num_stages=3).ir
    assert ir.count("stages = 3") == 1 and ir.count("stages = 2") == 1
    assert "num_stages" not in ir
    assert "stages" not in two_loops.compile(tile.Tensor[f32, 1], tile.Tensor[f32, 1], target="cpu").ir.replace(
        "stages = 2", "")


# ----------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_autotunes_the_gallery_gemm(monkeypatch, capfd):
    if compiler.gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    import importlib.util
    spec = importlib.util.spec_from_file_location("gallery_gemm_autotune", ROOT / "examples" / "gemm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    configs = [tile.Config(BM=128, BN=128, BK=64, STAGES=3), tile.Config(BM=64, BN=128, BK=64, STAGES=4),
               tile.Config(BM=64, BN=64, BK=64, STAGES=4, num_warps=8),
               tile.Config(BM=256, BN=256, BK=128, STAGES=4)]           # needs 512 KB of shared memory
    g = tile.autotune(configs=configs, key=["A.shape[0]", "B.shape[1]", "A.shape[1]"], restore=["C"],
                      warmup=5, rep=20, log=True)(mod.gemm)
    rng = np.random.default_rng()
    M, N, K = 300, 520, 256
    A = tile.asarray(rng.standard_normal((M, K)), tile.bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), tile.bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    dA, dB, dbias = tile.to_device(A), tile.to_device(B), tile.to_device(bias)
    dC = tile.empty((M, N), "bf16").fill_bytes(0xFF)       # NaN: every element must be written
    grid = lambda meta: (tile.cdiv(M, meta["BM"]), tile.cdiv(N, meta["BN"]))     # noqa: E731
    g[grid](dA, dB, dC, dbias, 1.0)
    ref = A.numpy().astype(np.float64) @ B.numpy().astype(np.float64)
    out = dC.numpy().astype(np.float64)
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2
    status = {str(t.config): t.status for t in g.last_search}
    assert status[str(configs[3])] == "pruned"
    timed = [t for t in g.last_search if t.status == "ok"]
    assert len(timed) == 3 and all(t.ms and t.ms > 0 for t in timed)
    assert g.best[next(iter(g.best))] == min(timed, key=lambda t: t.ms).config
    assert "winner:" in capfd.readouterr().err
    dC.fill_bytes(0xFF)
    g[grid](dA, dB, dC, dbias, 1.0)                          # the same key: no new search
    assert g.searches == 1 and np.isfinite(dC.numpy()).all()
    assert list((rc.default_cache().directory / "autotune").glob("gemm-*.json"))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["restore", "reset_to_zero"])
def test_gpu_trials_restore_or_zero_device_outputs(mode, monkeypatch):
    if compiler.gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    t = tile.autotune(configs=[tile.Config(BLOCK=16), tile.Config(BLOCK=32, num_warps=2), tile.Config(BLOCK=64)],
                      key=["n"], warmup=2, rep=5, **{mode: ["C"]})(tile.kernel(accumulate.fn))
    rng = np.random.default_rng()
    c0, x = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    dC, dX = tile.to_device(c0), tile.to_device(x)
    t[grid1](dC, dX, 1000)                                   # dozens of trial launches, then the real one
    assert t.searches == 1 and all(tr.ms for tr in t.last_search)
    want = (c0 + x) if mode == "restore" else x               # exactly one accumulation survived
    assert np.array_equal(dC.numpy(), want)
