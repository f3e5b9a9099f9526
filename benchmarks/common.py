"""What every part of the benchmark shares and that needs neither torch nor a GPU: the modes, the
tolerances, the case records, JSON helpers, the gallery kernels (loaded by file path) and their
compile signatures, and importing tilec (with the target set to the GPU's arch)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"
RUN_PY = HERE / "run.py"

MODES = {
    # budget: seconds for the whole run (the parent splits it among the families by their WEIGHT);
    # tune_configs: how many of a case's tilec configs @tile.autotune searches (None: all);
    # tune_warmup_ms / tune_rep_ms: the autotuner's warm-up and timed milliseconds per config.
    "quick": dict(budget=150.0, reps=5, warmup=2, warm_s=0.01, triton_configs=2, tune_configs=2,
                  tune_warmup_ms=5.0, tune_rep_ms=20.0, lowbit_wtypes=("int4", "int3")),
    "full": dict(budget=500.0, reps=20, warmup=5, warm_s=0.05, triton_configs=4, tune_configs=None,
                 tune_warmup_ms=25.0, tune_rep_ms=100.0, lowbit_wtypes=("int4", "int3", "f4e2m1")),
    # smoke: tiny shapes, to check that everything runs and is right (its timings mean little)
    "smoke": dict(budget=100.0, reps=3, warmup=1, warm_s=0.0, triton_configs=1, tune_configs=1,
                  tune_warmup_ms=1.0, tune_rep_ms=3.0, lowbit_wtypes=("int4", "int3")),
}
TOL = {"gemm": 1e-2, "attention": 2e-2, "moe": 1e-2, "lowbit": 1e-2}
ROTATE_L2_FACTOR = 3          # input copies rotated so that > 3 x L2 is touched between two uses of one copy
MAX_SETS = 32
MAX_ROTATION_BYTES = 8 << 30

GALLERY = {"gemm": ("gemm", "gemm"), "attention": ("attention", "attention"), "moe_up": ("moe", "moe_up"),
           "moe_down": ("moe", "moe_down"), "lowbit_gemm": ("lowbit_gemm", "lowbit_gemm")}


def cdiv(a, b):
    return -(-a // b)


def case(family: str, cid: str, params: dict, configs=(), peers=()) -> dict:
    """A case record as the families list them (no torch): id, family, params, tilec configs, peers."""
    return {"id": cid, "family": family, "params": params, "configs": [dict(c) for c in configs],
            "peers": list(peers)}


def err_text(e: BaseException, limit: int = 600) -> str:
    s = " ".join(f"{type(e).__name__}: {e}".strip().split())
    return s if len(s) <= limit else s[:limit] + " ..."


def clean(o):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, unknown objects -> str."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if o is None or isinstance(o, (bool, int, str)):
        return o
    return str(o)


def cfg_name(cfg) -> str:
    """'128x128x64 s3 w4' for a tilec or Triton config dict."""
    if not cfg:
        return ""
    if "BLOCK_M" in cfg:
        return f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}x{cfg['BLOCK_K']} s{cfg['num_stages']} w{cfg['num_warps']}"
    s = "x".join(str(cfg[k]) for k in ("BM", "BN", "BK") if k in cfg)
    if "STAGES" in cfg:
        s += f" s{cfg['STAGES']}"
    if cfg.get("num_stages"):
        s += f" s{cfg['num_stages']}"
    if cfg.get("num_warps"):
        s += f" w{cfg['num_warps']}"
    if cfg.get("WS"):
        s += " ws"                                  # + a producer warpgroup (warp_specialize)
    if cfg.get("PINGPONG"):
        s += " pp"                                  # the consumer warpgroups take turns (passes/pingpong.py)
    if cfg.get("PERSISTENT"):
        s += " persistent"
    c = cfg.get("cluster")
    if c not in (None, 1) and tuple(c if isinstance(c, (list, tuple)) else (c,)) not in ((1,), (1, 1, 1)):
        s += f" cluster{'x'.join(map(str, c)) if isinstance(c, (list, tuple)) else c}"
    return s


class Writer:
    """Appends one JSON object per line to the results file (the parent reads it after the child ends)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1, encoding="utf-8")

    def emit(self, event, **kw):
        self.f.write(json.dumps(clean({"event": event, **kw})) + "\n")
        self.f.flush()


# ------------------------------------------------------------------------------ the gallery
def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_gallery(stem: str):
    name = f"tilec_gallery_{stem}"
    return sys.modules.get(name) or load_module(EXAMPLES / f"{stem}.py", name)


def gallery_kernel(kname: str):
    stem, attr = GALLERY[kname]
    return getattr(load_gallery(stem), attr)


def kernel_sig(tile, kname, wtype=None):
    """A signature for kernel.compile(): tile.Tensor[dtype, rank] per tensor, float per f32 scalar."""
    T, bf16, f32, i32 = tile.Tensor, tile.bf16, tile.f32, tile.i32
    if kname == "gemm":
        return (T[bf16, 2], T[bf16, 2], T[bf16, 2], T[f32, 1], float)
    if kname == "attention":
        return (T[bf16, 4], T[bf16, 4], T[bf16, 4], T[bf16, 4], float)
    if kname == "moe_up":
        return (T[bf16, 2], T[bf16, 3], T[i32, 2], T[i32, 1], T[bf16, 2])
    if kname == "moe_down":
        return (T[bf16, 2], T[bf16, 3], T[i32, 1], T[bf16, 2])
    if kname == "lowbit_gemm":
        return (T[bf16, 2], T[tile.dtype(wtype), 2], T[f32, 2], T[bf16, 2])
    raise KeyError(kname)


# ------------------------------------------------------------------------------------ tilec
def import_tilec():
    """(tile, tile.runtime.cuda, target, reason) -- reason is why tilec cases cannot run here, or None.
    On a GPU, $TILEC_TARGET is set to its arch unless it is set already."""
    try:
        import tile
        from tile.runtime import cuda as tcuda
    except Exception as e:                                   # noqa: BLE001
        return None, None, None, f"import tile failed: {err_text(e)}"
    arch, why = None, None
    try:
        if tcuda.available():
            arch = tcuda.device().arch
        else:
            why = "tile.runtime.cuda.available() is False (no driver/cuda-python, or no device)"
    except Exception as e:                                   # noqa: BLE001
        why = f"tile.runtime.cuda failed: {err_text(e)}"
    if arch and not os.environ.get("TILEC_TARGET"):
        os.environ["TILEC_TARGET"] = arch
    try:
        target = tile.current_target()
    except Exception as e:                                   # noqa: BLE001
        return tile, tcuda, None, f"tile.current_target() failed: {err_text(e)}"
    if why is None and target == "cpu":
        why = ("tilec's target is 'cpu' (TILEC_TARGET=cpu): the NumPy interpreter is far too slow for these "
               "sizes, so tilec cases are skipped")
    return tile, tcuda, target, why


def tilec_meta(tile, tcuda, target) -> dict:
    m = {"target": target, "TILEC_TARGET": os.environ.get("TILEC_TARGET"),
         "TILEC_CACHE_DIR": os.environ.get("TILEC_CACHE_DIR")}
    try:
        from importlib.metadata import version
        m["version"] = version("tilec")
    except Exception:                                        # noqa: BLE001
        m["version"] = getattr(tile, "__version__", None)
    try:
        m["file"] = tile.__file__
        if tcuda is not None and tcuda.available():
            d = tcuda.device()
            m["device"] = {"name": d.name, "arch": d.arch, "sm_count": d.sm_count, "l2_bytes": d.l2_bytes,
                           "clock_khz": d.clock_khz, "driver_version": d.driver_version,
                           "peak_bandwidth_gbs": round(d.peak_bandwidth_gbs, 1)}
    except Exception as e:                                   # noqa: BLE001
        m["device_error"] = err_text(e)
    return m
