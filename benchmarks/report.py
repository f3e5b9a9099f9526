"""The benchmark's outputs besides the JSON: the table printed last (and written as .txt), the plot,
and the case listing of --dry-run / --list. No torch."""
from __future__ import annotations

import collections
import json

from .common import MODES, cfg_name, err_text


def perf_text(rec, p) -> str:
    """One implementation's result for a log line: '612.3 TF/s', '20.1 us 1.52 TB/s' or its status."""
    if not p:
        return "-"
    if p.get("status") != "ok":
        return f"{p.get('status', '?')}" + (f" ({p['error'][:160]})" if p.get("error") else "")
    if rec.get("unit") == "us":
        s = f"{p['ms'] * 1e3:.1f} us"
        if p.get("tbps"):
            s += f" {p['tbps']:.2f} TB/s"
        return s
    return f"{p['tflops']:.1f} TF/s" if p.get("tflops") else f"{p['ms']:.3f} ms"


def _cell(rec, p):
    if not p:
        return "-"
    if p.get("status") != "ok":
        return p.get("status", "?")
    if rec.get("unit") == "us":
        return f"{p['ms'] * 1e3:.1f} us" + (f" {p['tbps']:.2f}TB/s" if p.get("tbps") else "")
    return f"{p['tflops']:.1f} TF/s" if p.get("tflops") else f"{p['ms']:.3f} ms"


def _num(v, w, d=3):
    return f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"


def _compile_lines(comp) -> list:
    lines = ["compile times (s): cold = empty cache dir; warm = same process, memory caches cleared; "
             "new proc = fresh process, same cache dir; launch = host us per launch",
             f"{'kernel':<28} {'cold compile':>12} {'cold 1st run':>12} {'warm total':>10} {'new proc':>9} "
             f"{'launch us':>9}  status"]
    for r in comp:
        if r["id"] == "compile/new-process":
            lines.append(f"{r['id']:<28} import tile {r.get('import_s') or 0:.2f} s, gallery "
                         f"{r.get('gallery_s') or 0:.2f} s (compile + first run per kernel in 'new proc')"
                         if r.get("status") == "ok" else f"{r['id']:<28} {r.get('status')} {(r.get('error') or '')[:80]}")
            continue
        warm = r.get("warm_total_s", r.get("warm_compile_s"))
        newp = r.get("newproc_total_s", r.get("newproc_compile_s"))
        st = r.get("status", "?")
        if r.get("error"):
            st += " " + r["error"][:70]
        elif r.get("cold_launch_error"):
            st = "compile ok, launch ERROR: " + r["cold_launch_error"][:60]
        lines.append(f"{r['id']:<28} {_num(r.get('cold_compile_s'), 12)} {_num(r.get('cold_first_launch_s'), 12)} "
                     f"{_num(warm, 10)} {_num(newp, 9)} {_num(r.get('launch_overhead_us'), 9, 1)}  {st}")
    return lines


def _launch_lines(rows) -> list:
    lines = ["host time per launch (us; one process, a one-line elementwise kernel on torch tensors, "
             "best of 5 loops)"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"  {r['id']:<44} {r.get('status')} {(r.get('error') or '')[:90]}")
            continue
        for name, us in (r.get("host_us") or {}).items():
            lines.append(f"  {name:<44} {_num(us, 8, 2)}")
    return lines


def format_report(doc) -> str:
    lines = []
    if doc.get("compile"):
        lines += _compile_lines(doc["compile"]) + [""]
    if doc.get("launch"):
        lines += _launch_lines(doc["launch"]) + [""]
    if not doc.get("cases"):
        lines.append("(no benchmark cases selected)")
        return "\n".join(lines)
    gpu = doc.get("gpu") or "?"
    lines.append(f"tilec vs best peer on {gpu}, {doc.get('date', '')[:19]}, {doc.get('mode')} mode "
                 f"(ratio = peer time / tilec time; > 1 = tilec faster)")
    hdr = f"{'case':<36} {'tilec':>22} {'best peer':>30} {'ratio':>6} {'rel err':>8}  tilec config / status"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in doc.get("cases") or []:
        t = r.get("tilec") or {}
        bp = r.get("best_peer")
        peer = (r.get("peers") or {}).get(bp) if bp else None
        peer_cell = f"{_cell(r, peer)} {bp}" if peer else "-"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
        err = t.get("rel_err")
        err_s = f"{err:.1e}" if isinstance(err, (int, float)) else "-"
        st = r.get("status", "?")
        tail = cfg_name(t.get("config")) if st == "ok" else f"{st}: {(r.get('error') or t.get('error') or '')[:70]}"
        tcell = _cell(r, t) if t else st
        lines.append(f"{r['id']:<36} {tcell:>22} {peer_cell:>30} {ratio:>6} {err_s:>8}  {tail}")
    n = collections.Counter(r.get("status") for r in doc.get("cases") or [])
    lines.append(f"{len(doc.get('cases') or [])} cases: " + ", ".join(f"{v} {k}" for k, v in sorted(n.items(), key=str)))
    return "\n".join(lines)


def plot_ratios(doc, path):
    """A horizontal bar per case: tilec speed / best peer speed (log scale), failures marked. Returns
    an error string, or None when the PNG was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:                                   # noqa: BLE001
        return f"matplotlib unavailable ({err_text(e)})"
    try:
        rows = doc.get("cases") or []
        if not rows:
            return "no cases"
        colors = {"gemm": "#1f77b4", "attention": "#ff7f0e", "moe": "#2ca02c", "lowbit": "#9467bd"}
        fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.6))
        ys = list(range(len(rows)))[::-1]
        vals = [r.get("ratio") for r in rows]
        good = [v for v in vals if v]
        lo = min([0.5] + [v / 1.5 for v in good])
        hi = max([2.0] + [v * 1.5 for v in good])
        for y, r, v in zip(ys, rows, vals):
            if v:
                ax.barh(y, v, color=colors.get(r.get("family"), "gray"), left=0)
                ax.text(v * 1.03, y, f"{v:.2f}", va="center", fontsize=7)
            else:
                ax.text(lo * 1.05, y, r.get("status", "?"), va="center", fontsize=7,
                        color="red" if r.get("status") in ("FAIL", "ERROR") else "gray")
        ax.set_yticks(ys)
        ax.set_yticklabels([r["id"] for r in rows], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("tilec speed / best peer speed (> 1: tilec faster)")
        ax.set_title(f"tilec vs best peer, {doc.get('gpu') or '?'}, {doc.get('date', '')[:10]} ({doc.get('mode')})",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    except Exception as e:                                   # noqa: BLE001
        return err_text(e)
    return None


def dry_run(cases, mode_name, weights: dict) -> int:
    """--dry-run: the mode, then each case with its peers and tilec configs."""
    mode = MODES[mode_name]
    n = mode["tune_configs"]
    print(f"{mode_name} mode: {len(cases)} cases, reps {mode['reps']} (median), warm-up {mode['warmup']}, "
          f"budget {mode['budget']:.0f} s; tilec: @tile.autotune over "
          f"{'every config' if n is None else f'the first {n} config(s)'} "
          f"({mode['tune_warmup_ms']:g} ms warm-up, {mode['tune_rep_ms']:g} ms timed each), the winner checked and timed")
    fams = []
    for c in cases:
        if c["family"] not in fams:
            fams.append(c["family"])
    print("families: " + ", ".join(f"{f} (weight {weights.get(f, 1.0):g})" for f in fams))
    for c in cases:
        cfgs = c["configs"] if n is None else c["configs"][:n]
        cfgs = "; ".join(cfg_name(x) or json.dumps(x) for x in cfgs)
        peers = ", ".join(c["peers"]) or "-"
        print(f"  {c['id']:<40} peers: {peers:<34} tilec configs: {cfgs or '-'}")
    return 0


def list_cases(cases) -> int:
    """--list: one case id per line, `family<TAB>id`."""
    for c in cases:
        print(f"{c['family']}\t{c['id']}")
    return 0
