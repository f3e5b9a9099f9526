"""Host JIT for the conversion tests: LLVM IR the GPU code generators emit, compiled for this CPU by
llvmlite (MCJIT), so conversions are checked bit-exactly on the host (tests/test_fast_convert.py,
tests/test_e8m0.py)."""
import ctypes

import llvmlite.binding as llvm
import llvmlite.ir as ir

_engine = None
_keep = []          # the JIT-compiled modules stay alive as long as their functions may be called


def _jit():
    global _engine
    if _engine is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        # the host's own features: F16C converts f16 <-> f32 in hardware (no libcalls)
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten())
        eng = llvm.create_mcjit_compiler(llvm.parse_assembly(_LIBCALLS), tm)
        eng.finalize_object()
        _engine = (eng, tm)
    return _engine


# f32 -> bf16 rounding (round to nearest even), the libcall LLVM makes for `fptrunc float to bfloat` on
# a host without AVX512-BF16 -- in integer arithmetic only (no float op that would call it again)
_LIBCALLS = """
define bfloat @__truncsfbf2(float %x) {
  %u = bitcast float %x to i32
  %hi = lshr i32 %u, 16
  %lsb = and i32 %hi, 1
  %bias = add i32 %lsb, 32767
  %r = add i32 %u, %bias
  %rh = lshr i32 %r, 16
  %abs = and i32 %u, 2147483647
  %isnan = icmp ugt i32 %abs, 2139095040
  %q = or i32 %hi, 64
  %sel = select i1 %isnan, i32 %q, i32 %rh
  %t = trunc i32 %sel to i16
  %b = bitcast i16 %t to bfloat
  ret bfloat %b
}

; f64 -> f16, the libcall LLVM makes for an f16 `llvm.fma` (computed in f64): through f32. Rounding
; twice is not rounding once in general, but every fma the decoder emits has an exact result (a small
; integer), which both roundings leave as it is.
define half @__truncdfhf2(double %x) {
  %f = fptrunc double %x to float
  %h = fptrunc float %f to half
  ret half %h
}
"""


def close_loop(b, i, step, n, loop, done):
    """End the body of `for i in range(0, n, step)` (i: the loop block's phi) and return from `done`."""
    i64 = ir.IntType(64)
    nxt = b.add(i, ir.Constant(i64, step))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_unsigned("<", nxt, n), loop, done)
    b.position_at_end(done)
    b.ret_void()


def host_function(m, name="conv"):
    """Compile module `m` (llvmlite.ir) for the host; the ctypes function `void name(ptr, ptr, i64)`."""
    eng, _ = _jit()
    mod = llvm.parse_assembly(str(m))
    mod.verify()
    eng.add_module(mod)
    eng.finalize_object()
    _keep.append(mod)
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(eng.get_function_address(name))
