"""The compile driver: the one place that runs front end -> target passes -> code generation.

`kernel.compile(...)`, launches (`kernel[grid](...)`) and the `tilec` CLI all come here:

    target = resolve(None)                      # argument, $TILEC_TARGET, the GPU in use, or cpu
    module, ir_after = lower(module, target)    # the target's pass pipeline (ir/targets.py)
    compiled = generate(module, target)         # the family's code generator -> PTX + launch facts
    compiled = compile(module, "sm_90a")        # both, for IR that has not been through the passes

Layers: this module imports dsl, ir, passes, codegen and runtime; none of them imports it.
"""
from __future__ import annotations

import copy
import os

from .ir.errors import TileError
from .ir.targets import Target, disabled_features, get_target, resolve_target
# the IR core, printer and types are imported where used: resolve() and target_guard() run on every
# launch, including those whose code comes from the kernel cache without compiling anything

__all__ = ["resolve", "target_guard", "gpu_arch", "lower", "generate", "generate_cached", "compile", "build", "clone_module",
           "is_prepared", "reset_target", "launch_cache_parts"]

_GPU_ARCH: list = []        # memo of the GPU probe: [arch or None]


def gpu_arch() -> str | None:
    """The arch of the GPU in use -- an NVIDIA one ('sm_90a', 'sm_80', ...) through the CUDA driver,
    else an AMD one ('gfx942', 'gfx950') through HIP (runtime/hip.py) -- or None when there is none."""
    if not _GPU_ARCH:
        arch = None
        try:
            from .runtime import cuda
            if cuda.available():
                arch = cuda.device().arch
        except Exception:                       # noqa: BLE001 - no driver, no bindings: no GPU
            arch = None
        if arch is None:
            arch = _amd_arch()
        _GPU_ARCH.append(arch)
    return _GPU_ARCH[0]


def _amd_arch() -> str | None:
    """The gfx arch of the AMD GPU HIP sees, if tilec has a target for it."""
    try:
        from .ir.targets import TARGETS
        from .runtime import hip
        if hip.available():
            arch = hip.device().arch
            return arch if arch in TARGETS else None
    except Exception:                           # noqa: BLE001 - no hip-python, no ROCm: no AMD GPU
        pass
    return None


_DEFAULT_TARGET: list = []  # memo of resolve(None): [($TILEC_TARGET as read, Target)]
_environ = os.environ


def resolve(target=None) -> Target:
    """The target of a compilation, resolved once: `target` if given (a name or a Target), else
    $TILEC_TARGET, else the GPU in use, else the CPU interpreter. An unknown name is a one-line
    UnknownTargetError listing the valid ones. $TILEC_DISABLE (e.g. "tma") takes features away
    (`Target.without`). The default (no argument) is memoized: resolved again only when
    $TILEC_TARGET's or $TILEC_DISABLE's text changes (one dict lookup per launch) or after
    `reset_target()`."""
    if target is None:
        env = (_environ.get("TILEC_TARGET"), _environ.get("TILEC_DISABLE"))
        memo = _DEFAULT_TARGET
        if memo and memo[0] == env:
            return memo[1]
        t = resolve_target(None, detect=gpu_arch)
        _DEFAULT_TARGET[:] = [env, t]
        return t
    return resolve_target(target, detect=gpu_arch)


def target_guard(target: Target) -> tuple[str, dict]:
    """(a Python expression, the names it reads) that is true while `resolve()` still returns
    `target`: generated launch code (runtime/launch.py FastLauncher) evaluates it on every launch, so
    it is two dict reads of the environment ($TILEC_TARGET and $TILEC_DISABLE unchanged since now,
    as resolve()'s memo requires) and a look at the memo (not reset, still this target) -- no
    function call."""
    data, encode = getattr(_environ, "_data", None), getattr(_environ, "encodekey", None)
    memo = _DEFAULT_TARGET
    names = {"_TM": memo, "_TT": target}
    if isinstance(data, dict) and encode is not None:       # CPython's os.environ: its dict of encoded items
        names.update(_TE=data.get)
        env = " and ".join(f"_TE({encode(v)!r}) == {data.get(encode(v))!r}" for v in ("TILEC_TARGET", "TILEC_DISABLE"))
    else:
        names.update(_TE=_environ.get, _TV=_environ.get("TILEC_TARGET"), _TD=_environ.get("TILEC_DISABLE"))
        env = "_TE('TILEC_TARGET') == _TV and _TE('TILEC_DISABLE') == _TD"
    return f"{env} and _TM and _TM[1] is _TT", names


def reset_target() -> None:
    """Forget the memoized default target (re-read $TILEC_TARGET and the GPU at the next resolve())."""
    _DEFAULT_TARGET.clear()


def _restrict(target: Target, options: dict) -> Target:
    """Options that take an instruction away from selection (`wgmma=False`: Hopper with mma.sync;
    `tma=False`: Hopper's async copies by cp.async), and the features $TILEC_DISABLE names. Caches
    key on the result's `key`."""
    for feature in ("wgmma", "tma"):
        if options.pop(feature, None) is False:
            target = target.without(feature)
    off = disabled_features()
    return target.without(*off) if off else target


def lower(module: Module, target, *, name: str | None = None, num_warps: int | None = None,
          dump_dir=None, stop_after: str | None = None, record: bool = True, verify=True, **options):
    """Run the target's pass pipeline on `module` (in place); returns (module, ir_after).
    record=False skips printing the IR after every pass (ir_after is then empty); verify="final"
    checks only the input and the last pass's IR (passes/manager.py run_pipeline)."""
    from .passes.manager import run_pipeline
    target = _restrict(get_target(target), dict(options))
    if num_warps is not None:
        for f in module.functions:
            f.attrs["num_warps"] = int(num_warps)
    return run_pipeline(module, target, name=name, dump_dir=dump_dir, stop_after=stop_after, record=record,
                        verify=verify)


def generate(module: Module, target, *, kernel: str | None = None, tile_ir: str = "", ir_after=None, **options):
    """Code generation for IR that has been through the target's pipeline: the family's code
    generator turns one kernel into its compiled form (PTX and launch facts on NVIDIA)."""
    from .ir.core import Module
    from .ir.printer import print_module
    target = _restrict(get_target(target), options)
    fn = _pick(module, kernel)
    if target.family == "nvidia":
        from .codegen.nvptx import compile_function
        art = compile_function(fn, target, options, tile_ir=tile_ir or print_module(Module([fn])),
                               ir_after=ir_after)
        _ptxas_resources(art)
        warn_resources(art)
        return art
    if target.family == "amd":
        from .codegen.amdgpu import compile_function
        return compile_function(fn, target, options, tile_ir=tile_ir or print_module(Module([fn])),
                                ir_after=ir_after)
    if target.family == "cpu":
        raise TileError("target cpu runs in the interpreter and has no machine code")
    raise TileError(f"no code generator for target {target.name} ({target.family}) yet")


def generate_cached(module: Module, target, *, kernel: str | None = None, use_cache: bool = True, **options):
    """`generate` through the kernel cache, keyed on the printed IR (after the pipeline), the target,
    the kernel and the options -- what `tilec compile` uses, so a second compile of the same kernel
    (or one a launch already compiled) reads the cache. The debugging views (llvm_ir, ...) exist only
    on a fresh build: pass use_cache=False for them."""
    from .ir.core import Module
    from .ir.printer import print_module
    target = _restrict(get_target(target), dict(options))
    if not use_cache or not target.is_gpu:
        return generate(module, target, kernel=kernel, **options)
    from .runtime.cache import default_cache
    fn = _pick(module, kernel)
    text = print_module(Module([fn]))
    entry = default_cache().get_or_build((text, target.key, {"stage": "generate", "kernel": fn.name, **options}),
                                         lambda: generate(module, target, kernel=kernel, **options))
    if entry.source != "built":
        warn_resources(entry.artifact)
    return entry.artifact


def compile(source, target="sm_90a", *, kernel: str | None = None, run_passes: bool | None = None, **options):
    """Compile one kernel (an IR Module, a Function, or an object with `.ir` holding one) for a GPU
    target: the pass pipeline (unless the IR has been through it; `run_passes` forces either way),
    then code generation. The input is not modified. Options: `num_warps`, `wgmma` (False: Hopper
    with mma.sync), `opt`, `maxnreg`, `min_blocks_per_sm`, `align`."""
    from .ir.core import Module
    from .ir.printer import print_module
    target = _restrict(get_target(target), options)
    module, fn = _as_function(source, kernel)
    module = clone_module(Module([fn]))
    fn = module.functions[0]
    if "num_warps" in options:
        fn.attrs["num_warps"] = int(options["num_warps"])
    ir_after = {}
    if run_passes or (run_passes is None and not is_prepared(fn)):
        module, ir_after = lower(module, target)
        fn = module.functions[0]
    return generate(module, target, tile_ir=print_module(module), ir_after=ir_after, **options)


def source_keys_enabled() -> bool:
    """Whether launches look their code up by source key (tile/source_key.py) before running the
    front end: with the kernel cache on (its memory tier always is), unless TILEC_SOURCE_KEY=0."""
    return os.environ.get("TILEC_SOURCE_KEY", "1").strip().lower() not in ("0", "false", "no", "off")


def cached_by_source(source_key: str):
    """The Artifact the kernel cache holds under a launch's source key, or None."""
    from .runtime.cache import default_cache
    entry = default_cache().get_alias(source_key)
    if entry is None:
        return None
    warn_resources(entry.artifact)
    return entry.artifact


def build(module: Module, frontend_ir: str, target, *, name: str | None = None, use_cache: bool = True,
          source_key: str | None = None, **options):
    """What a launch needs: the pipeline, then (GPU targets) code generation through the kernel cache,
    keyed on the front end's IR, the target and the options. Returns (module, ir_after, Artifact or
    None for cpu).

    GPU targets: the cache is read first, and a hit runs no pass at all -- module and ir_after are
    then None (tile.kernel.CompiledKernel runs the pipeline if they are asked for). A miss starts
    the LLVM worker process before the passes run (its start-up overlaps them), runs the pipeline
    without printing the IR after each pass (ir_after None) and checking only the last pass's IR,
    then generates the code. `source_key` (tile/source_key.py) is made an alias of the entry, so a
    later process finds it with `cached_by_source` before running the front end."""
    target = _restrict(get_target(target), dict(options))
    if not target.is_gpu:
        module, ir_after = lower(module, target, name=name, **options)
        return module, ir_after, None
    cache = key = None
    if use_cache:
        from .runtime.cache import default_cache
        cache, key = default_cache(), launch_cache_parts(frontend_ir, target, options)
        entry = cache.get(key)
        if entry is not None:
            warn_resources(entry.artifact)       # a cached kernel that spills still says so
            if source_key is not None:
                cache.put_alias(source_key, key)
            return None, None, entry.artifact
    _prestart_codegen(target)
    module, notes = _lower_keeping_warnings(module, target, name, options)

    def gen():
        art = generate(module, target, kernel=name, **options)
        if notes:                                # the passes' PerformanceWarnings travel with the code:
            art.extra["pass_warnings"] = notes   # a cache hit runs no pass, yet must say the same
        return art
    if cache is None:
        art = gen()
        warn_resources(art, ptxas=False)
        return module, None, art
    entry = cache.get_or_build(key, gen)
    warn_resources(entry.artifact, ptxas=entry.source != "built")   # (generate said the ptxas ones)
    if source_key is not None:
        cache.put_alias(source_key, key)         # the next process finds it without the front end
    return module, None, entry.artifact


def _lower_keeping_warnings(module, target, name, options):
    """`lower` for a launch (no per-pass IR, the last pass verified), with the tile.PerformanceWarnings
    the passes raise (e.g. a dot left on FMA) kept as text instead of shown: they are stored on the
    artifact and shown by `warn_resources`, on this build and on every cache hit alike."""
    import warnings
    from .ir.errors import PerformanceWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerformanceWarning)
        module, _ = lower(module, target, name=name, record=False, verify="final", **options)
    notes = []
    for w in caught:
        if issubclass(w.category, PerformanceWarning):
            if str(w.message) not in notes:
                notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return module, notes


def _prestart_codegen(target) -> None:
    """Start the LLVM worker process now (it imports and initializes LLVM while the passes run)."""
    if target.family in ("nvidia", "amd") and os.environ.get("TILEC_LLVM_INPROCESS") != "1":
        from .codegen.llvm_isolated import prestart
        prestart()


def launch_cache_parts(frontend_ir: str, target, options: dict | None = None) -> tuple:
    """The kernel-cache key parts under which `build` keeps the artifact of a front-end IR text (what
    the autotuner's compile workers fill and its parent reads back)."""
    t = target if not isinstance(target, str) else get_target(target)
    return (frontend_ir, t.key, dict(options or {}))   # key: the name plus what Target.without removed


# ------------------------------------------------------------------------------------ resources
def _ptxas_resources(art) -> None:
    """Where ptxas is on PATH (and $TILEC_PTXAS_REPORT is not 0): assemble the PTX once with
    `ptxas -v`, keep its resource report in artifact.extra["ptxas"] (registers, stack, spill
    bytes) and the cubin it made in artifact.cubin -- both travel with the artifact through the
    cache and AOT files. No ptxas: nothing (launches assemble the PTX with nvJitLink)."""
    import shutil
    if os.environ.get("TILEC_PTXAS_REPORT", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if not art.ptx or "ptxas" in art.extra or shutil.which("ptxas") is None:
        return
    from .codegen.nvptx import parse_ptxas_report, run_ptxas
    try:
        cubin, log = run_ptxas(art.ptx, art.target)
    except Exception:                            # noqa: BLE001 - the report is advisory; launches JIT the PTX
        return
    rep = parse_ptxas_report(log)
    art.extra["ptxas"] = {k: rep[k] for k in ("registers", "stack", "spill_stores", "spill_loads")}
    if cubin and not art.cubin:
        art.cubin = cubin        # kept: the first launch loads it instead of assembling the PTX again
                                 # (runtime/launch.py load_function falls back to the PTX if the driver refuses it)


def warn_resources(art, ptxas: bool = True) -> None:
    """tile.PerformanceWarnings naming the kernel and the numbers: the passes' (kept on the artifact,
    `pass_warnings`), and with `ptxas`, when its ptxas report shows register spills or ptxas says it
    had to give up performance (e.g. C7515: wgmma serialized)."""
    if art is None:
        return
    import warnings
    from .ir.errors import PerformanceWarning
    for note in (art.extra or {}).get("pass_warnings") or ():
        warnings.warn(note, PerformanceWarning, stacklevel=2)
    rep = (art.extra or {}).get("ptxas") if ptxas else None
    if not rep:
        return
    if rep.get("spill_stores") or rep.get("spill_loads"):
        warnings.warn(f"tilec: kernel '{art.name}' for {art.target} spills registers: {rep['spill_stores']} bytes "
                      f"spill stores, {rep['spill_loads']} bytes spill loads ({rep['registers']} registers, "
                      f"{rep['stack']} bytes stack frame); fewer live values per thread (smaller tiles, more "
                      f"warps) avoid it", PerformanceWarning, stacklevel=2)
    for line in (rep.get("log") or "").splitlines():
        if "Performance Loss" in line:
            warnings.warn(f"tilec: kernel '{art.name}' for {art.target}: ptxas: {line.split('info    :')[-1].strip()}",
                          PerformanceWarning, stacklevel=2)


# ------------------------------------------------------------------------------------ helpers
def _as_function(source, kernel):
    from .ir.core import Function, Module
    obj = source
    if not isinstance(obj, (Module, Function)) and hasattr(obj, "ir"):
        obj = obj.ir
    if isinstance(obj, Function):
        return Module([obj]), obj
    if isinstance(obj, Module):
        return obj, _pick(obj, kernel)
    raise TileError(f"compile() needs an IR Module or Function, got {type(source).__name__}")


def _pick(module: Module, kernel: str | None) -> Function:
    if kernel is not None:
        return module.get(kernel)
    if len(module.functions) != 1:
        raise TileError(f"the module holds {len(module.functions)} kernels: pass kernel='name'")
    return module.functions[0]


def is_prepared(fn: Function) -> bool:
    """The function has been through a GPU pipeline: every register tile has a layout, shared
    memory is planned."""
    from .ir.types import TileType
    if "shared_bytes" not in fn.attrs:
        return False
    for op in fn.walk():
        for v in op.results:
            if isinstance(v.type, TileType) and v.type.space == "reg" and v.type.layout is None:
                return False
        if op.name == "alloc_shared" and "smem_offset" not in op.attrs:
            return False
    return True


def clone_module(m: Module) -> Module:
    """A structural copy of a module (ops, blocks, values; types and attribute values shared)."""
    from .ir.core import Block, Function, Module, Operation
    vmap = {}

    def clone_block(b, nb):
        for a, na in zip(b.args, nb.args):
            vmap[id(a)] = na
        for op in b.ops:
            regions = []
            for r in op.regions:
                nr = Block([a.type for a in r.args], [a.name for a in r.args])
                regions.append((r, nr))
            nop = Operation(op.name, [vmap.get(id(v), v) for v in op.operands], [r.type for r in op.results],
                            copy.copy(op.attrs), [nr for _, nr in regions], op.loc, [r.name for r in op.results])
            for r, nr in zip(op.results, nop.results):
                vmap[id(r)] = nr
            nb.append(nop)
            for r, nr in regions:
                clone_block(r, nr)
    out = []
    for f in m.functions:
        nf = Function(f.name, [a.type for a in f.args], [a.name for a in f.args], dict(f.attrs), f.loc)
        clone_block(f.body, nf.body)
        out.append(nf)
    return Module(out)
