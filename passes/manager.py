"""The pass manager: a registry of passes and one ordered pipeline per target.

A pass is a function ``Module -> Module`` (it may also rewrite the module in place and return None)
or an object with ``.name`` and ``.run(module) -> Module``. Its docstring's first line is the
description ``tilec passes`` shows.

A target's pipeline is data on the target (`ir/targets.py`, `Target.pipeline`: pass names in order);
a pass module registers the pass by name::

    @register("layout_inference")
    def layout_inference(m: Module, target: Target) -> Module:
        '''Give every register and shared tile a layout.'''

A pass that takes a second parameter receives the resolved `Target` object (never a name to compare).
The target's own passes get order keys 100, 200, ... in their listed order; an extra pass (a plugin,
an experiment) joins pipelines with the ``register`` decorator's targets and an order key; every
pipeline is its passes sorted by order key (ties: registration order).

``targets`` is None (registered in PASSES; in the pipelines of the targets that list it),
a target name, a group name (below) or a list of either; ``order`` is one number for all of them
or a dict ``{target_or_group: order}``. To run an already registered pass a second time somewhere
(e.g. canonicalize again after lowering) call ``schedule("canonicalize", "nvidia", 900)``; the IR
after its n-th run (n >= 2) is recorded as ``"canonicalize#n"``.

Groups: ``all``, ``gpu``, and the target families ``nvidia``, ``amd``, ``cpu`` (from `ir/targets.py`).

``run_pipeline(module, target)`` runs the target's pipeline, verifying the IR after each pass
(an invalid module raises ``PassVerifyError`` naming the pass that broke it), and returns the
module with the printed IR after each pass. With ``dump_dir=DIR`` or the environment variable
``TILEC_DUMP_IR=DIR`` it writes ``DIR/<kernel>/00-frontend.tir``, ``01-<pass>.tir``, ... — each
file is valid IR text (its header is a ``//`` comment) that ``tilec ir`` / ``tilec compile`` read.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..ir.core import Module
from ..ir.errors import TileError, VerifyError
from ..ir.targets import FAMILIES, TARGETS as TARGET_OBJECTS, Target, get_target

__all__ = ["Pass", "PASSES", "PIPELINES", "TARGETS", "GROUPS", "register", "schedule", "pipeline",
           "get_pass", "run_pipeline", "PassError", "PassVerifyError", "describe"]

TARGETS = tuple(TARGET_OBJECTS)
GROUPS: dict[str, tuple[str, ...]] = {
    "all": TARGETS,
    "gpu": tuple(t for t in TARGETS if TARGET_OBJECTS[t].is_gpu),
    **FAMILIES,
}


class PassError(TileError):
    """A pass failed (crashed on valid IR). The message names the pass; the cause is chained."""

    def __init__(self, pass_name: str, msg: str):
        self.pass_name = pass_name
        super().__init__(msg)


class PassVerifyError(VerifyError):
    """The IR no longer verifies after a pass. Still a VerifyError (op, rule), plus `pass_name`."""

    def __init__(self, pass_name: str, err: VerifyError, target: str | None = None):
        self.pass_name = pass_name
        self.op, self.rule = err.op, err.rule
        where = f"pass '{pass_name}'" if pass_name != "frontend" else "the front end"
        tgt = f" (target {target})" if target else ""
        TileError.__init__(self, f"invalid IR after {where}{tgt}: {err}")


@dataclass
class Pass:
    """A named pass. `fn(module) -> Module | None` (None: rewritten in place), or
    `fn(module, target)` for a pass that asks the target (a `Target` object) questions."""
    name: str
    fn: Callable
    doc: str = ""

    @property
    def wants_target(self) -> bool:
        import inspect
        try:
            params = list(inspect.signature(self.fn).parameters.values())
        except (TypeError, ValueError):
            return False
        pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return len(pos) >= 2 or any(p.name == "target" for p in params)

    def run(self, module: Module, target: Target | str | None = None) -> Module:
        if self.wants_target:
            out = self.fn(module, get_target(target or "cpu"))
        else:
            out = self.fn(module)
        return module if out is None else out

    @property
    def summary(self) -> str:
        return describe(self)

    def __call__(self, module: Module, target=None) -> Module:
        return self.run(module, target)


PASSES: dict[str, Pass] = {}
PIPELINES: dict[str, list[str]] = {t: [] for t in TARGETS}

# (target, order, sequence number, pass name): PIPELINES is rebuilt from this on every change.
_SCHEDULE: list[tuple[str, float, int, str]] = []
_seq = 0


def _expand_targets(targets) -> list[str]:
    if targets is None:
        return []
    if isinstance(targets, str):
        targets = [targets]
    out: list[str] = []
    for t in targets:
        if t in GROUPS:
            out += [x for x in GROUPS[t] if x not in out]
        elif t in TARGETS:
            if t not in out:
                out.append(t)
        else:
            raise ValueError(f"unknown target or target group {t!r}; targets: {', '.join(TARGETS)}; "
                             f"groups: {', '.join(GROUPS)}")
    return out


def _rebuild():
    for t in TARGETS:
        PIPELINES[t] = [name for (tt, _, _, name) in sorted(_SCHEDULE, key=lambda e: (e[1], e[2])) if tt == t]


def schedule(name: str, targets, order) -> None:
    """Add the registered pass `name` to the pipelines of `targets` at `order` (see the module doc).
    `order` may be a number or a dict {target_or_group: number}."""
    global _seq
    if name not in PASSES:
        raise KeyError(f"no pass named {name!r}")
    if isinstance(order, dict):
        pairs = [(t, o) for key, o in order.items() for t in _expand_targets(key)]
        if targets is not None:
            allowed = set(_expand_targets(targets))
            pairs = [(t, o) for t, o in pairs if t in allowed]
    else:
        pairs = [(t, order) for t in _expand_targets(targets)]
    for t, o in pairs:
        if not isinstance(o, (int, float)) or isinstance(o, bool):
            raise TypeError(f"order key of pass {name!r} for {t} must be a number, got {o!r}")
        _seq += 1
        _SCHEDULE.append((t, float(o), _seq, name))
    _rebuild()


def register(name: str, targets=None, order=500, *, replace: bool = False):
    """Decorator: register a pass function or pass class/object under `name` and add it to the
    pipelines of `targets` at `order`.

        @register("dce", targets="all", order=20)
        def dce(m): ...

    `order` may also be a dict {target_or_group: number} (then `targets` defaults to its keys).
    Registering a name twice is an error unless `replace=True` (which also drops its old slots).
    """
    if isinstance(order, dict) and targets is None:
        targets = list(order)

    def deco(obj):
        if name in PASSES and not replace:
            raise ValueError(f"a pass named {name!r} is already registered")
        if replace:
            _SCHEDULE[:] = [e for e in _SCHEDULE if e[3] != name]
        PASSES[name] = _as_pass(name, obj)
        schedule(name, targets, order)
        return obj
    return deco


def unregister(name: str) -> None:
    """Remove a pass and its pipeline slots (for tests and experiments)."""
    PASSES.pop(name, None)
    _SCHEDULE[:] = [e for e in _SCHEDULE if e[3] != name]
    _rebuild()


def _as_pass(name: str, obj) -> Pass:
    if isinstance(obj, Pass):
        return obj if obj.name == name else Pass(name, obj.fn, obj.doc)
    if isinstance(obj, type):               # a pass class: instantiate it with no arguments
        obj = obj()
    run = getattr(obj, "run", None)
    fn = run if callable(run) else obj
    if not callable(fn):
        raise TypeError(f"pass {name!r} must be a function Module -> Module or an object with .run(module)")
    doc = getattr(obj, "__doc__", None) or getattr(fn, "__doc__", None) or ""
    return Pass(name, fn, doc)


def describe(p) -> str:
    """A pass's one-line description: the first sentence of its docstring's first paragraph (a
    docstring whose first line is a whole sentence gives that line)."""
    doc = p.doc if isinstance(p, Pass) else (getattr(p, "__doc__", None) or "")
    para = []
    for line in doc.strip().splitlines():
        if not line.strip():
            break
        para.append(line.strip())
    text = " ".join(para)
    m = re.search(r"[.!?](\s|$)", text)
    return text[:m.start() + 1] if m else text


def get_pass(p) -> Pass:
    """A Pass from a registered name, a Pass, a function or an object with .run."""
    if isinstance(p, Pass):
        return p
    if isinstance(p, str):
        _load_builtin_passes()
        try:
            return PASSES[p]
        except KeyError:
            raise KeyError(f"no pass named {p!r}; registered: {', '.join(sorted(PASSES))}") from None
    name = getattr(p, "name", None) or getattr(p, "__name__", None) or type(p).__name__
    return _as_pass(name, p)


def pipeline(target) -> list[Pass]:
    """The passes the target's pipeline runs, in order (a name or a Target)."""
    _load_builtin_passes()
    name = get_target(target).name
    return [PASSES[n] for n in PIPELINES[name]]


def _schedule_target_pipelines():
    """Each target's own pipeline (`Target.pipeline`, ir/targets.py) at order keys 100, 200, ..."""
    for t in TARGET_OBJECTS.values():
        for i, name in enumerate(t.pipeline):
            schedule(name, t.name, 100 * (i + 1))


_LOADED = False


def _load_builtin_passes():
    """Import every module in `tile.passes` so their @register calls have run (idempotent).
    A pass module that fails to import is reported when the pipeline is used, not silently skipped."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import pkgutil

    from .. import passes as pkg
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name != "manager" and not info.name.startswith("_"):
            try:
                importlib.import_module(f"{pkg.__name__}.{info.name}")
            except Exception as e:
                _LOADED = False
                raise PassError(info.name, f"pass module {pkg.__name__}.{info.name} failed to import: "
                                           f"{type(e).__name__}: {e}") from e
    _schedule_target_pipelines()


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.#-]", "_", s) or "_"


def _verify(m: Module, pass_name: str, target: str | None):
    from ..ir.verifier import verify
    try:
        verify(m)
    except VerifyError as e:
        raise PassVerifyError(pass_name, e, target) from e


def _dump_dir_for(root: Path, kname: str, frontend: str) -> Path:
    """DIR/<kernel>/ for a kernel's first specialization; DIR/<kernel>.2/, .3/, ... for others (a directory
    whose 00-frontend.tir holds the same input is reused, so recompiling one specialization overwrites it)."""
    k = 1
    while True:
        d = root / (kname if k == 1 else f"{kname}.{k}")
        f = d / "00-frontend.tir"
        if not d.exists() or not f.exists() or f.read_text().split("\n", 1)[-1] == frontend:
            d.mkdir(parents=True, exist_ok=True)
            return d
        k += 1


def run_pipeline(module: Module, target: Target | str = "cpu", *, verify: bool | str = True, dump_dir=None,
                 stop_after: str | None = None, passes: Iterable | None = None,
                 name: str | None = None, record: bool = True) -> tuple[Module, dict[str, str]]:
    """Run the target's pipeline (or the explicit `passes`: names, functions or Pass objects) on
    `module`. Returns (module, ir_after) where ir_after maps each pass name, in order, to the printed
    IR after it (a pass that runs twice: "name#2").

    verify: check the input and the IR after each pass; a VerifyError becomes PassVerifyError
      naming the pass (or "the front end" for invalid input). "final": the input and the IR after
      the last pass only (what compiles for a launch use: the per-pass checks cost as much as the
      passes; $TILEC_VERIFY=each turns them back on, to find the pass that broke the IR).
    record: keep the printed IR after each pass in ir_after (False: ir_after is empty).
    dump_dir (or env TILEC_DUMP_IR): write DIR/<name>/NN-<pass>.tir, 00-frontend.tir being the input
    (another specialization of the same kernel goes to DIR/<name>.2/, ...);
      `name` defaults to the module's kernel name. The IR of a pass that broke verification is still
      written, so it can be inspected.
    stop_after: the last pass to run (a name in the pipeline; "frontend" runs none).

    The target is resolved once here and handed to every pass that asks for it; each function's
    attribute `target` records its name in the IR (so a dumped module says what it was compiled for).
    """
    from ..ir.printer import print_module

    tobj = get_target(target)
    target = tobj.name
    if tobj.is_gpu:
        for f in module.functions:
            f.attrs["target"] = target

    if passes is None:
        plist = pipeline(target)
    else:
        plist = [get_pass(p) for p in passes]
    keys, counts = [], {}
    for p in plist:
        counts[p.name] = counts.get(p.name, 0) + 1
        keys.append(p.name if counts[p.name] == 1 else f"{p.name}#{counts[p.name]}")
    if stop_after is not None:
        if stop_after == "frontend":
            plist, keys = [], []
        elif stop_after not in keys:
            raise ValueError(f"pass {stop_after!r} is not in the {target} pipeline "
                             f"({', '.join(keys) or 'empty'})")
        else:
            n = keys.index(stop_after) + 1
            plist, keys = plist[:n], keys[:n]

    dump_dir = dump_dir if dump_dir is not None else (os.environ.get("TILEC_DUMP_IR") or None)
    out_dir = None
    if dump_dir:
        kname = name or ("_".join(f.name for f in module.functions) if module.functions else "module")
        out_dir = _dump_dir_for(Path(dump_dir), _safe(kname), print_module(module))

    def dump(i: int, key: str, text: str, note: str = ""):
        if out_dir is not None:
            head = f"// {'front end output' if key == 'frontend' else 'after ' + key} (target {target}){note}\n"
            (out_dir / f"{i:02d}-{_safe(key)}.tir").write_text(head + text)

    if verify == "final" and os.environ.get("TILEC_VERIFY", "").strip().lower() == "each":
        verify = True
    each = bool(verify) and verify != "final"
    if out_dir is not None:
        dump(0, "frontend", print_module(module))
    if verify:
        _verify(module, "frontend", target)

    ir_after: dict[str, str] = {}
    for i, (p, key) in enumerate(zip(plist, keys), 1):
        try:
            out = p.run(module, tobj)
        except TileError:
            raise
        except Exception as e:
            raise PassError(p.name, f"pass '{p.name}' (target {target}) crashed: {type(e).__name__}: {e}") from e
        if out is None:
            out = module
        if not isinstance(out, Module):
            raise PassError(p.name, f"pass '{p.name}' returned {type(out).__name__}, not a Module")
        module = out
        text = None
        if record or out_dir is not None:
            try:
                text = print_module(module)
            except Exception as e:
                raise PassError(p.name, f"the IR after pass '{p.name}' cannot be printed: {type(e).__name__}: {e}") from e
            if record:
                ir_after[key] = text
        if each or (verify and i == len(plist)):
            try:
                _verify(module, key, target)
            except PassVerifyError as e:
                if not each:
                    e.args = (f"{e} (checked after the last pass only: TILEC_VERIFY=each finds the pass that "
                              f"broke it)",)
                if text is not None:
                    dump(i, key, text, " -- INVALID: does not verify")
                raise
        if text is not None:
            dump(i, key, text)
    return module, ir_after
