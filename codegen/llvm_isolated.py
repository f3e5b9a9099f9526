"""Run LLVM (parse, verify, optimize, emit) on textual LLVM IR in a separate worker process.

The llvmlite wheel is built with assertions: some malformed IR (a bad `nvvm.annotations` entry, a
PTX version the CPU does not support, ...) aborts the whole process instead of raising. The code
generators therefore build their LLVM IR as text with `llvmlite.ir` (pure Python, never crashes)
and hand it to `run_llvm`, which does everything that touches the LLVM C++ library in a worker: a
fresh Python process (`python -m tile.codegen.llvm_worker`), started once and reused, never a fork
(a fork of a process that holds CUDA's threads can deadlock). A worker that dies on a signal or
hangs becomes a `CompileError` naming the kernel, and the next job starts a new one. Process-global
LLVM options (`--nvptx-short-ptr`) are set only in the worker, so they never leak into the caller.

With `TILEC_LLVM_INPROCESS=1` the same work runs in-process (faster to debug, unprotected).
"""
from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
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
    emit: str = "asm"             # "asm" (PTX / AMDGPU assembly), "obj" (an ELF object) or "both"
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
    if job.emit == "both":                     # codegen rewrites the module: emit each from its own copy
        out["asm"] = tm.emit_assembly(llvm.parse_assembly(out["optimized_ir"]))
        out["obj"] = tm.emit_object(mod)
    elif job.emit == "asm":
        out["asm"] = tm.emit_assembly(mod)
    else:
        out["obj"] = tm.emit_object(mod)
    return out


def run_llvm(job: LLVMJob, timeout: float = 600.0) -> dict:
    """Optimize and emit `job.ir`. Returns {"asm" or "obj": ..., "optimized_ir": str}.
    Raises CompileError if LLVM rejects the IR, crashes, or runs past `timeout` seconds."""
    if os.environ.get("TILEC_LLVM_INPROCESS") == "1":
        res = _work(job)
    else:
        with _LOCK:
            global _WORKER
            if _WORKER is None or _WORKER.proc.poll() is not None:
                _WORKER = _Worker()
            try:
                res = _WORKER.call(job, timeout)
            except CompileError:
                _WORKER = None                     # it died or hung: the next job starts a fresh one
                raise
    if "error" in res:
        raise CompileError(res["error"], kernel=job.kernel)
    return res


class _Worker:
    """A child Python process (a fresh interpreter, not a fork: the caller may have CUDA's threads)
    that runs LLVM jobs sent as length-prefixed pickles over its stdin/stdout."""

    def __init__(self):
        self.err = tempfile.TemporaryFile()        # LLVM's own messages (and a crash's) land here
        self.proc = subprocess.Popen([sys.executable, "-m", "tile.codegen.llvm_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)

    def call(self, job: LLVMJob, timeout: float) -> dict:
        mark = self.err.tell() if not self.err.closed else 0
        data = pickle.dumps(job)
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            n = struct.unpack("<Q", self._read(8, job, timeout))[0]
            return pickle.loads(self._read(n, job, timeout))
        except (BrokenPipeError, EOFError):
            pass
        try:
            status = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.err.seek(mark)
        msg = self.err.read(4000).decode("utf-8", "replace").strip()
        detail = ("\nLLVM said: " + msg) if msg else ""
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = str(-status)
            raise CompileError(f"LLVM crashed ({name}) while compiling the generated IR "
                               f"(target {job.cpu}{' ' + job.features if job.features else ''}); "
                               f"this is a code generator bug{detail}", kernel=job.kernel)
        raise CompileError(f"the LLVM worker exited (status {status}) without a result{detail}", kernel=job.kernel)

    def _read(self, n: int, job: LLVMJob, timeout: float) -> bytes:
        fd, chunks, got = self.proc.stdout.fileno(), [], 0
        deadline = time.monotonic() + timeout
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                self.proc.wait()
                raise CompileError(f"LLVM ran longer than {timeout:.0f} s and was stopped", kernel=job.kernel)
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            b = os.read(fd, min(n - got, 1 << 20))
            if not b:
                raise EOFError
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)


_WORKER: _Worker | None = None
_LOCK = threading.Lock()


@atexit.register
def _shutdown() -> None:
    """End the worker with the caller: closing its input ends its loop."""
    w = _WORKER
    if w is not None and w.proc.poll() is None:
        try:
            w.proc.stdin.close()
            w.proc.wait(timeout=5)
        except Exception:                          # noqa: BLE001
            w.proc.kill()
            w.proc.wait()
    if w is not None:
        w.proc.stdout.close()
        w.err.close()


def serve() -> None:
    """The worker's loop: read a job, run it, answer; exit at end of input."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        job = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
        try:
            res = _work(job)
        except BaseException as e:                 # noqa: BLE001 - anything goes back as text
            res = {"error": f"{type(e).__name__}: {e}"}
        data = pickle.dumps(res)
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()
