"""Run LLVM (parse, verify, optimize, emit) on textual LLVM IR in a separate worker process.

The llvmlite wheel is built with assertions: some malformed IR (a bad `nvvm.annotations` entry, a
PTX version the CPU does not support, ...) aborts the whole process instead of raising. The code
generators therefore build their LLVM IR as text with `llvmlite.ir` (pure Python, never crashes)
and hand it to `run_llvm`, which does everything that touches the LLVM C++ library in a worker: a
fresh Python process (this file run on its own: `_WORKER_MAIN`), started once and reused, never a fork
(a fork of a process that holds CUDA's threads can deadlock). A worker that dies on a signal or
hangs becomes a `CompileError` naming the kernel, and the next job starts a new one. Process-global
LLVM options (`--nvptx-short-ptr`) are set only in the worker, so they never leak into the caller.

With `TILEC_LLVM_INPROCESS=1` the same work runs in-process (faster to debug, unprotected).

Start-up: the worker runs this file alone (not `tile.codegen`, which would import the code
generators and the IR), imports llvmlite and initializes LLVM before it reads its first job, and
`prestart()` (called by the compile driver when the kernel cache misses, before the passes run)
starts it early, so its start-up overlaps the passes instead of adding to the cold compile.
"""
from __future__ import annotations

import atexit
import dataclasses
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

try:
    from .errors import CompileError
except ImportError:                                # the worker runs this file outside the package
    CompileError = RuntimeError


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


_INITIALIZED: list = []


def _init_llvm():
    import llvmlite.binding as llvm
    if not _INITIALIZED:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        _INITIALIZED.append(True)
    return llvm


def _work(job: LLVMJob) -> dict:
    """The part that may crash: runs in the child."""
    llvm = _init_llvm()
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
    out = {"optimized_ir": str(mod)} if job.emit == "both" or os.environ.get("TILEC_KEEP_LLVM_IR") == "1" else {}
    if job.emit == "both":                     # codegen rewrites the module: emit each from its own copy
        out["asm"] = tm.emit_assembly(llvm.parse_assembly(out["optimized_ir"]))
        out["obj"] = tm.emit_object(mod)
    elif job.emit == "asm":
        out["asm"] = tm.emit_assembly(mod)
    else:
        out["obj"] = tm.emit_object(mod)
    return out


def prestart() -> None:
    """Start the worker now if none is running (it then initializes LLVM while the caller works)."""
    if os.environ.get("TILEC_LLVM_INPROCESS") == "1":
        return
    global _WORKER
    with _LOCK:
        if _WORKER is None or _WORKER.proc.poll() is not None:
            _WORKER = _Worker()


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
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, os.path.abspath(__file__)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)

    def call(self, job: LLVMJob, timeout: float) -> dict:
        mark = self.err.tell() if not self.err.closed else 0
        data = pickle.dumps(dataclasses.astuple(job))     # plain data: the worker needs no class of ours
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


# the worker process: this file run as a module of its own (jobs and results travel as plain data)
_WORKER_MAIN = """\
import sys, importlib.util
spec = importlib.util.spec_from_file_location("tilec_llvm_worker", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
mod.serve()
"""


def serve() -> None:
    """The worker's loop: initialize LLVM, then read a job, run it, answer; exit at end of input."""
    try:
        _init_llvm()
    except Exception:                              # noqa: BLE001 - reported by the first job instead
        pass
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        job = LLVMJob(*pickle.loads(inp.read(struct.unpack("<Q", head)[0])))
        try:
            res = _work(job)
        except BaseException as e:                 # noqa: BLE001 - anything goes back as text
            res = {"error": f"{type(e).__name__}: {e}"}
        data = pickle.dumps(res)
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()
