"""Which CUDA stream a launch goes on (no GPU, no torch: the driver is mocked and the tensors are
torch look-alikes, as in test_launch_fast.py): with a torch tensor among the arguments and no
`stream=`, torch's current stream (read per call, on the general path and on the fast path); an
explicit `stream=` wins; launches without torch tensors stay on the legacy default stream (0).
The real thing -- a side stream and CUDA-graph capture on an H100 -- is in test_torch_op_gpu.py."""
from __future__ import annotations

import sys

import pytest

import tile
from tile import f32

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "benchmarks"))
import launch_overhead_mock as M                               # noqa: E402


@pytest.fixture
def driver(monkeypatch, tmp_path):
    """A mocked driver logging (path, stream handle) per launch, and a torch 'current stream' the test
    sets through `current[0]`."""
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
    monkeypatch.setattr(st, "device", __import__("types").SimpleNamespace(ordinal=0))
    log, current, asked = [], [0], []

    class FakeFunction:
        attributes = {"max_threads_per_block": 1024, "num_regs": 16}

        def __init__(self, compiled):
            self.name = L.artifact_of(compiled).meta.name

        def launch(self, grid, block, params, shared=0, stream=None, cluster=(1, 1, 1)):
            log.append(("general", cuda.stream_handle(stream)))

        def launch_parts(self, block, shared, cluster):
            def call(handle, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
                log.append(("fast", stream))
                return (0,)
            return {"call": call, "handle": 1, "block": block, "shared": shared, "stream": 0,
                    "stream_of": lambda h: h, "check": None}

    def torch_current_stream(ordinal):
        asked.append(ordinal)
        return current[0]
    monkeypatch.setattr(L, "load_function", FakeFunction)
    monkeypatch.setattr(L, "_LAUNCHERS", {})
    monkeypatch.setattr(L, "_TORCH_STREAM", [torch_current_stream])
    add1._fast.clear()
    return log, current, asked


@tile.kernel
def add1(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, BLOCK: tile.constexpr = 64):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


def T(n, ptr):
    return M.Tensor(n, ptr)


def test_torch_tensors_launch_on_torch_current_stream_on_both_paths(driver):
    log, current, asked = driver
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    current[0] = 0xAB00
    add1[(4,)](x, y, 1000)                                  # general path (and the fast launcher is built)
    add1[(4,)](x, y, 1000)                                  # fast path
    current[0] = 0                                          # torch's default stream: the legacy one
    add1[(4,)](x, y, 1000)
    current[0] = 0xCD00                                     # `with torch.cuda.stream(s)`: read per call
    add1[(4,)](x, y, 1000)
    assert log == [("general", 0xAB00), ("fast", 0xAB00), ("fast", 0), ("fast", 0xCD00)]
    assert asked and set(asked) == {0}                       # tilec's device ordinal


def test_an_explicit_stream_wins(driver):
    log, current, _ = driver
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    current[0] = 0xAB00
    add1[(4,)](x, y, 1000, stream=0x1200)
    add1[(4,)](x, y, 1000, stream=0x1200)                   # stream= keeps the general path
    add1[(4,)](x, y, 1000, stream=0)                        # 0: the legacy default stream, asked for
    assert log == [("general", 0x1200), ("general", 0x1200), ("general", 0)]


def test_without_torch_tensors_the_legacy_stream(driver):
    from tile.runtime.device import DeviceArray
    log, current, asked = driver
    current[0] = 0xAB00
    x = DeviceArray.from_pointer(0x7F0000000000, (1000,), "f32")
    y = DeviceArray.from_pointer(0x7F0000100000, (1000,), "f32")
    add1[(4,)](x, y, 1000)
    add1[(4,)](x, y, 1000)
    assert log == [("general", 0), ("fast", 0)] and not asked


def test_mixed_device_array_and_torch_tensor_follow_torch(driver):
    from tile.runtime.device import DeviceArray
    log, current, _ = driver
    current[0] = 0xAB00
    x = DeviceArray.from_pointer(0x7F0000000000, (1000,), "f32")
    y = T(1000, 0x7F0000100000)
    add1[(4,)](x, y, 1000)
    assert x._stream == 0xAB00                               # its pending work is on torch's stream
    add1[(4,)](x, y, 1000)
    assert log == [("general", 0xAB00), ("fast", 0xAB00)] and x._stream == 0xAB00


def test_torch_stream_fn_without_torch_imported(monkeypatch):
    """A torch look-alike with torch absent from sys.modules (the mocked benchmark): stream 0, and
    nothing is cached, so a later real torch is still found."""
    from tile.runtime import launch as L
    monkeypatch.setattr(L, "_TORCH_STREAM", [])
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    fn = L.torch_stream_fn()
    assert fn(0) == 0 and L._TORCH_STREAM == []

    class FakeC:
        @staticmethod
        def _cuda_getCurrentRawStream(ordinal):
            return 0x5000 + ordinal
    fake = type(sys)("torch")
    fake._C = FakeC
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert L.torch_stream_fn()(3) == 0x5003 and len(L._TORCH_STREAM) == 1
