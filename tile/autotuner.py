"""`@tile.autotune`: the fastest of a list of configs, chosen per key on the user's own arguments.

    @tile.autotune(configs=[tile.Config(BM=128, BN=128, BK=64, num_warps=4, num_stages=3),
                            tile.Config(BM=64, BN=128, BK=64, num_warps=4, num_stages=4)],
                   key=["A.shape[0]", "B.shape[1]", "A.shape[1]"], restore=["C"])
    @tile.kernel
    def matmul(A: tile.Tensor[bf16, 2], B: tile.Tensor[bf16, 2], C: tile.Tensor[f32, 2],
               BM: tile.constexpr, BN: tile.constexpr, BK: tile.constexpr): ...

    matmul[lambda meta: (tile.cdiv(M, meta["BM"]), tile.cdiv(N, meta["BN"]))](A, B, C)

The shape of Triton's `triton.autotune` (stacked on the kernel; `grid` may be a function of the
chosen config's meta-parameters). A config (`tile.Config`) holds constexpr values and the launch
options `num_warps`, `num_stages` (the default pipeline depth of `tile.range` loops that do not
give `stages=`; `stages=` is accepted for it too) and `cluster` (thread-block cluster shape; the
grid function sees it in `meta["cluster"]`, as (x, y, z)). The config's values must not also be passed at
the launch.

The key: a list of argument names (a scalar's value; a tensor's shape and dtype), of tensor
attributes ("A.shape[0]", "A.shape", "A.dtype", "A.ndim"), or of callables taking the launch's
named arguments; the dtypes of all tensor arguments, the constexprs and launch options passed at
the launch, and the target are part of it too. A launch with a known key uses the winner at once;
a new key runs the search:

1. **prune**: `prune(configs, named_args) -> configs` (the user's), then, for a GPU target, each
   config whose threads per block exceed the target's limit; then each config is lowered (front
   end and the target's passes) and dropped when the shared memory it plans (`shared_bytes` after
   shared_memory_planning) exceeds the target's (and the device's) limit -- before any code is
   generated; after code generation, when ptxas's report gives registers x threads above the
   registers of a block (spills are recorded and logged, not pruned);
2. **compile** the configs in parallel, in worker processes (`ProcessPoolExecutor`, spawned: never
   a fork of a process that holds CUDA), each writing into the disk kernel cache (per-key flock) and
   returning the artifact, which the parent loads without compiling again (its pass pipeline runs
   here only if `.module` is read); serially in this process when there is one config to compile,
   `TILEC_AUTOTUNE_WORKERS=0`/`1`, or workers cannot start. The pool is reused by the searches that
   follow and shut down after 60 s without one;
3. **time** each config on the user's arguments with GPU events (`runtime/timing.py`, through the
   driver interface; L2 flushed before each timed call; median): `warmup` and `rep` are
   milliseconds, as in Triton. Tensors named in `restore` are saved first and put back before every
   trial call and after the search; those named in `reset_to_zero` are zeroed before every trial
   call and after the search (so the real launch finds them zeroed). A search left with one valid
   config does not time it. Then the real launch runs with the winner;
4. **persist** the winner under `<cache dir>/autotune/` per (kernel source, key, configs, GPU name,
   tilec version): a new process with the same key launches the winner without timing.
   `TILEC_CACHE=0` keeps winners in memory only; `tilec cache clear` deletes them.

Without a GPU (the CPU interpreter, or a GPU target compiled where there is no GPU) nothing can be
timed: autotune takes the first config that survives pruning (for the interpreter: the user's
prune only), untimed, and does not persist it -- autotuned kernels run in CI unchanged.

`TILEC_AUTOTUNE_LOG=1` (or `log=True`) prints each search to stderr: every config with its time, or
why it was pruned or failed, and the winner. `tuner.last_search` holds the same as `Trial`s;
`tuner.best` maps each key seen to its winner; `tuner.compile(*args_or_signature, target=...)` runs
steps 1-2 alone (warming the cache). Triton's spellings `restore_value=` and
`prune_configs_by={"early_config_prune": fn}` are accepted.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import compiler
from .ir.errors import PerformanceWarning, TileError
from .kernel import LAUNCH_OPTIONS, CompiledKernel, Kernel, _is_user_error, _user_error, cluster_dims

__all__ = ["Config", "autotune", "Autotuner", "Trial"]

REGISTERS_PER_BLOCK = 65536         # every NVIDIA GPU since Kepler (the device's own value wins when there is one)
FORMAT = 1                          # of the persisted winner files


# ====================================================================================== Config
class Config:
    """One point of an autotune search: constexpr values and launch options.

        tile.Config(BM=128, BN=128, BK=64, num_warps=4, num_stages=3)
        tile.Config({"BM": 128, "stages": 2})     # a dict for constexprs named like an option
    """

    __slots__ = ("kwargs", "num_warps", "num_stages", "cluster", "_kw")

    def __init__(self, kwargs: dict | None = None, *, num_warps: int | None = None, num_stages: int | None = None,
                 stages: int | None = None, cluster=None, **constexprs):
        if stages is not None and num_stages is not None and stages != num_stages:
            raise ValueError(f"tile.Config: stages={stages} and num_stages={num_stages} disagree (they are one option)")
        self.kwargs = dict(kwargs or {})
        for k, v in constexprs.items():
            if k in self.kwargs:
                raise ValueError(f"tile.Config: '{k}' given twice")
            self.kwargs[k] = v
        self.num_warps = num_warps
        self.num_stages = num_stages if num_stages is not None else stages
        for name, v in (("num_warps", self.num_warps), ("num_stages", self.num_stages)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0
                                  or (name == "num_warps" and v & (v - 1))):
                raise ValueError(f"tile.Config: {name} must be a positive "
                                 f"{'power of two' if name == 'num_warps' else 'int'}, got {v!r}")
        try:
            self.cluster = tuple(cluster_dims(cluster)) if cluster is not None else None
        except ValueError as e:
            raise ValueError(f"tile.Config: {e}") from None
        bad = [k for k in self.kwargs if k in LAUNCH_OPTIONS or k == "stream"]
        if bad:
            raise ValueError(f"tile.Config: pass {bad[0]} as a keyword of its own (num_warps=, num_stages=, cluster=)")
        d = dict(self.kwargs)
        if self.cluster is not None and self.cluster != (1, 1, 1):
            d["cluster"] = self.cluster
        if self.num_warps is not None:
            d["num_warps"] = self.num_warps
        if self.num_stages is not None:
            d["num_stages"] = self.num_stages
        self._kw = d                                     # what every launch with this config adds

    def all_kwargs(self) -> dict:
        """The keywords a launch with this config gets: the constexprs and the options that are set."""
        return dict(self._kw)

    def canonical(self) -> str:
        """A stable text of the config (persisted winners are matched by it)."""
        return json.dumps(self.all_kwargs(), sort_keys=True, default=str)

    def __eq__(self, other):
        return isinstance(other, Config) and self.canonical() == other.canonical()

    def __hash__(self):
        return hash(self.canonical())

    def __str__(self):
        return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.all_kwargs().items())

    def __repr__(self):
        return f"Config({self})"


# ======================================================================================= Trial
@dataclass
class Trial:
    """What a search did with one config. status: "ok" (compiled; `ms` once timed), "pruned" (over a
    limit, or the user's prune), "failed" (compile or launch error), "chosen" (no GPU: first valid,
    untimed). `reason` says why for the last three."""
    config: Config
    status: str = "ok"
    reason: str = ""
    ms: float | None = None
    timing: dict | None = None
    compile_s: float | None = None
    source: str = ""                  # where its code came from: "memory", "cache", "worker", "built"
    shared_bytes: int | None = None
    registers: int | None = None
    spill_bytes: int | None = None
    compiled: object = field(default=None, repr=False)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("status", "reason", "ms", "timing", "compile_s", "source",
                                           "shared_bytes", "registers", "spill_bytes")}
        d["config"] = self.config.all_kwargs()
        return {k: v for k, v in d.items() if v not in (None, "")}

    def describe(self) -> str:
        if self.status == "ok":
            s = f"{self.ms:.4f} ms" if self.ms is not None else "compiled (not timed)"
            facts = []
            if self.compile_s is not None:
                facts.append(f"{self.source} {self.compile_s:.2f} s" if self.source else f"{self.compile_s:.2f} s")
            if self.shared_bytes is not None:
                facts.append(f"smem {self.shared_bytes}")
            if self.registers:
                facts.append(f"{self.registers} regs")
            if self.spill_bytes:
                facts.append(f"SPILLS {self.spill_bytes} B")
            return s + (f" ({', '.join(facts)})" if facts else "")
        return f"{self.status}: {self.reason}"


# ==================================================================================== the key
_ATTR_KEY = re.compile(r"^([A-Za-z_]\w*)(?:\.(shape)\[(-?\d+)\]|\.(shape|dtype|ndim))?$")


def _norm(v):
    """A key value: hashable, JSON-able, equal for equal launches (a tensor -> its shape and dtype)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(_norm(x) for x in v)
    if hasattr(v, "shape") and hasattr(v, "dtype") and getattr(v, "shape", None) != ():
        return (tuple(int(s) for s in v.shape), _dtype_text(v.dtype))
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return _norm(v.item())
    if hasattr(v, "__index__"):
        return int(v.__index__())
    return str(v)


def _dtype_text(dt) -> str:
    s = str(dt)
    return s[6:] if s.startswith("torch.") else s


def _key_getter(spec, kernel: Kernel):
    names = [p.name for p in kernel.params]
    if callable(spec):
        return getattr(spec, "__name__", "key"), spec
    m = _ATTR_KEY.match(str(spec).strip()) if isinstance(spec, str) else None
    if m is None or m.group(1) not in names:
        raise ValueError(f"@tile.autotune key {spec!r}: {kernel.name} has no parameter "
                         f"{(m.group(1) if m else spec)!r} (parameters: {', '.join(names)}); a key is a "
                         f"parameter name, a tensor attribute ('A.shape[0]', 'A.shape', 'A.dtype', 'A.ndim') "
                         f"or a callable of the named arguments")
    name, idx, attr = m.group(1), m.group(3), m.group(2) or m.group(4)
    if attr is None:
        def value(a):
            v = a[name]
            if getattr(v, "shape", ()) != () and hasattr(v, "dtype"):
                return tuple(v.shape), v.dtype          # a tensor: its shape and dtype
            return v
        return spec, value
    if idx is not None:
        i = int(idx)
        return spec, lambda a: a[name].shape[i]
    if attr == "ndim":
        return spec, lambda a: len(a[name].shape)
    return spec, lambda a: getattr(a[name], attr)


# ====================================================================================== tuner
class Autotuner:
    """A kernel with an autotuned config (see the module docstring). Launch it as the kernel:
    `tuner[grid](*args, **kwargs)`; `.kernel` is the tile.Kernel underneath."""

    def __init__(self, kernel: Kernel, configs, key=(), *, prune=None, reset_to_zero=(), restore=(),
                 warmup: float = 25.0, rep: float = 100.0, log: bool | None = None):
        if not isinstance(kernel, Kernel):
            raise TypeError(f"@tile.autotune decorates a @tile.kernel (put it above @tile.kernel), got {kernel!r}")
        configs = [c if isinstance(c, Config) else Config(c) for c in configs]
        if not configs:
            raise ValueError("@tile.autotune needs at least one config")
        self.kernel = kernel
        self.fn = kernel.fn
        self.name = kernel.name
        self.configs = configs
        if isinstance(key, str):
            key = [key]
        getters = [_key_getter(k, kernel) for k in key]
        self.key = [k for k, _ in getters]
        self._get = [g for _, g in getters]
        self.prune = prune
        self.reset_to_zero = _names(reset_to_zero, kernel, "reset_to_zero")
        self.restore = _names(restore, kernel, "restore")
        both = set(self.reset_to_zero) & set(self.restore)
        if both:
            raise ValueError(f"@tile.autotune: {sorted(both)} named in both reset_to_zero and restore")
        self.warmup, self.rep = float(warmup), float(rep)
        self.log = log
        self._names = [p.name for p in kernel.params]
        self._defaults = {p.name: p.default for p in kernel.params if p.has_default}
        self._tuned = set().union(*(c.all_kwargs() for c in configs))
        self._tensors = [p.name for p in kernel.params if p.kind in ("tensor", "infer")]
        self.best: dict = {}             # key -> Config
        self.last_search: list = []      # the Trials of the latest search
        self.searches = 0                # searches run in this process (timed or not)
        self._bench = None               # tests: a timing backend (.driver, .device_name, .flusher(stream))
        self._source_hash = None

    def __repr__(self):
        return f"<tile.autotune {self.name}: {len(self.configs)} configs, key {self.key}>"

    def __call__(self, *args, **kwargs):
        raise TypeError(f"launch a kernel with a grid: {self.name}[grid](*args)")

    def __getitem__(self, grid):
        return _Launch(self, grid)

    # ------------------------------------------------------------------ launch
    def run(self, grid, *args, **kwargs):
        __tracebackhide__ = True
        try:
            named = dict(self._defaults)
            named.update(zip(self._names, args))
            if kwargs:
                named.update(kwargs)
            target = compiler.resolve()
            k = self._key(named, kwargs, target)
            cfg = self.best.get(k)
            if cfg is None:
                cfg = self._choose(k, grid, args, kwargs, named, target)
            ckw = cfg._kw
            g = grid(dict(named, **ckw)) if callable(grid) else grid
            return self.kernel.run(g, *args, **kwargs, **ckw)
        except Exception as e:
            if _is_user_error(e):
                raise e.with_traceback(None) from None
            raise

    def _named(self, args, kwargs) -> dict:
        d = dict(self._defaults)
        d.update(zip(self._names, args))
        d.update(kwargs)
        return d

    def _key(self, named: dict, kwargs: dict, target) -> tuple:
        """(target, key values, tensor dtypes, launch keywords): cheap to build (raw values; JSON text
        only when a winner is persisted) and hashable."""
        try:
            vals = tuple(get(named) for get in self._get)
            dts = tuple(getattr(named[n], "dtype", None) for n in self._tensors)
            fixed = tuple(sorted(kv for kv in kwargs.items() if kv[0] != "stream")) if kwargs else ()
            k = (target.name, vals, dts, fixed)
            hash(k)
            return k
        except (KeyError, AttributeError, IndexError, TypeError) as e:
            if isinstance(e, TypeError) and "unhashable" in str(e):
                return (target.name, tuple(_norm(v) for v in vals), tuple(map(str, dts)),
                        tuple((n, _norm(v)) for n, v in fixed))
            raise _user_error(TypeError(f"{self.name}: the autotune key {self.key} cannot be read from the "
                                        f"arguments ({type(e).__name__}: {e})")) from None

    # ------------------------------------------------------------------ the search
    def _choose(self, k, grid, args, kwargs, named, target) -> Config:
        clash = sorted(self._tuned & set(kwargs))
        if clash:
            raise _user_error(TypeError(f"{self.name}: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} "
                                        f"chosen by @tile.autotune; do not pass {'it' if len(clash) == 1 else 'them'} "
                                        f"at the launch"))
        pos = [n for n in self._names[:len(args)] if n in self._tuned]
        if pos:
            raise _user_error(TypeError(f"{self.name}: {pos[0]} is chosen by @tile.autotune; do not pass it "
                                        f"(positionally) at the launch"))
        bench = self._timer(target)
        if bench is not None:
            cfg = self._load(k, bench)
            if cfg is not None:
                self.best[k] = cfg
                return cfg
        self.searches += 1
        configs = self._user_prune(named)
        if bench is None:
            cfg, trials = self._first_valid(configs, args, kwargs, target)
        else:
            trials = self._compile_trials(configs, args, kwargs, target)
            ok = [t for t in trials if t.status == "ok"]
            if len(ok) > 1:
                self._time(ok, grid, args, kwargs, named, bench)
                ok = [t for t in ok if t.status == "ok"]
            if not ok:
                raise self._none_valid(trials)
            win = min(ok, key=lambda t: t.ms if t.ms is not None else math.inf)
            cfg = win.config
            self._save(k, bench, trials, cfg)
        self.last_search = trials
        self.best[k] = cfg
        self._log(k, trials, cfg, target, bench)
        if bench is not None:
            win = next(t for t in trials if t.config is cfg)
            if win.spill_bytes:
                warnings.warn(f"tilec: autotune of '{self.name}' chose a config that spills registers ({cfg}: "
                              f"{win.spill_bytes} bytes of spill loads and stores)", PerformanceWarning, stacklevel=4)
        return cfg

    def _user_prune(self, named) -> list:
        configs = list(self.configs)
        if self.prune is not None:
            kept = list(self.prune(list(configs), dict(named)))
            if not kept:
                raise _user_error(ValueError(f"{self.name}: the autotune prune function kept no config"))
            configs = [c if isinstance(c, Config) else Config(c) for c in kept]
        return configs

    def _none_valid(self, trials):
        why = "; ".join(f"[{t.config}] {t.status}: {t.reason}" for t in trials)
        return _user_error(TileError(f"autotune of '{self.name}': no config can run: {why}"))

    def _first_valid(self, configs, args, kwargs, target):
        """No GPU to time on: the first config that survives pruning (GPU targets: and compiles)."""
        trials = []
        if not target.is_gpu:
            t = Trial(configs[0], "chosen", "the interpreter cannot time configs: the first one is used")
            return configs[0], [t]
        for cfg in configs:
            t = self._compile_trials([cfg], args, kwargs, target)[0]
            trials.append(t)
            if t.status == "ok":
                t.status, t.reason = "chosen", "no GPU to time configs on: the first valid one is used"
                return cfg, trials
        raise self._none_valid(trials)

    # ------------------------------------------------------------------ compile (and prune)
    def compile(self, *args, target=None, workers: int | None = None, **kwargs) -> list:
        """Prune and compile every config for these arguments (or a signature, as Kernel.compile
        takes) and target, without launching anything; returns the Trials (`.compiled` holds each
        CompiledKernel). What a search does before timing; also warms the kernel cache."""
        t = compiler.resolve(target)
        named = self._named(args, kwargs)
        return self._compile_trials(self._user_prune(named), args, kwargs, t, workers=workers, signature_ok=True)

    def _compile_trials(self, configs, args, kwargs, target, workers=None, signature_ok=False) -> list:
        k = self.kernel
        trials, jobs = [], []
        limits = _limits(target)
        for cfg in configs:
            t = Trial(cfg)
            trials.append(t)
            kw = dict(kwargs, **cfg.all_kwargs())
            kw.pop("stream", None)
            nw = kw.get("num_warps", 4)
            if target.is_gpu and target.threads(nw) > limits["threads"]:
                t.status, t.reason = "pruned", (f"{target.threads(nw)} threads per block (num_warps={nw}); "
                                                f"{target.name} allows {limits['threads']}")
                continue
            t0 = time.perf_counter()
            try:
                b = k.bind(args, kw, signature_ok=signature_ok)
                ck = k.cache.get(k._cache_key(b, target.name))
                if ck is not None:
                    t.compiled, t.source = ck, "memory"
                else:
                    module, ir = k._frontend(b, target)
                    art = None
                    if target.is_gpu:
                        from .runtime.cache import default_cache
                        entry = default_cache().get(compiler.launch_cache_parts(ir, target))
                        art = entry.artifact if entry is not None else None
                    if art is not None:
                        t.compiled, t.source = self._lazy(b, target, module, ir, art), "cache"
                    elif not target.is_gpu:
                        t.compiled, t.source = k._compile(b, target.name), "built"
                    else:
                        jobs.append((t, b, module, ir))
            except Exception as e:                       # noqa: BLE001 - a config that does not compile is out
                t.status, t.reason = "failed", _one_line(e)
            t.compile_s = time.perf_counter() - t0
        if jobs:
            self._run_jobs(jobs, target, limits, workers)
        for t in trials:
            if t.status == "ok":
                _check_resources(t, target, limits)
        return trials

    def _lazy(self, b, target, module, ir, art) -> CompiledKernel:
        """A CompiledKernel from an artifact compiled elsewhere (a worker, the disk cache): launches need
        only the artifact; its pass pipeline runs in this process only if `.module`/`.ir_after` is read."""
        k = self.kernel
        ck = CompiledKernel(k.name, target.name, ir, None, {}, dict(b.types), dict(b.constexprs), k.params,
                            lower=lambda: compiler.lower(module, target, name=k.name))
        ck.artifact = art
        ck.asm["ptx"] = art.ptx
        key = k._cache_key(b, target.name)
        ck.any_strides = key[2]                          # tensors this specialization copies without TMA
        return k.cache.setdefault(key, ck)

    def _run_jobs(self, jobs, target, limits, workers) -> None:
        n = _worker_count(len(jobs), workers)
        done = False
        if n > 1:
            done = self._run_parallel(jobs, target, limits, n)
        if not done:
            for t, b, module, ir in jobs:
                if t.status == "ok" and t.compiled is None:
                    self._run_serial(t, b, module, ir, target, limits)

    def _run_serial(self, t, b, module, ir, target, limits) -> None:
        k = self.kernel
        t0 = time.perf_counter()
        try:
            with _quiet():
                res = _lower_and_generate(module, ir, target, k.name, limits["shared_bytes"])
        except Exception as e:                           # noqa: BLE001
            t.status, t.reason = "failed", _one_line(e)
            return
        finally:
            t.compile_s = (t.compile_s or 0.0) + time.perf_counter() - t0
        if "pruned" in res:
            t.status, t.reason, t.shared_bytes = "pruned", res["pruned"], res.get("shared_bytes")
            return
        module, ir_after = res["module"], res["ir_after"]
        ck = CompiledKernel(k.name, target.name, ir, module, ir_after, dict(b.types), dict(b.constexprs), k.params)
        ck.artifact = res["artifact"]
        ck.asm["ptx"] = ck.artifact.ptx
        key = k._cache_key(b, target.name)
        ck.any_strides = key[2]
        t.compiled = k.cache.setdefault(key, ck)
        t.source = res.get("source", "built")

    def _run_parallel(self, jobs, target, limits, n) -> bool:
        """Compile in worker processes; False (nothing done) when they cannot be used."""
        from .ir.artifact import Artifact
        from .runtime.cache import default_cache
        cache = default_cache()
        t0 = time.perf_counter()
        try:
            pool = _pool(n, cache)
            with _no_main_reimport():
                futs = [pool.submit(_worker_job, ir, target.name, self.kernel.name, limits["shared_bytes"])
                        for _, _, _, ir in jobs]
        except Exception as e:                           # noqa: BLE001 - no processes here: compile serially
            _drop_pool()
            self._note(f"compile workers unavailable ({_one_line(e)}); compiling serially")
            return False
        left = []
        for (t, b, module, ir), fut in zip(jobs, futs):
            try:
                res = fut.result()
            except Exception as e:                       # noqa: BLE001 - a dead worker: this one serially
                _drop_pool()
                self._note(f"a compile worker failed ({_one_line(e)}); compiling that config serially")
                left.append((t, b, module, ir))
                continue
            t.compile_s = (t.compile_s or 0.0) + res.get("seconds", time.perf_counter() - t0)
            if "error" in res:
                t.status, t.reason = "failed", res["error"]
            elif "pruned" in res:
                t.status, t.reason, t.shared_bytes = "pruned", res["pruned"], res.get("shared_bytes")
            else:
                parts = compiler.launch_cache_parts(ir, target)
                entry = cache.get(parts)                 # the worker wrote it to disk (same directory)
                if entry is None:                        # no disk tier: keep what the worker sent
                    entry = cache.put(parts, Artifact.from_json(res["artifact"]))
                t.compiled, t.source = self._lazy(b, target, module, ir, entry.artifact), "worker"
        _release_pool()
        for t, b, module, ir in left:
            self._run_serial(t, b, module, ir, target, limits)
        return True

    # ------------------------------------------------------------------ timing
    def _timer(self, target):
        """The timing backend when configs can be timed here (a GPU target and its GPU), else None."""
        if self._bench is not None:
            return self._bench
        if not target.is_gpu or compiler.gpu_arch() is None:
            return None
        return _GpuBench(target)

    def _time(self, trials, grid, args, kwargs, named, bench) -> None:
        from .runtime.timing import ArgState, do_bench
        stream = kwargs.get("stream")
        state = ArgState(named, restore=self.restore, zero=self.reset_to_zero, driver=bench.driver,
                         stream=_stream_handle(stream, bench))
        state.save()
        flush = bench.flusher(stream)
        try:
            for t in trials:
                ckw = t.config.all_kwargs()
                g = grid(dict(named, **ckw)) if callable(grid) else grid
                run = self.kernel.run

                def call(g=g, ckw=ckw):
                    run(g, *args, **kwargs, **ckw)
                try:
                    tm = do_bench(call, bench.driver, warmup_ms=self.warmup, rep_ms=self.rep, before=state.prepare,
                                  stream=stream, flush=flush)
                    t.ms, t.timing = tm.ms, tm.as_dict()
                except Exception as e:                   # noqa: BLE001
                    if getattr(e, "sticky", False):      # the CUDA context is gone: nothing else can run
                        raise
                    t.status, t.reason = "failed", f"launch: {_one_line(e)}"
        finally:
            state.finish()

    # ------------------------------------------------------------------ persistence
    def _record_path(self, k, bench) -> Path | None:
        from .runtime.cache import compiler_version, default_cache
        cache = default_cache()
        if not cache.disk:
            return None
        if self._source_hash is None:
            try:
                src = inspect.getsource(self.fn)
            except (OSError, TypeError):
                src = self.fn.__code__.co_code.hex()
            self._source_hash = hashlib.sha256(src.encode()).hexdigest()[:20]
        ident = {"kernel": self.name, "source": self._source_hash, "key": k, "gpu": bench.device_name,
                 "version": compiler_version(), "configs": [c.canonical() for c in self.configs],
                 "key_spec": [str(s) for s in self.key]}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        return cache.directory / "autotune" / f"{self.name}-{h[:24]}.json"

    def _load(self, k, bench) -> Config | None:
        path = self._record_path(k, bench)
        if path is None:
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("gpu") != bench.device_name:
            return None
        for c in self.configs:
            if c.canonical() == doc.get("config"):
                if self._logging():
                    print(f"tilec autotune: {self.name} {_key_text(self.key, k)}: {c} (chosen earlier, from "
                          f"{path})", file=sys.stderr, flush=True)
                return c
        return None

    def _save(self, k, bench, trials, cfg) -> None:
        path = self._record_path(k, bench)
        if path is None:
            return
        from .runtime.cache import compiler_version
        doc = {"format": FORMAT, "kernel": self.name, "key": k, "gpu": bench.device_name,
               "version": compiler_version(), "config": cfg.canonical(),
               "trials": [t.as_dict() for t in trials], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            _write_private(path, json.dumps(doc, default=str, indent=1))
        except OSError as e:
            self._note(f"cannot save the autotune result in {path.parent} ({e})")

    # ------------------------------------------------------------------ log
    def _logging(self) -> bool:
        if self.log is not None:
            return bool(self.log)
        return os.environ.get("TILEC_AUTOTUNE_LOG", "").strip().lower() not in ("", "0", "false", "no", "off")

    def _note(self, msg) -> None:
        if self._logging():
            print(f"tilec autotune: {self.name}: {msg}", file=sys.stderr, flush=True)

    def _log(self, k, trials, cfg, target, bench) -> None:
        if not self._logging():
            return
        where = f"{bench.device_name} ({target.name})" if bench is not None else f"{target.name}, untimed"
        lines = [f"tilec autotune: {self.name} {_key_text(self.key, k)} on {where}"]
        w = max(len(str(t.config)) for t in trials)
        for t in trials:
            lines.append(f"  {str(t.config):<{w}}  {t.describe()}")
        lines.append(f"  winner: {cfg}")
        print("\n".join(lines), file=sys.stderr, flush=True)


class _Launch:
    """`tuner[grid]`: call it with the kernel's arguments."""

    def __init__(self, tuner: Autotuner, grid):
        self.tuner, self.grid = tuner, grid

    def __call__(self, *args, **kwargs):
        __tracebackhide__ = True
        return self.tuner.run(self.grid, *args, **kwargs)


def autotune(configs, key=(), *, prune=None, reset_to_zero=(), restore=(), warmup: float = 25.0,
             rep: float = 100.0, log: bool | None = None, restore_value=None, prune_configs_by=None):
    """Decorator (above `@tile.kernel`): see the module docstring.

    configs: tile.Config list. key: argument names / tensor attributes / callables. prune:
    fn(configs, named_args) -> configs. reset_to_zero / restore: tensor argument names. warmup /
    rep: milliseconds of warm-up and of timed calls per config. log: print each search (default
    $TILEC_AUTOTUNE_LOG). Triton's spellings are accepted too: restore_value= for restore=,
    prune_configs_by={"early_config_prune": fn} for prune=fn (no perf_model / top_k)."""
    if restore_value is not None:
        if restore:
            raise ValueError("@tile.autotune: give restore= or restore_value= (the same), not both")
        restore = restore_value
    if prune_configs_by is not None:
        extra = sorted(set(prune_configs_by) - {"early_config_prune"})
        if extra or prune is not None:
            raise ValueError(f"@tile.autotune: prune_configs_by supports only 'early_config_prune' (got "
                             f"{sorted(prune_configs_by)}), and not together with prune=")
        prune = prune_configs_by.get("early_config_prune")

    def wrap(k):
        if inspect.isfunction(k):
            from .kernel import kernel as _kernel
            k = _kernel(k)
        return Autotuner(k, configs, key, prune=prune, reset_to_zero=reset_to_zero, restore=restore,
                         warmup=warmup, rep=rep, log=log)
    return wrap


# =================================================================================== helpers
def _names(names, kernel: Kernel, what: str) -> list:
    if isinstance(names, str):
        names = [names]
    params = {p.name: p for p in kernel.params}
    out = []
    for n in names or ():
        p = params.get(n)
        if p is None or p.kind in ("constexpr", "scalar"):
            raise ValueError(f"@tile.autotune {what}: {n!r} is not a tensor parameter of {kernel.name} "
                             f"(parameters: {', '.join(params)})")
        out.append(n)
    return out


def _one_line(e) -> str:
    s = f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)
    s = " ".join(s.split())
    return s if len(s) <= 400 else s[:400] + " ..."


def _value_text(v) -> str:
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], tuple) and not isinstance(v[1], (tuple, int)):
        return "x".join(map(str, v[0])) + " " + _dtype_text(v[1])      # a tensor: 4096x4096 bf16
    return str(v)


def _key_text(spec, k) -> str:
    _, vals, dts, fixed = k
    parts = [f"{s}={_value_text(v)}" for s, v in zip(spec, vals)]
    parts += [f"{n}={v}" for n, v in fixed]
    if dts:
        parts.append("dtypes " + "/".join(_dtype_text(d) for d in dts))
    return "[" + ", ".join(parts) + "]"


def _limits(target) -> dict:
    """The per-block limits configs are pruned against: the target's, tightened by the device's when
    this process has a GPU of the target's family."""
    lim = {"threads": target.limits.threads, "shared_bytes": target.limits.shared_bytes,
           "registers": REGISTERS_PER_BLOCK if target.family == "nvidia" else None}
    if target.family == "nvidia" and compiler.gpu_arch() is not None:
        try:
            from .runtime import cuda
            d = cuda.device()
            lim["threads"] = min(lim["threads"], d.max_threads_per_block)
            lim["shared_bytes"] = min(lim["shared_bytes"], d.max_shared_per_block_optin)
            lim["registers"] = d.max_registers_per_block or lim["registers"]
        except Exception:                                # noqa: BLE001
            pass
    return lim


def _check_resources(t: Trial, target, limits) -> None:
    """Fill the trial's resource facts from its artifact; prune it when they exceed a limit."""
    art = getattr(t.compiled, "artifact", None)
    if art is None:
        return
    t.shared_bytes = art.meta.shared_bytes
    if t.shared_bytes > limits["shared_bytes"]:
        t.status, t.reason = "pruned", (f"needs {t.shared_bytes} bytes of shared memory; {target.name} allows "
                                        f"{limits['shared_bytes']}")
        return
    rep = (art.extra or {}).get("ptxas")
    if rep:
        t.registers = rep.get("registers")
        t.spill_bytes = (rep.get("spill_stores") or 0) + (rep.get("spill_loads") or 0) or None
        if limits["registers"] and t.registers and t.registers * art.meta.num_threads > limits["registers"]:
            t.status, t.reason = "pruned", (f"{t.registers} registers x {art.meta.num_threads} threads > "
                                            f"{limits['registers']} registers per block")


def _lower_and_generate(module, ir, target, name, shared_limit) -> dict:
    """The pass pipeline, the shared-memory check, then code generation through the kernel cache
    (under the key `compiler.build` uses): {"pruned", "shared_bytes"} or {"artifact", "module",
    "ir_after", "source"}. Runs in the parent or in a worker."""
    from .runtime.cache import default_cache
    module, ir_after = compiler.lower(module, target, name=name)
    fn = module.get(name)
    smem = int(fn.attrs.get("shared_bytes", 0))
    if smem > shared_limit:
        return {"pruned": f"needs {smem} bytes of shared memory; {target.name} allows {shared_limit}",
                "shared_bytes": smem}
    entry = default_cache().get_or_build(compiler.launch_cache_parts(ir, target),
                                         lambda: compiler.generate(module, target, kernel=name))
    return {"artifact": entry.artifact, "module": module, "ir_after": ir_after, "shared_bytes": smem,
            "source": "built" if entry.source == "built" else "cache"}


@contextlib.contextmanager
def _quiet():
    """Spill warnings of configs under trial go to the trial records and the log, not to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        yield


# ---------------------------------------------------------------------------- worker processes
_POOL: list = []        # [(executor, workers, cache directory, disk)]
_POOL_IDLE_S = 60.0     # an unused pool is shut down after this long (its workers hold memory)
_POOL_TIMER: list = []


def _worker_count(njobs: int, workers) -> int:
    if workers is None:
        env = os.environ.get("TILEC_AUTOTUNE_WORKERS", "").strip()
        if env:
            try:
                workers = int(env)
            except ValueError:
                workers = None
    if workers is None:
        workers = min(8, max(1, (os.cpu_count() or 2) // 2))
    return max(1, min(int(workers), njobs))


def _pool(n: int, cache):
    """A process pool of `n` spawned workers compiling into `cache`'s directory, reused by the searches
    that follow within _POOL_IDLE_S seconds (`_release_pool` starts that clock)."""
    while _POOL_TIMER:
        _POOL_TIMER.pop().cancel()
    if _POOL:
        ex, size, d, disk = _POOL[0]
        if size >= n and d == str(cache.directory) and disk == cache.disk:
            return ex
        _drop_pool()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    ctx = multiprocessing.get_context("spawn")     # never fork: the parent may hold CUDA's threads
    ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                             initargs=(str(cache.directory), cache.disk, cache.max_bytes))
    _POOL.append((ex, n, str(cache.directory), cache.disk))
    return ex


def _release_pool() -> None:
    """The search is done with the pool: shut it down unless another search uses it soon."""
    import threading
    while _POOL_TIMER:
        _POOL_TIMER.pop().cancel()
    if _POOL:
        t = threading.Timer(_POOL_IDLE_S, _drop_pool)
        t.daemon = True
        t.start()
        _POOL_TIMER.append(t)


def _drop_pool() -> None:
    while _POOL:
        ex = _POOL.pop()[0]
        try:
            ex.shutdown(wait=False, cancel_futures=True)
        except Exception:                                # noqa: BLE001
            pass


@contextlib.contextmanager
def _no_main_reimport():
    """Spawned workers re-run the parent's `__main__` script unless it is hidden while they start:
    they need only `tile.autotuner._worker_job` (a user script without an `if __name__ ==
    "__main__"` guard would otherwise launch its kernels again in every worker)."""
    main = sys.modules.get("__main__")
    if main is None or (getattr(main, "__file__", None) is None and getattr(main, "__spec__", None) is None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _worker_init(directory: str, disk: bool, max_bytes: int) -> None:
    os.environ["TILEC_CACHE_DIR"] = directory
    os.environ["TILEC_CACHE"] = "1" if disk else "0"
    os.environ["TILEC_CACHE_MAX_BYTES"] = str(max_bytes)


def _worker_job(ir: str, target: str, name: str, shared_limit: int) -> dict:
    """In a worker: parse the front end's IR text, then what `_lower_and_generate` does. Returns the
    artifact's JSON (the parent reads the cache, or this when there is no disk tier)."""
    t0 = time.perf_counter()
    try:
        from .ir.parser import parse_module
        with _quiet():
            res = _lower_and_generate(parse_module(ir), ir, compiler.resolve(target), name, shared_limit)
    except Exception as e:                               # noqa: BLE001 - reported per config
        return {"error": _one_line(e), "seconds": time.perf_counter() - t0}
    out = {"seconds": time.perf_counter() - t0, "shared_bytes": res.get("shared_bytes")}
    if "pruned" in res:
        out["pruned"] = res["pruned"]
    else:
        out["artifact"] = res["artifact"].to_json()
    return out


# ------------------------------------------------------------------------------------ the GPU
class _GpuBench:
    """Timing on this process's GPU through the driver interface."""

    def __init__(self, target):
        from .runtime.driver import driver_for
        self.driver = driver_for(target)
        dev = self.driver.device()
        self.device_name = dev.name
        total = int(getattr(dev, "total_memory", 0) or 0)
        self.flush_bytes = min(256 << 20, total // 32) if total else 256 << 20

    def flusher(self, stream):
        if not self.flush_bytes:
            return None
        from .runtime.timing import l2_flusher
        return l2_flusher(self.driver, self.flush_bytes, _stream_handle(stream, self))


def _stream_handle(stream, bench):
    if stream is None:
        return None
    try:
        from .runtime.cuda import stream_handle
        return stream_handle(stream)
    except Exception:                                    # noqa: BLE001
        return stream


def _write_private(path: Path, text: str) -> None:
    """Write atomically, the directory 0700 and the file 0600 (as the kernel cache does)."""
    from .runtime.cache import _mkdir_private
    _mkdir_private(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
