"""The child process's context, and tilec's side of a case.

`BaseCtx` (no torch): the arguments, the cases, the results writer, the deadline, notes, and
`case()` (a context manager that records one case, errors included). `Ctx` adds torch, the timer,
the random generator and tilec (or why tilec cannot run here).

`tilec_tuned` runs a gallery kernel under `@tile.autotune` over the case's configs: the first
launch (on input set 0, its output poisoned with NaN; `restore=` keeps the poison through the
search, so the check sees only the winner's writes) compiles the configs in parallel, prunes those
over the GPU's limits, times the rest with CUDA events and runs the winner; the winner is then
checked (relative error against the reference) and timed like every peer. Every config the search
saw is recorded (status, autotune time, compile time, or why it was pruned or failed).
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import traceback

from .common import MODES, err_text, import_tilec, tilec_meta
from .timing import Timer, nsets_for, rel_err

_TORCH_TO_TILE = {"torch.bfloat16": "bf16", "torch.float16": "f16", "torch.float32": "f32", "torch.int32": "i32",
                  "torch.int64": "i64", "torch.uint8": "u8", "torch.int8": "i8"}


def torch_to_device_array(t, dtype=None, shape=None):
    """A tile DeviceArray view of a torch CUDA tensor's memory (kept alive through `owner`)."""
    from tile.runtime.device import DeviceArray
    dt = dtype or _TORCH_TO_TILE[str(t.dtype)]
    if shape is None:
        return DeviceArray.from_pointer(t.data_ptr(), tuple(t.shape), dt, strides=tuple(t.stride()), owner=t)
    return DeviceArray.from_pointer(t.data_ptr(), tuple(shape), dt, owner=t)


class BaseCtx:
    """What every family's run(ctx) gets (module docstring)."""

    def __init__(self, args, cases, writer, family: str):
        self.args, self.cases, self.w, self.family = args, cases, writer, family
        self.mode = dict(MODES[args.mode])
        if getattr(args, "tune_configs", None) is not None:           # --tune-configs N (0: all)
            self.mode["tune_configs"] = args.tune_configs or None
        if getattr(args, "configs", None):                             # --configs I,J: exactly these
            self.mode["config_indices"] = [int(i) for i in args.configs.split(",") if i.strip()]
        self.deadline = args.deadline
        self._noted = set()

    def note(self, msg):
        if msg not in self._noted:
            self._noted.add(msg)
            self.w.emit("note", note=msg)
            print(f"note: {msg}", flush=True)

    def emit(self, event, **kw):
        self.w.emit(event, **kw)

    def time_left(self):
        return self.deadline - time.time()

    def skip(self, case, why):
        rec = {"id": case["id"], "family": case["family"], "params": case["params"], "status": "SKIP", "error": why}
        self.w.emit("result", id=case["id"], record=rec)

    def _after_case(self):
        pass

    @contextlib.contextmanager
    def case(self, case):
        """Record one case: yields its record; errors are caught into it; the result is emitted."""
        rec = {"id": case["id"], "family": case["family"], "params": case["params"], "peers": {}}
        self.w.emit("start", id=case["id"])
        print(f"--- {case['id']}", flush=True)
        t0 = time.time()
        try:
            yield rec
        except Exception as e:                               # noqa: BLE001
            rec["error"] = err_text(e)
            rec["traceback"] = traceback.format_exc()[-4000:]
        finally:
            rec["wall_s"] = round(time.time() - t0, 2)
            finalize(rec)
            self.w.emit("result", id=case["id"], record=rec)
            print(f"    {summary_line(rec)}", flush=True)
            self._after_case()


class Ctx(BaseCtx):
    """BaseCtx + torch (CUDA), the timer, a seeded generator and tilec."""

    def __init__(self, args, cases, writer, family: str, seed_index: int = 0):
        super().__init__(args, cases, writer, family)
        import torch
        self.torch = torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False: no GPU for the benchmark")
        torch.backends.cuda.matmul.allow_tf32 = False          # references in true f32
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        torch.cuda.init()
        self.props = torch.cuda.get_device_properties(0)
        self.l2 = int(getattr(self.props, "L2_cache_size", 0) or (50 << 20))
        self.gen = torch.Generator(device="cuda")
        self.gen.manual_seed(args.seed + seed_index * 1000 + getattr(args, "attempt", 0))
        self.timer = Timer(torch, self.mode, self.l2)
        self.tile, self.tcuda, self.target, self.tile_skip = import_tilec()
        self.arg_mode, self.arg_mode_decided = "torch", False
        self.dead = False
        self.l2_flush = False
        writer.emit("meta", meta=self.meta())

    def meta(self):
        torch = self.torch
        m = {"gpu": torch.cuda.get_device_name(0), "sm_count": self.props.multi_processor_count,
             "l2_bytes": self.l2, "gpu_memory_bytes": self.props.total_memory,
             "torch": torch.__version__, "torch_cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "timer_cycles_per_ms": round(self.timer.cycles_per_ms)}
        try:
            import triton
            m["triton"] = triton.__version__
        except Exception:                                    # noqa: BLE001
            m["triton"] = None
        if self.tile is not None:
            m["tilec"] = tilec_meta(self.tile, self.tcuda, self.target)
        if self.tile_skip:
            m["tilec_skip"] = self.tile_skip
        return m

    # ---------------------------------------------------------------- helpers for the families
    def measure_budget(self):
        return max(2.0, min(30.0, 0.15 * self.time_left()))

    def nsets(self, set_bytes):
        return nsets_for(set_bytes, self.l2)

    def flush_for(self, nsets) -> bool:
        """L2 flush between timed calls: where the case asked for it and the inputs are not rotated."""
        return self.l2_flush and nsets == 1

    def randn(self, shape, dtype=None, scale=1.0):
        torch = self.torch
        t = torch.randn(shape, device="cuda", dtype=dtype or torch.bfloat16, generator=self.gen)
        if scale != 1.0:
            t.mul_(scale)
        return t

    def rel_err(self, out, ref):
        return rel_err(self.torch, out, ref)

    def poisoned_check(self, out, ref):
        """check(fn): out filled with NaN, fn(0), synchronize, relative error of out against ref."""
        torch = self.torch

        def check(fn):
            out.fill_(float("nan"))
            fn(0)
            torch.cuda.synchronize()
            return rel_err(torch, out, ref)
        return check

    def returned_check(self, ref):
        """check(fn) for peers that return their output."""
        torch = self.torch

        def check(fn):
            o = fn(0)
            torch.cuda.synchronize()
            return rel_err(torch, o, ref)
        return check

    def cuda_alive(self):
        try:
            self.torch.cuda.synchronize()
            x = self.torch.ones(4, device="cuda")
            return float((x + 1).sum().item()) == 8.0
        except Exception:                                    # noqa: BLE001
            return False

    def case(self, case):
        self.l2_flush = False
        return super().case(case)

    def _after_case(self):
        gc.collect()
        alive = self.cuda_alive()
        if alive:
            self.torch.cuda.empty_cache()
        if self.dead or not alive:
            self.note("the CUDA context is unusable after a failure; the child exits and is restarted")
            sys.stdout.flush()
            os._exit(3)

    # ---------------------------------------------------------------- tilec arguments
    def targ(self, x):
        if self.arg_mode == "torch" or not isinstance(x, self.torch.Tensor):
            return x
        return torch_to_device_array(x)

    def first_check(self, make_launch, check):
        """Build the launch and run the correctness check. The first tilec launch of the child is
        tried with torch tensors and, if that raises, with DeviceArray views of the same memory; the
        winner is used for the rest of the child and the switch is noted."""
        launch = make_launch(self.targ)
        if self.arg_mode_decided:
            return launch, check(launch)
        try:
            res = check(launch)
            self.arg_mode_decided = True
            return launch, res
        except Exception as e:                               # noqa: BLE001
            if not self.cuda_alive():
                raise
            first = err_text(e, 300)
            self.arg_mode = "device"
            try:
                launch = make_launch(self.targ)
                res = check(launch)
            except Exception as e2:                          # noqa: BLE001
                self.arg_mode = "torch"
                second = err_text(e2, 300)
                if second == first:
                    raise e
                raise RuntimeError(f"{first} || with DeviceArray arguments instead: {second}") from e
            self.arg_mode_decided = True
            self.note(f"tilec launch with torch tensors failed ({first}); using tile DeviceArray views of the "
                      f"same memory instead")
            return launch, res


# =============================================================================== tilec, autotuned
def tuning_configs(ctx, configs) -> list:
    """The configs this mode lets @tile.autotune search (quick: the first two, smoke: the first;
    --configs: the ones named by index)."""
    idx = ctx.mode.get("config_indices")
    if idx:
        return [configs[i] for i in idx if i < len(configs)]
    n = ctx.mode["tune_configs"]
    return list(configs if n is None else configs[:n])


def tilec_tuned(ctx, kernel, configs, args, grid, check, nsets, *, outputs, flops=None, nbytes=None, tol=1e-2,
                fixed=None) -> dict:
    """tilec's record for one case (module docstring): `configs` (dicts of constexprs and options) are
    searched as given (the family applies `tuning_configs`). `args(i, targ)` gives the kernel
    arguments for input set i; `grid(meta)` the grid of a config; `outputs` the output parameters
    (restored between trials); `fixed` the constexprs every config shares."""
    fixed = dict(fixed or {})
    rec = {"status": "SKIP", "configs": [], "autotune": True}
    if ctx.tile_skip:
        rec["error"] = ctx.tile_skip
        return rec
    tile = ctx.tile
    key = [p.name for p in kernel.params if p.kind != "constexpr"]
    tuner = tile.autotune(configs=[tile.Config(**c) for c in configs], key=key, restore=list(outputs),
                          warmup=ctx.mode["tune_warmup_ms"], rep=ctx.mode["tune_rep_ms"], log=True)(kernel)

    def make_launch(targ):
        sets = [args(i, targ) for i in range(nsets)]

        def launch(i):
            tuner[grid](*sets[i], **fixed)
        return launch

    t0 = time.perf_counter()
    try:
        launch, (err, finite) = ctx.first_check(make_launch, check)
    except Exception as e:                                   # noqa: BLE001
        rec.update(status="ERROR", error=err_text(e), configs=_trials(tuner))
        if not ctx.cuda_alive():
            ctx.dead = True
            rec["error"] += " [CUDA context lost]"
        return rec
    rec["search_s"] = time.perf_counter() - t0           # compile every config + time them + the real launch
    rec["configs"] = _trials(tuner)
    rec["config"] = next(iter(tuner.best.values())).all_kwargs() if tuner.best else None
    rec["rel_err"] = err
    if not finite:
        rec.update(status="FAIL", error="non-finite outputs (unwritten or NaN)")
        return rec
    if err > tol:
        rec.update(status="FAIL", error=f"relative error {err:.2e} > {tol:g}")
        return rec
    try:
        t = ctx.timer.measure(launch, nsets, max_s=ctx.measure_budget(), flush=ctx.flush_for(nsets))
    except Exception as e:                                   # noqa: BLE001
        rec.update(status="ERROR", error=err_text(e))
        return rec
    rec.update(status="ok", ms=t["ms"], timing=t)
    if flops:
        rec["tflops"] = flops / t["ms"] / 1e9
    if nbytes:
        rec["tbps"] = nbytes / t["ms"] / 1e9
    return rec


def _trials(tuner) -> list:
    out = []
    for t in tuner.last_search:
        d = t.as_dict()
        d["config"] = t.config.all_kwargs()
        out.append(d)
    return out


def best_of(recs: list) -> dict:
    """One tilec record from several searches (e.g. one per MoE row tile): the fastest passing one,
    with every search's configs."""
    ok = [r for r in recs if r.get("status") == "ok"]
    best = dict(min(ok, key=lambda r: r["ms"]) if ok else recs[0])
    best["configs"] = [c for r in recs for c in r.get("configs", [])]
    best["search_s"] = sum(r.get("search_s") or 0.0 for r in recs)
    return best


# ================================================================================= case results
def finalize(rec):
    """best_peer / ratio / status of a case record (ratio = best peer time / tilec time: > 1 = tilec faster)."""
    peers = rec.get("peers") or {}
    ok = {k: v for k, v in peers.items() if v.get("status") == "ok" and v.get("ms")}
    t = rec.get("tilec") or {}
    if ok:
        best = min(ok, key=lambda k: ok[k]["ms"])
        rec["best_peer"] = best
        rec["peer_ms"] = ok[best]["ms"]
        if t.get("status") == "ok" and t.get("ms"):
            rec["ratio"] = ok[best]["ms"] / t["ms"]
    if "cublas-fp16" in ok and t.get("status") == "ok" and t.get("ms"):
        rec["ratio_vs_cublas"] = ok["cublas-fp16"]["ms"] / t["ms"]
    if rec.get("error"):
        rec["status"] = "ERROR"
    else:
        rec["status"] = t.get("status", "ERROR")
        if "tilec" not in rec:
            rec["error"] = "no tilec result"


def summary_line(rec) -> str:
    from .report import perf_text
    from .common import cfg_name
    parts = [f"{name} {perf_text(rec, p)}" for name, p in (rec.get("peers") or {}).items()]
    t = rec.get("tilec") or {}
    parts.append(f"tilec {perf_text(rec, t)}" + (f" [{cfg_name(t.get('config'))}]" if t.get("config") else ""))
    if rec.get("ratio"):
        parts.append(f"ratio {rec['ratio']:.2f}")
    if rec.get("error"):
        parts.append(f"case error: {rec['error'][:200]}")
    return " | ".join(parts)
