"""A family's child process (`run.py --child FAMILY`): builds the family's context and calls its
`run(ctx)`. Results go, one JSON line per event, to the file the parent named (`--results`)."""
from __future__ import annotations

import importlib

from .common import Writer, case, err_text
from .tilec_side import BaseCtx, Ctx


def load_family(registry: dict, name: str):
    """The module registered for a family (importing it needs no torch)."""
    return importlib.import_module(registry[name])


def family_cases(mod, name: str, mode: str) -> list:
    """The family's cases in this mode: its `cases(mode)`, or one case named after it."""
    fn = getattr(mod, "cases", None)
    return list(fn(mode)) if fn is not None else [case(name, name, {})]


def run_child(args, registry: dict) -> int:
    writer = Writer(args.results)
    mod = load_family(registry, args.child)
    by_id = {c["id"]: c for c in family_cases(mod, args.child, args.mode)}
    cases = [by_id[i] for i in (args.cases or "").split(",") if i in by_id]
    if not getattr(mod, "TORCH", True):
        mod.run(BaseCtx(args, cases, writer, args.child))
        return 0
    try:
        ctx = Ctx(args, cases, writer, args.child, seed_index=list(registry).index(args.child))
    except Exception as e:                                   # noqa: BLE001
        msg = f"benchmark setup failed: {err_text(e)}"
        print(msg, flush=True)
        for c in cases:
            writer.emit("result", id=c["id"], record={"id": c["id"], "family": c["family"], "params": c["params"],
                                                      "status": "ERROR", "error": msg})
        return 0
    if ctx.tile_skip:
        ctx.note(f"tilec not run: {ctx.tile_skip}")
    mod.run(ctx)
    return 0
