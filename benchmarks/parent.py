"""The parent process: imports neither torch nor tilec. It runs one child process per family
(`run.py --child FAMILY`) with that family's share of the time budget, restarts a child that
crashed or hung for the cases it left, merges the children's JSON lines and writes
<out>/tilec-bench-<UTC stamp>-<mode>.{json,png,txt,log}, printing the table last."""
from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import HERE, MODES, REPO, ROTATE_L2_FACTOR, RUN_PY, TOL, clean
from .report import format_report, plot_ratios

# families whose records are not kernel cases: each gets its own list in the JSON (and table section)
SEPARATE = ("compile", "launch")


def run_parent(args, registry: dict, cases: list, weights: dict) -> int:
    mode_name = args.mode
    mode = MODES[mode_name]
    out_dir = Path(args.out or os.environ.get("OUT") or (HERE / "results")).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    stem = f"tilec-bench-{now.strftime('%Y%m%d-%H%M%S')}-{mode_name}"
    budget = float(args.budget or mode["budget"])
    start = time.time()
    deadline = start + budget
    work = tempfile.mkdtemp(prefix="tilec-bench-")
    seed = args.seed if args.seed is not None else int(start) % 1_000_000
    shared_cache = args.cache_dir or os.path.join(work, "tilec-cache")
    child_args = [] if args.tune_configs is None else ["--tune-configs", str(args.tune_configs)]
    if args.configs:
        child_args += ["--configs", args.configs]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TILEC_CACHE_DIR=shared_cache)
    print(f"tilec benchmarks, {mode_name} mode, {len(cases)} cases, budget {budget:.0f} s, seed {seed}, "
          f"out {out_dir}", flush=True)
    meta, notes, results = {}, [], {}
    families = [f for f in registry if any(c["family"] == f for c in cases)]
    log = open(out_dir / f"{stem}.log", "w", encoding="utf-8")
    try:
        for idx, fam in enumerate(families):
            fam_cases = [c for c in cases if c["family"] == fam]
            wsum = sum(weights[f] for f in families[idx:])
            fam_deadline = time.time() + max(0.0, deadline - time.time()) * weights[fam] / wsum
            _run_family(fam, fam_cases, fam_deadline, work, seed, mode_name, env, log, meta, notes, results,
                        child_args)
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.time() - start
    ordered = [results[c["id"]] for c in cases if c["id"] in results]
    doc = {
        "schema": 1, "date": now.isoformat(), "mode": mode_name, "elapsed_s": round(elapsed, 1), "budget_s": budget,
        "seed": seed, "gpu": meta.get("gpu"), "meta": meta, "host": host_meta(),
        "settings": {"reps": mode["reps"], "warmup": mode["warmup"], "rotate_l2_factor": ROTATE_L2_FACTOR,
                     "tolerance": TOL, "ratio": "best peer time / tilec time (> 1: tilec faster)",
                     "tilec": "@tile.autotune over the case's configs " + (
                         "(all)" if mode["tune_configs"] is None else f"(the first {mode['tune_configs']})")
                     + f", {mode['tune_warmup_ms']:g} ms warm-up and {mode['tune_rep_ms']:g} ms timed per config; "
                       f"the winner checked, then timed as the peers are"},
        "notes": notes,
        "compile": [r for r in ordered if r.get("family") == "compile"],
        "launch": [r for r in ordered if r.get("family") == "launch"],
        "cases": [r for r in ordered if r.get("family") not in SEPARATE],
    }
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(clean(doc), indent=1), encoding="utf-8")
    png_path = out_dir / f"{stem}.png"
    plot_err = plot_ratios(doc, png_path)
    table = format_report(doc)
    (out_dir / f"{stem}.txt").write_text(table + "\n", encoding="utf-8")
    print()
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {json_path}" + ("" if plot_err else f", {png_path}") + f" ({elapsed:.0f} s)")
    if plot_err:
        print(f"no plot: {plot_err}")
    print(table, flush=True)
    return 0


def _run_family(fam, fam_cases, fam_deadline, work, seed, mode_name, env, log, meta, notes, results,
                child_args=()) -> None:
    """The family's child, restarted (at most 3 times) for the cases a crash left; every case ends
    with a record (SKIP when the time ran out)."""
    attempt = 0
    while True:
        todo = [c for c in fam_cases if c["id"] not in results]
        if not todo:
            return
        left = fam_deadline - time.time()
        if left < 8 or attempt >= 3:
            why = "time budget" if left < 8 else "child crashed repeatedly"
            for c in todo:
                results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"], "status": "SKIP", "error": why}
            return
        attempt += 1
        jsonl = os.path.join(work, f"{fam}-{attempt}.jsonl")
        cmd = [sys.executable, "-u", str(RUN_PY), "--child", fam, "--results", jsonl, "--deadline",
               repr(fam_deadline), "--seed", str(seed), "--attempt", str(attempt),
               "--cases", ",".join(c["id"] for c in todo), "--mode", mode_name, *child_args]
        print(f"== {fam}: {len(todo)} case(s), {left:.0f} s" + (f" (restart {attempt - 1})" if attempt > 1 else ""),
              flush=True)
        rc, tail, timed_out = _run_child_proc(cmd, env, left + 10, f"[{fam}] ", log)
        started, got = None, 0
        for ev in _read_events(jsonl):
            kind = ev.get("event")
            if kind == "meta":
                meta.update(ev.get("meta") or {})
            elif kind == "note":
                if ev.get("note") not in notes:
                    notes.append(ev.get("note"))
            elif kind == "start":
                started = ev.get("id")
            elif kind == "result":
                results[ev["id"]] = ev["record"]
                got += 1
                if started == ev["id"]:
                    started = None
            elif kind == "update" and ev.get("id") in results:
                results[ev["id"]].update(ev.get("fields") or {})
        tail_txt = " / ".join(tail[-6:])[-700:]
        if rc == 0 and not timed_out:
            for c in todo:
                if c["id"] not in results:
                    results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"], "status": "ERROR",
                                        "error": "the child ended without a result"}
            return
        why = "timed out" if timed_out else f"exited with code {rc}"
        if started and started not in results:
            c = next(c for c in fam_cases if c["id"] == started)
            results[started] = {"id": started, "family": fam, "params": c["params"], "status": "ERROR",
                                "error": f"the benchmark process {why} during this case: {tail_txt}"}
            got += 1
        if timed_out or got == 0:
            for c in todo:
                if c["id"] not in results:
                    results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"],
                                        "status": "SKIP" if timed_out else "ERROR",
                                        "error": ("time budget (the family's child was stopped)" if timed_out
                                                  else f"the benchmark process {why}: {tail_txt}")}
            return


def _run_child_proc(cmd, env, timeout, prefix, log):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, bufsize=1, cwd=str(REPO))
    tail = collections.deque(maxlen=40)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
            log.write(prefix + line)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)             # the child's own session: it, its probe, its compile workers
        rc = proc.wait()
    th.join(timeout=5)
    return rc, list(tail), timed_out


def _read_events(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def _sh(cmd, cwd=None):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd).stdout.strip()
    except Exception:                                        # noqa: BLE001
        return None


def host_meta():
    m = {"python": sys.version.split()[0], "platform": platform.platform(), "host": platform.node()}
    try:
        import numpy
        m["numpy"] = numpy.__version__
    except Exception:                                        # noqa: BLE001
        pass
    if shutil.which("git"):
        head = _sh(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=str(REPO)) or ""
        m["git_commit"] = head if len(head) == 40 else None
        st = _sh(["git", "status", "--porcelain"], cwd=str(REPO))
        m["git_dirty_files"] = None if st is None else len([ln for ln in st.splitlines() if ln.strip()])
    if shutil.which("nvidia-smi"):
        m["nvidia_smi"] = _sh(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                                             "power.limit,temperature.gpu,utilization.gpu",
                               "--format=csv"])
    return m
