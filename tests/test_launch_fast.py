"""The launch fast path (no GPU: the driver is mocked): a repeated call signature skips binding and
DLPack, packs the same parameters as the general path into a preallocated buffer and makes one
driver call; anything unexpected falls back to the general path and its named errors."""
from __future__ import annotations

import ctypes
import sys
import time

import pytest

import tile
from tile import f32, i32

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "benchmarks"))
import launch_overhead_mock as M                               # noqa: E402


@pytest.fixture
def driver(monkeypatch, tmp_path):
    from tile import compiler
    from tile.runtime import cuda, launch as L
    monkeypatch.setenv("TILEC_TARGET", "sm_90a")
    monkeypatch.setenv("TILEC_PTXAS_REPORT", "0")
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(compiler, "_GPU_ARCH", ["sm_90a"])
    st = cuda._state
    monkeypatch.setattr(st, "ok", True)
    monkeypatch.setattr(st, "ctx_int", 1)
    monkeypatch.setattr(st, "device_count", 1)
    log = []

    def read(meta, addr):
        arr = (ctypes.c_void_p * len(meta.params)).from_address(addr)
        out = []
        for i, p in enumerate(meta.params):
            typ = {"ptr": ctypes.c_uint64, "i32": ctypes.c_int32, "i64": ctypes.c_int64,
                   "f32": ctypes.c_float, "f64": ctypes.c_double}[p.kind]
            out.append(typ.from_address(arr[i]).value)
        return out

    class FakeFunction:
        attributes = {"max_threads_per_block": 1024, "num_regs": 16}

        def __init__(self, compiled):
            self.meta = L.artifact_of(compiled).meta
            self.name = self.meta.name

        def launch(self, grid, block, params, shared=0, stream=None, cluster=(1, 1, 1)):
            log.append(("general", tuple(grid), read(self.meta, ctypes.addressof(params))))

        def launch_parts(self, block, shared, cluster):
            def call(handle, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
                log.append(("fast", (gx, gy, gz), read(self.meta, params)))
                return (0,)
            return {"call": call, "handle": 1, "block": block, "shared": shared, "stream": 0,
                    "stream_of": lambda h: h, "check": None}
    monkeypatch.setattr(L, "load_function", FakeFunction)
    monkeypatch.setattr(L, "_TORCH_STREAM", [lambda ordinal: 0])    # look-alike tensors: torch's default stream
    add1._fast.clear()                     # launchers of an earlier test hold that test's fake driver
    monkeypatch.setattr(L, "_LAUNCHERS", {})
    return log


@tile.kernel
def add1(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, BLOCK: tile.constexpr = 64):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


def T(n, ptr, dtype=M.float32, cuda=True):
    t = M.Tensor(n, ptr)
    t.dtype = dtype
    t.is_cuda = cuda
    return t


def test_fast_path_packs_what_the_general_path_packs(driver):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(16,)](x, y, 1000)
    add1[(16,)](x, y, 1000)
    x2, y2 = T(2000, 0x7F0000200000), T(2000, 0x7F0000300000)
    add1[(31, 2)](x2, y2, -5)
    kinds = [k for k, _, _ in driver]
    assert kinds == ["general", "fast", "fast"]
    assert driver[0][2] == driver[1][2] == [0x7F0000000000, 1000, 1, 0x7F0000100000, 1000, 1, 1000]
    assert driver[1][1] == (16, 1, 1)
    assert driver[2][1] == (31, 2, 1) and driver[2][2] == [0x7F0000200000, 2000, 1, 0x7F0000300000, 2000, 1, -5]


def test_fast_launch_can_be_switched_off(driver, monkeypatch):
    """TILEC_FAST_LAUNCH=0: every launch takes the general path (and packs the same values)."""
    monkeypatch.setenv("TILEC_FAST_LAUNCH", "0")
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    for _ in range(3):
        add1[(16,)](x, y, 1000)
    assert [k for k, _, _ in driver] == ["general"] * 3
    assert driver[0][2] == driver[2][2] == [0x7F0000000000, 1000, 1, 0x7F0000100000, 1000, 1, 1000]


def test_other_constexpr_or_dtype_is_another_specialization(driver):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    ck1 = add1[(16,)](x, y, 1000)
    ck2 = add1[(16,)](x, y, 1000, BLOCK=128)
    ck3 = add1[(16,)](x, y, 1000, BLOCK=128)
    assert ck1 is not ck2 and ck2 is ck3 and ck2.constexprs == {"BLOCK": 128}
    assert [k for k, _, _ in driver] == ["general", "general", "fast"]
    f16 = M._DType("torch.float16")
    with pytest.raises(TypeError, match="argument 'X' expects"):          # the general path's error
        add1[(16,)](T(8, 0x7F0000000000, f16), y, 8)


def test_fallbacks_give_the_general_errors(driver):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    add1[(4,)](x, y, 1000)
    assert driver[-1][0] == "fast"
    with pytest.raises(ValueError, match="'X'.*align"):
        add1[(4,)](T(1000, 0x7F0000000004), y, 1000)                     # misaligned
    with pytest.raises(ValueError, match="'Y'.*cuda|'Y'.*GPU"):
        add1[(4,)](x, T(1000, 0x7F0000100000, cuda=False), 1000)         # not on the GPU
    with pytest.raises(ValueError, match="'n'.*does not fit"):
        add1[(4,)](x, y, 1 << 40)                                         # out of i32
    n = len(driver)
    add1[(0,)](x, y, 1000)                                               # an empty grid launches nothing
    assert len(driver) == n
    add1[(4,)](x, y, 7)
    assert driver[-1][0] == "fast" and driver[-1][2][-1] == 7           # and the fast path still works


def test_positional_constexpr_is_never_taken_for_another_value(driver):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    a = add1[(4,)](x, y, 1000, 64)
    b = add1[(4,)](x, y, 1000, 128)
    c = add1[(4,)](x, y, 1000, 128)
    assert a.constexprs["BLOCK"] == 64 and b.constexprs["BLOCK"] == 128 and c is b
    assert [k for k, _, _ in driver] == ["general"] * 3


def test_a_changed_target_is_honoured(driver, monkeypatch):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    monkeypatch.setenv("TILEC_TARGET", "sm_80")
    ck = add1[(4,)](x, y, 1000)
    assert ck.target == "sm_80" and driver[-1][0] == "general"


def test_a_reset_target_gets_a_new_fast_launcher(driver):
    from tile import compiler
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    compiler.reset_target()                    # the memo is gone: the next launch resolves again
    add1[(4,)](x, y, 1000)
    add1[(4,)](x, y, 1000)
    assert [k for k, _, _ in driver] == ["general", "general", "fast"]


def test_the_last_signature_is_tried_first_and_never_taken_for_another(driver):
    """kernel._fast.hot serves the signature launched last; any other call (another constexpr
    keyword value or type, dtype, scalar type, argument count) falls through to the table or the
    general path and launches its own specialization."""
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    ck64 = add1[(4,)](x, y, 1000)
    ck128 = add1[(4,)](x, y, 1000, BLOCK=128)
    assert add1[(4,)](x, y, 1000, BLOCK=128) is ck128             # hot: BLOCK=128
    assert add1[(4,)](x, y, 1000) is ck64                         # no keyword: the table's entry
    assert add1[(4,)](x, y, 1000, BLOCK=64) is ck64               # the default given by keyword
    assert add1[(4,)](x, y, 1000, BLOCK=128) is ck128
    with pytest.raises(tile.CompileError, match="offset must be an integer"):
        add1[(4,)](x, y, 1000, BLOCK=128.0)                       # 128.0 is another constexpr: compiled
    assert [k for k, _, _ in driver] == ["general", "general", "fast", "fast", "general", "fast"]
    with pytest.raises(TypeError, match="argument 'n' expects"):
        add1[(4,)](x, y, 1000.0, BLOCK=128)                       # a float for the int parameter
    with pytest.raises(TypeError, match="add1\\(\\)"):
        add1[(4,)](x, y, BLOCK=128)                               # an argument missing


def test_fast_grids_and_their_limits(driver):
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    for grid, want in (((5,), (5, 1, 1)), (6, (6, 1, 1)), ((7, 2), (7, 2, 1)), ((8, 3, 2), (8, 3, 2)),
                       ((2 ** 31 - 1, 65535, 65535), (2 ** 31 - 1, 65535, 65535))):
        add1[grid](x, y, 1000)
        assert driver[-1][:2] == ("fast", want), grid
    n = len(driver)
    for grid in ((0,), (3, 0), (2 ** 31,), (1, 65536), (1, 1, 65536), (True,), (2.0,), (-1,), [3], (1, 2, 3, 4)):
        try:
            add1[grid](x, y, 1000)
        except (TypeError, ValueError, Exception):           # the general path's checks (or the driver's)
            pass
        assert all(k == "general" for k, _, _ in driver[n:]), grid
        n = len(driver)


def test_cluster_launches_take_the_fast_path(driver):
    """A kernel launched with cluster=2 gets a fast launcher too (the driver's call is cuLaunchKernelEx
    behind the same signature); a grid that is not whole clusters goes to the general path, which names
    the problem without launching."""
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000, cluster=2)
    add1[(6,)](x, y, 1000, cluster=2)
    assert [k for k, _, _ in driver] == ["general", "fast"] and driver[-1][1] == (6, 1, 1)
    n = len(driver)
    with pytest.raises(ValueError, match=r"kernel 'add1': grid \(5, 1, 1\) must be a multiple of the cluster shape"):
        add1[(5,)](x, y, 1000, cluster=2)
    assert len(driver) == n                                   # nothing launched


def test_scalar_checks_on_the_fast_path(driver):
    @tile.kernel
    def scale(X: tile.Tensor[f32], s: float, k: i32, BLOCK: tile.constexpr = 64):
        i = tile.block_id(0) * BLOCK
        tile.store(X, (i,), tile.load(X, (i,), (BLOCK,)) * s + k)
    x = T(64, 0x7F0000000000)
    scale[(1,)](x, 2.0, 3)
    scale[(1,)](x, -0.5, -(2 ** 31))
    assert driver[-1][0] == "fast" and driver[-1][2][-2:] == [-0.5, -(2 ** 31)]
    with pytest.raises(ValueError, match="'s'.*overflows f32"):
        scale[(1,)](x, 1e39, 3)
    with pytest.raises(ValueError, match="'k'.*does not fit"):
        scale[(1,)](x, 1.0, 2 ** 31)
    scale[(1,)](x, float("inf"), 3)                               # inf is a valid f32: the general path packs it
    assert driver[-1][0] == "general" and driver[-1][2][-2] == float("inf")
    scale[(1,)](x, 4, 3)                                          # an int for the float: packed as 4.0
    scale[(1,)](x, 4, 3)
    assert driver[-1][0] == "fast" and driver[-1][2][-2:] == [4.0, 3]


def test_another_thread_takes_the_general_path(driver):
    import threading
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    add1[(4,)](x, y, 1000)
    t = threading.Thread(target=lambda: add1[(4,)](x, y, 5))
    t.start()
    t.join()
    assert [k for k, _, _ in driver] == ["general", "fast", "general"] and driver[-1][2][-1] == 5


def test_fast_path_skips_binding_dlpack_and_the_general_packer(driver, monkeypatch):
    from tile.kernel import Kernel
    from tile.runtime import device, launch as L
    x, y = T(1 << 20, 0x7F0000000000), T(1 << 20, 0x7F0000400000)
    add1[(1024,)](x, y, 1 << 20)

    def boom(*a, **k):
        raise AssertionError("the fast path went through the general path")
    monkeypatch.setattr(Kernel, "bind", boom)
    monkeypatch.setattr(device, "extract_tensor", boom)
    monkeypatch.setattr(L, "launch", boom)
    monkeypatch.setattr(L._Plan, "pack", boom)
    for n in (1, 2, 3):
        add1[(n,)](x, y, n)
    assert [k for k, _, _ in driver] == ["general", "fast", "fast", "fast"]
    assert [g for _, g, _ in driver[1:]] == [(1, 1, 1), (2, 1, 1), (3, 1, 1)]


# ------------------------------------------------------------------------------ on the GPU
def _gpu_torch():
    try:
        import torch
        from tile.runtime import cuda
        return torch.cuda.is_available() and cuda.available()
    except Exception:                                      # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_torch(), reason="needs an NVIDIA GPU and torch")
def test_fast_path_on_the_gpu(monkeypatch):
    import torch
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    from tile import compiler
    compiler.reset_target()

    @tile.kernel
    def add_s(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, s: float, BLOCK: tile.constexpr = 256):
        i = tile.block_id(0) * BLOCK
        tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + s)
    for size, s in ((1000, 1.0), (4096, 2.5), (77, -1.0)):
        x = torch.randn(size, device="cuda")
        y = torch.empty_like(x)
        add_s[((size + 255) // 256,)](x, y, size, s)
        torch.cuda.synchronize()
        assert torch.allclose(y, x + s), size
    assert any(v is not None for v in add_s._fast.values())          # the later launches took the fast path
    x = torch.randn(1001, device="cuda")
    with pytest.raises(ValueError, match="'X'.*align"):
        add_s[(1,)](x[1:], torch.empty(1000, device="cuda"), 1000, 1.0)
    with pytest.raises(TypeError, match="'X'"):
        add_s[(1,)](x.half(), torch.empty(1001, device="cuda"), 1001, 1.0)
