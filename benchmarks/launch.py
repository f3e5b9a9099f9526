"""Family `launch`: host time per launch of a one-line elementwise kernel on torch tensors, in one
process -- tilec's fast path, its general path and its @tile.autotune layer beside Triton and
torch.add (benchmarks/launch_overhead.py measures; this records). Reported in the JSON's "launch"
list and its own table section, not among the kernel cases (host time is not GPU time)."""
from __future__ import annotations

from .common import case, err_text

WEIGHT = 0.5
SIZE = 4096
LAUNCHES = {"quick": 2000, "full": 10000, "smoke": 200}


def cases(mode: str) -> list:
    return [case("launch", f"launch/add1-{SIZE}", dict(size=SIZE, n=LAUNCHES[mode]),
                 peers=["triton", "torch.add"])]


def run(ctx) -> None:
    for c in ctx.cases:
        rec = {"id": c["id"], "family": "launch", "params": c["params"], "unit": "us", "status": "ERROR"}
        ctx.emit("start", id=c["id"])
        print(f"--- {c['id']}", flush=True)
        if ctx.tile_skip:
            rec.update(status="SKIP", error=ctx.tile_skip)
        else:
            try:
                from . import launch_overhead
                rows = launch_overhead.measure(c["params"]["n"], c["params"]["size"])
                rec.update(status="ok", host_us={name: us for name, us in rows})
                for name, us in rows:
                    print(f"    {name:<44} {us:8.2f} us/launch", flush=True)
            except Exception as e:                           # noqa: BLE001
                rec["error"] = err_text(e)
        ctx.emit("result", id=c["id"], record=rec)
