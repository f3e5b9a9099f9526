"""Run LLVM (parse, verify, optimize, emit) on textual LLVM IR in a forked child process.

The llvmlite wheel is built with assertions: some malformed IR (a bad `nvvm.annotations` entry, a
PTX version the CPU does not support, ...) aborts the whole process instead of raising. The code
generators therefore build their LLVM IR as text with `llvmlite.ir` (pure Python, never crashes)
and hand it to `run_llvm`, which does everything that touches the LLVM C++ library in a child made
with `os.fork()`. The child sends its result back through a pipe; a child that dies on a signal
or exits without answering becomes a `CompileError` naming the kernel. Process-global LLVM options
(`--nvptx-short-ptr`) are set only in the child, so they never leak into the caller.

Where `os.fork` is unavailable (or `TILEC_LLVM_INPROCESS=1`), the same work runs in-process.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import tempfile
import time
from dataclasses import dataclass

from .errors import CompileError


@dataclass(frozen=True)
class LLVMJob:
    """What to do with one LLVM module."""
    ir: str                       # textual LLVM IR (from llvmlite.ir)
    triple: str                   # e.g. "nvptx64-nvidia-cuda"
    cpu: str                      # e.g. "sm_90a", "gfx942"
    features: str = ""            # e.g. "+ptx80"
    opt: int = 3                  # 0..3: the new-pass-manager pipeline level
    options: tuple = ()           # llvm command-line options set in the child, e.g. ("--nvptx-short-ptr",)
    emit: str = "asm"             # "asm" (PTX / AMDGPU assembly) or "obj" (an ELF object)
    kernel: str = "?"             # for error messages


def _work(job: LLVMJob) -> dict:
    """The part that may crash: runs in the child."""
    import llvmlite.binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    for o in job.options:
        llvm.set_option("", o)
    target = llvm.Target.from_triple(job.triple)
    tm = target.create_target_machine(cpu=job.cpu, features=job.features, opt=min(job.opt, 3))
    try:
        mod = llvm.parse_assembly(job.ir)
        mod.verify()
    except RuntimeError as e:
        return {"error": f"LLVM rejected the generated IR: {e}"}
    mod.triple = job.triple
    mod.data_layout = str(tm.target_data)
    if job.opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=job.opt)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    out = {"optimized_ir": str(mod)}
    if job.emit == "asm":
        out["asm"] = tm.emit_assembly(mod)
    else:
        out["obj"] = tm.emit_object(mod)
    return out


def run_llvm(job: LLVMJob, timeout: float = 600.0) -> dict:
    """Optimize and emit `job.ir`. Returns {"asm" or "obj": ..., "optimized_ir": str}.
    Raises CompileError if LLVM rejects the IR, crashes, or runs past `timeout` seconds."""
    if not hasattr(os, "fork") or os.environ.get("TILEC_LLVM_INPROCESS") == "1":
        res = _work(job)
        if "error" in res:
            raise CompileError(res["error"], kernel=job.kernel)
        return res
    r, w = os.pipe()
    errf = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:                                   # child: never return into the caller's stack
        code = 0
        try:
            os.close(r)
            try:
                import faulthandler
                faulthandler.disable()
            except Exception:                      # noqa: BLE001
                pass
            os.dup2(errf.fileno(), 2)              # LLVM's own messages go to the parent's error
            try:
                res = _work(job)
            except BaseException as e:             # noqa: BLE001 - anything goes back as text
                res = {"error": f"{type(e).__name__}: {e}"}
            data = pickle.dumps(res)
            view = memoryview(data)
            while view:
                n = os.write(w, view)
                view = view[n:]
            os.close(w)
        except BaseException:                      # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise CompileError(f"LLVM ran longer than {timeout:.0f} s and was stopped", kernel=job.kernel)
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if not ready:
                continue
            b = os.read(r, 1 << 20)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    errf.seek(0)
    llvm_msg = errf.read(4000).decode("utf-8", "replace").strip()
    errf.close()
    detail = ("\nLLVM said: " + llvm_msg) if llvm_msg else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        raise CompileError(f"LLVM crashed ({name}) while compiling the generated IR "
                           f"(target {job.cpu}{' ' + job.features if job.features else ''}); "
                           f"this is a code generator bug{detail}", kernel=job.kernel)
    data = b"".join(chunks)
    if not data:
        raise CompileError(f"the LLVM child exited (status {os.WEXITSTATUS(status)}) without a result{detail}",
                           kernel=job.kernel)
    res = pickle.loads(data)
    if "error" in res:
        raise CompileError(res["error"], kernel=job.kernel)
    return res
