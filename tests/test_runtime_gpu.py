"""Runtime tests on an NVIDIA GPU (`pytest -m gpu`; skipped where runtime.cuda.available() is False).

The runtime is tested on its own with small ABI-conformant kernels written here with llvmlite
(codegen-notes §1 style; parameters laid out exactly as ir/artifact.py says), and end to end with a
kernel from `tile.codegen.compile` when that exists. Fresh random inputs every run, outputs
poisoned (0xFF bytes = NaN) before each launch.

One test here needs no GPU: the test kernels must build and pass nvJitLink (sm_90a).
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from tile.ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
from tile.ir.core import Function
from tile.ir.dtypes import dtype as D
from tile.ir.errors import TileError
from tile.ir.types import ScalarType, TensorType
from tile.runtime import cuda
from tile.runtime import device as dev
from tile.runtime import launch as L
from tile.runtime.arrays import asarray, dtype_of

HAVE_GPU = cuda.available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no NVIDIA GPU/driver")]
RNG = np.random.default_rng()


def T(dt, rank=1):
    return TensorType(D(dt), (None,) * rank)


def S(dt):
    return ScalarType(D(dt))


# ====================================================================== test kernels (llvmlite)
def _llvm():
    import llvmlite.binding as llvm
    import llvmlite.ir as ir
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return ir, llvm


def _target():
    return cuda.device().arch if HAVE_GPU else "sm_90a"


def _emit(m, target, attrs_fn=None):
    ir, llvm = _llvm()
    tm = llvm.Target.from_triple("nvptx64-nvidia-cuda").create_target_machine(
        cpu=target, features="+ptx80", opt=3)
    m.data_layout = str(tm.target_data)
    mod = llvm.parse_assembly(str(m))
    mod.verify()
    return tm.emit_assembly(mod)


class _KB:
    """A kernel whose parameters follow ir/artifact.py for the IR parameters `params`."""

    def __init__(self, name, params: dict):
        ir, _ = _llvm()
        self.ir = ir
        self.i32, self.i64, self.f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        self.fn_ir = Function(name, list(params.values()), list(params))
        self.abi = flatten_params(self.fn_ir)
        self.m = ir.Module(name)
        self.m.triple = "nvptx64-nvidia-cuda"
        kinds = {"ptr": ir.PointerType(addrspace=1), "i32": self.i32, "i64": self.i64, "f32": self.f32,
                 "f64": ir.DoubleType()}
        self.fn = ir.Function(self.m, ir.FunctionType(ir.VoidType(), [kinds[p.kind] for p in self.abi]), name)
        self.fn.calling_convention = "ptx_kernel"
        self.arg = {p.name: a for p, a in zip(self.abi, self.fn.args)}
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))

    def sreg(self, n):
        ir = self.ir
        name = f"llvm.nvvm.read.ptx.sreg.{n}"
        f = self.m.globals.get(name) or ir.Function(self.m, ir.FunctionType(self.i32, []), name)
        return self.b.call(f, [])

    def gid(self):
        b = self.b
        return b.add(b.mul(self.sreg("ctaid.x"), self.sreg("ntid.x")), self.sreg("tid.x"))

    def elem(self, t, i, ty):
        """Address of element i of 1-D tensor t (using its runtime stride)."""
        b = self.b
        off = b.sext(b.mul(i, self.arg[f"{t}.stride0"]), self.i64)
        return b.gep(self.arg[t], [off], source_etype=ty)

    def meta(self, num_threads, shared_bytes=0, cluster=(1, 1, 1)):
        return KernelMeta(name=self.fn_ir.name, target=_target(), num_threads=num_threads, shared_bytes=shared_bytes,
                          params=self.abi, cluster=cluster)

    def compiled(self, num_threads, **kw):
        self.b.ret_void()
        return Artifact(self.meta(num_threads, **kw), ptx=_emit(self.m, _target()),
                        signature=signature_of_function(self.fn_ir))


def k_vadd():
    """Z[i] = X[i] + Y[i] for i < Z.shape0 (strided, ragged tail)."""
    k = _KB("vadd_abi", {"X": T("f32"), "Y": T("f32"), "Z": T("f32")})
    b = k.b
    i = k.gid()
    with b.if_then(b.icmp_signed("<", i, k.arg["Z.shape0"])):
        x = b.load(k.elem("X", i, k.f32), typ=k.f32)
        y = b.load(k.elem("Y", i, k.f32), typ=k.f32)
        b.store(b.fadd(x, y), k.elem("Z", i, k.f32))
    return k.compiled(128)


def k_scalars():
    """Y[i] = a * X[i] + (flag ? float(k) : 0) + float(h) where h is an f16 code in an i32."""
    k = _KB("scalars_abi", {"X": T("f32"), "Y": T("f32"), "a": S("f32"), "flag": S("i1"), "k": S("i64"),
                            "h": S("f16")})
    ir, b = k.ir, k.b
    i = k.gid()
    with b.if_then(b.icmp_signed("<", i, k.arg["Y.shape0"])):
        x = b.load(k.elem("X", i, k.f32), typ=k.f32)
        v = b.fmul(k.arg["a"], x)
        kf = b.sitofp(k.arg["k"], k.f32)
        on = b.icmp_signed("!=", k.arg["flag"], ir.Constant(k.i32, 0))
        v = b.fadd(v, b.select(on, kf, ir.Constant(k.f32, 0.0)))
        h = b.fpext(b.bitcast(b.trunc(k.arg["h"], ir.IntType(16)), ir.HalfType()), k.f32)
        b.store(b.fadd(v, h), k.elem("Y", i, k.f32))
    return k.compiled(128)


SMEM_BYTES = 100 * 1024


def k_smem(smem_bytes=SMEM_BYTES, base=None):
    """Reverses X[0:256] through a 100 KB dynamic shared buffer (needs the >48 KB opt-in), using
    its top 256 floats (or those from float index `base`)."""
    k = _KB("smem_abi", {"X": T("f32")})
    ir, b = k.ir, k.b
    dyn = ir.GlobalVariable(k.m, ir.ArrayType(k.f32, 0), "dynsmem", addrspace=3)
    dyn.linkage = "external"
    dyn.align = 16
    bar = ir.Function(k.m, ir.FunctionType(ir.VoidType(), [k.i32]), "llvm.nvvm.barrier.cta.sync.aligned.all")
    t = k.sreg("tid.x")
    last = smem_bytes // 4 - 1 if base is None else base + 255
    z = ir.Constant(k.i64, 0)
    slot = b.zext(b.sub(ir.Constant(k.i32, last), t), k.i64)           # the top 256 floats of the buffer
    b.store(b.load(k.elem("X", t, k.f32), typ=k.f32), b.gep(dyn, [z, slot]))
    b.call(bar, [ir.Constant(k.i32, 0)])
    rslot = b.zext(b.add(ir.Constant(k.i32, last - 255), t), k.i64)     # = last - (255 - t)
    b.store(b.load(b.gep(dyn, [z, rslot]), typ=k.f32), k.elem("X", t, k.f32))
    return k.compiled(256, shared_bytes=smem_bytes)


def k_cluster():
    """O[ctaid.x] = %cluster_ctarank, O[grid + ctaid.x] = %cluster_nctarank (thread 0 of each block)."""
    k = _KB("cluster_abi", {"O": T("i32")})
    ir, b = k.ir, k.b
    with b.if_then(b.icmp_signed("==", k.sreg("tid.x"), ir.Constant(k.i32, 0))):
        cta = k.sreg("ctaid.x")
        b.store(k.sreg("cluster.ctarank"), k.elem("O", cta, k.i32))
        b.store(k.sreg("cluster.nctarank"), k.elem("O", b.add(cta, k.sreg("nctaid.x")), k.i32))
    return k.compiled(32, cluster=(2, 1, 1))


def test_test_kernels_build_and_pass_nvjitlink():
    """No GPU needed: the kernels above are valid PTX for sm_90a (nvJitLink accepts them)."""
    if not cuda.nvjitlink_available():
        pytest.skip("nvJitLink is not installed")
    if HAVE_GPU and cuda.device().arch != "sm_90a":
        pytest.skip("checked for sm_90a only")
    for make in (k_vadd, k_scalars, k_smem, k_cluster):
        c = make()
        assert ".entry " + c.meta.name in c.ptx
        assert cuda.ptx_to_cubin(c.ptx, "sm_90a", name=c.meta.name)[:4] == b"\x7fELF"


# ====================================================================================== device
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="no NVIDIA GPU/driver")
class TestGPU:
    def test_device_properties(self):
        d = cuda.device()
        assert d.arch == cuda.arch_from_cc(*d.cc)
        assert d.sm_count > 0 and d.warp_size == 32 and d.max_threads_per_block >= 1024
        assert d.max_shared_per_block_optin >= 48 * 1024 and d.total_memory > 2 ** 30
        assert cuda.available() and cuda.current_context() != 0

    def test_device_array_round_trip(self):
        for x in (RNG.standard_normal((37, 5)).astype(np.float32), RNG.integers(-9, 9, 1001).astype(np.int64),
                  RNG.standard_normal(17).astype(np.float16)):
            d = dev.to_device(x)
            assert d.shape == x.shape and d.dtype == dtype_of(x) and d.strides == asarray(x).strides
            assert np.array_equal(d.numpy(), x)
        for name in ("bf16", "int4", "uint3", "f4e2m1", "f8e4m3fn", "i1"):
            a = asarray(RNG.standard_normal(333) * 3, name)
            d = dev.to_device(a)
            assert d.nbytes == a.nbytes
            back = d.to_host()
            assert back.dtype == a.dtype and np.array_equal(back.codes(), a.codes())
            assert np.array_equal(d.numpy(), a.numpy(), equal_nan=True)
        e = dev.empty((5,), "f32").fill_bytes(0xFF)
        assert np.isnan(e.numpy()).all()
        z = dev.zeros((3, 3), "bf16")
        assert (z.numpy() == 0).all()

    def test_vadd_numpy_host_args_ragged(self):
        c = k_vadd()
        for n in (1, 127, 1000, 4099):
            x, y = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)
            z = np.full(n, np.nan, np.float32)
            L.launch(c, (-(-n // 128),), [x, y, z])
            np.testing.assert_array_equal(z, x + y)                # f32 add is exact vs NumPy's f32 add

    def test_vadd_device_arrays_strided_and_streams(self):
        c = k_vadd()
        n = 777
        x, y = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(2 * n).astype(np.float32)
        dx, dyfull = dev.to_device(x), dev.to_device(y)
        dy = dev.DeviceArray.from_pointer(dyfull.ptr, (n,), "f32", strides=(2,), owner=dyfull)   # every 2nd
        dz = dev.empty((n,), "f32").fill_bytes(0xFF)
        s = cuda.Stream()
        e0, e1 = cuda.Event().record(s), cuda.Event()
        L.launch(c, (-(-n // 128),), [dx, dy, dz], stream=s)
        e1.record(s)
        s.synchronize()
        assert e0.elapsed_ms(e1) >= 0
        np.testing.assert_array_equal(dz.numpy(), x + y[::2])
        np.testing.assert_array_equal(dy.numpy(), y[::2])          # strided to_host

    def test_jit_paths_and_cubin(self):
        c = k_vadd()
        n = 300
        x, y = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)
        dx, dy = dev.to_device(x), dev.to_device(y)
        for image, jit, want in [(c.ptx, "nvjitlink", "nvjitlink"), (c.ptx, "driver", "driver"),
                                 (cuda.ptx_to_cubin(c.ptx, cuda.device().arch), None, "cubin")]:
            mod = cuda.load_module(image, name="vadd_abi", jit=jit)
            assert mod.jit == want
            f = mod.get_function("vadd_abi")
            assert f.attributes["num_regs"] > 0
            dz = dev.empty((n,), "f32").fill_bytes(0xFF)
            params = L.pack_args(c.meta, L.signature_of(c)[0], [dx, dy, dz])
            f.launch((3,), (128,), params)
            cuda.synchronize()
            np.testing.assert_array_equal(dz.numpy(), x + y)

    def test_ptx_targets_and_bad_ptx(self):
        tiny = (".version 8.0\n.target {t}\n.address_size 64\n.visible .entry tiny(.param .u64 p)\n{{\n"
                "  .reg .b64 %rd<2>;\n  .reg .b32 %r<2>;\n  ld.param.u64 %rd1, [p];\n  cvta.to.global.u64 %rd1, %rd1;\n"
                "  mov.u32 %r1, 42;\n  st.global.u32 [%rd1], %r1;\n  {bad}ret;\n}}\n")
        o = dev.zeros((1,), "i32")
        import ctypes
        v = ctypes.c_uint64(o.ptr)
        params = (ctypes.c_void_p * 1)(ctypes.addressof(v))
        for t in ("sm_80", "sm_90", cuda.device().arch):                     # older plain targets JIT forward
            for jit in ("nvjitlink", "driver"):
                o.fill_bytes(0)
                cuda.load_module(tiny.format(t=t, bad=""), jit=jit).get_function("tiny").launch(1, 1, params)
                assert o.numpy()[0] == 42
        bad = tiny.format(t=cuda.device().arch, bad="bogus_op;\n  ")
        with pytest.raises(cuda.PTXCompileError, match="bogus_op"):
            cuda.load_module(bad, jit="nvjitlink")
        with pytest.raises(cuda.CudaError) as ei:                          # auto: nvJitLink, then the driver
            cuda.load_module(bad, name="tiny")
        assert "bogus_op" in str(ei.value) and "cuModuleLoadData" in str(ei.value)
        if cuda.device().cc != (10, 0):
            with pytest.raises(TileError, match="compile for target"):
                cuda.load_module(tiny.format(t="sm_100a", bad=""))

    def test_launch_from_another_thread_and_noncontiguous_host_output(self):
        import threading
        c = k_vadd()
        n = 200
        x, y = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)
        big = np.full((n, 2), np.nan, np.float32)
        err = []

        def work():
            try:
                L.launch(c, (2,), [x, y, big[:, 1]])                # a strided host view is written back
            except Exception as e:                                  # noqa: BLE001
                err.append(e)
        th = threading.Thread(target=work)
        th.start()
        th.join()
        assert not err, err
        np.testing.assert_array_equal(big[:, 1], x + y)
        assert np.isnan(big[:, 0]).all()

    def test_module_is_cached_per_context(self):
        c = k_vadd()
        assert L.load_function(c) is L.load_function(c)

    def test_scalars_follow_the_abi(self):
        c = k_scalars()
        n = 513
        x = RNG.standard_normal(n).astype(np.float32)
        y = np.full(n, np.nan, np.float32)
        L.launch(c, (5,), [x, y, 2.5, True, -7, 1.5])
        np.testing.assert_allclose(y, (2.5 * x - 7 + 1.5).astype(np.float32), rtol=1e-6, atol=1e-6)
        L.launch(c, (5,), [x, y, -1.0, False, 1 << 40, -0.25])
        np.testing.assert_allclose(y, -x - 0.25, rtol=1e-6, atol=1e-6)

    def test_dynamic_smem_over_48k(self):
        c = k_smem()
        x = RNG.standard_normal(256).astype(np.float32)
        xd = dev.to_device(x)
        L.launch(c, (1,), [xd])
        np.testing.assert_array_equal(xd.numpy(), x[::-1])
        f = L.load_function(c)
        too_much = cuda.device().max_shared_per_block_optin + 1024
        with pytest.raises(TileError, match="shared memory"):
            f.launch((1,), (256,), L.pack_args(c.meta, [T("f32")], [xd]), shared_bytes=too_much)

    def test_cluster_launch(self):
        if cuda.device().cc[0] < 9:
            pytest.skip("clusters need compute capability 9.0")
        c = k_cluster()
        g = 8
        o = np.full(2 * g, -1, np.int32)
        L.launch(c, (g,), [o])
        assert list(o[:g]) == [0, 1] * (g // 2) and (o[g:] == 2).all()
        with pytest.raises(ValueError, match="multiple of the cluster"):
            L.launch(c, (3,), [o])

    def test_launch_errors_are_readable(self):
        c = k_vadd()
        f = L.load_function(c)
        d = dev.empty((4,), "f32")
        params = L.pack_args(c.meta, L.signature_of(c)[0], [d, d, d])
        with pytest.raises(TileError, match="threads per block"):
            f.launch((1,), (2048,), params)
        with pytest.raises(cuda.CudaError, match="nope"):
            f.module.get_function("nope")
        f.launch((0,), (128,), params)                             # empty grid: nothing to do
        with pytest.raises(TypeError, match="parameter 'X' expects a f32 tensor"):
            L.launch(c, (1,), [np.zeros(4), d, d])

    def test_codegen_kernel_end_to_end(self):
        try:
            from tile.compiler import compile as cg_compile
        except ImportError:
            pytest.skip("tile.codegen.compile does not exist yet")
        from tile.ir.builder import Builder
        from tile.ir.types import tile_type
        f = Function("vadd_cg", [T("f32"), T("f32"), T("f32")], ["X", "Y", "Z"])
        b = Builder(f.body)
        i32 = S("i32")
        off = b.value("mul", [b.value("block_id", [], i32, {"axis": 0}), b.value("constant", [], i32, {"value": 128})],
                      i32)
        tt = tile_type((128,), "f32")
        x = b.value("load", [f.args[0], off], tt, {"shape": [128]})
        y = b.value("load", [f.args[1], off], tt, {"shape": [128]})
        b.create("store", [f.args[2], off, b.value("add", [x, y], tt)])
        compiled = cg_compile(f, cuda.device().arch)
        assert compiled.meta.params == flatten_params(f)
        n = 1000                                                  # ragged: 7 full blocks + 104
        xs, ys = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)
        z = dev.empty((n,), "f32").fill_bytes(0xFF)
        L.launch(compiled, (-(-n // 128),), [xs, ys, z], param_types=[a.type for a in f.args], names=["X", "Y", "Z"])
        np.testing.assert_array_equal(z.numpy(), xs + ys)

    def test_torch_interop(self):
        torch = pytest.importorskip("torch")
        c = k_vadd()
        n = 1000
        x = torch.randn(n, device="cuda")
        y = torch.randn(2 * n, device="cuda")[::2]                # strided view
        z = torch.full((n,), float("nan"), device="cuda")
        L.launch(c, (8,), [x, y, z])
        torch.cuda.synchronize()
        assert torch.equal(z, x + y)
        L.launch(c, (8,), [x, y, z], stream=torch.cuda.current_stream())
        assert dev.extract_tensor(y, "Y", "f32", 1) == (y.data_ptr(), (n,), (2,), D("f32"))
        with pytest.raises(TypeError, match="'M'.*one byte"):
            dev.extract_tensor(torch.zeros(4, dtype=torch.bool, device="cuda"), "M", "i1", 1)
        f8 = torch.zeros(4, device="cuda").to(torch.float8_e4m3fn)
        assert dev.extract_tensor(f8, "F", "f8e4m3fn", 1).dtype == D("f8e4m3fn")
        b = torch.randn(4, 8, device="cuda", dtype=torch.bfloat16)
        t = dev.extract_tensor(b, "B", "bf16", 2)
        assert t.ptr == b.data_ptr() and t.shape == (4, 8) and t.strides == (8, 1) and t.dtype == D("bf16")
        with pytest.raises(TypeError, match="'B'"):
            dev.extract_tensor(b, "B", "f16", 2)
        with pytest.raises(ValueError, match="(?i)'C'.*cpu"):
            dev.extract_tensor(torch.zeros(3), "C", "f32", 1)
        d = dev.to_device(asarray(RNG.standard_normal((4, 8)), "bf16"))
        tb = torch.from_dlpack(d)
        assert tb.dtype == torch.bfloat16 and tb.data_ptr() == d.ptr
        assert np.array_equal(tb.float().cpu().numpy(), d.numpy())
        tf = torch.as_tensor(dev.to_device(np.arange(6, dtype=np.float32)), device="cuda")   # via CAI
        assert tf.tolist() == list(range(6))

    def test_cupy_interop(self):
        cp = pytest.importorskip("cupy")
        c = k_vadd()
        n = 500
        x, y = cp.random.standard_normal(n, dtype=cp.float32), cp.random.standard_normal(n, dtype=cp.float32)
        z = cp.full(n, cp.nan, dtype=cp.float32)
        L.launch(c, (4,), [x, y, z])
        cp.cuda.runtime.deviceSynchronize()
        assert bool((z == x + y).all())
        d = dev.to_device(np.arange(10, dtype=np.float32))
        assert cp.asarray(d).get().tolist() == list(range(10))
