"""The kernel cache across processes: one build per key (flock), permissions, LRU eviction under a
size cap, damaged entries rebuilt, `tilec cache info|clear`, and `tilec compile` through the cache."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tile.ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
from tile.ir.core import Function
from tile.ir.dtypes import dtype as D
from tile.ir.types import ScalarType, TensorType
from tile.runtime import cache as C


def built(ptx="// ptx", pad=0):
    f = Function("k", [TensorType(D("f32"), (None,)), ScalarType(D("i32"))], ["X", "n"])
    meta = KernelMeta(name="k", target="sm_90a", num_threads=128, params=flatten_params(f))
    return Artifact(meta, ptx=ptx + " " * pad, signature=signature_of_function(f))


# A process that builds (slowly) through the cache and appends one line to a marker file per build.
WORKER = textwrap.dedent("""\
    import sys, time
    from tile.runtime import cache as C
    from tile.ir.artifact import Artifact, KernelMeta
    directory, marker, tag = sys.argv[1:4]
    def build():
        with open(marker, "a") as f:
            f.write(tag + "\\n")
        time.sleep(0.4)                       # a compile long enough for the others to arrive
        return Artifact(KernelMeta(name="k", target="sm_90a", num_threads=128), ptx="// built by " + tag)
    e = C.KernelCache(directory).get_or_build(("shared ir", "sm_90a", {}), build)
    print(e.source, e.ptx)
    """)


def _spawn(n, directory, marker):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(directory), str(marker), f"p{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_processes_compiling_one_key_build_once(tmp_path):
    marker = tmp_path / "builds.txt"
    outs = _spawn(4, tmp_path / "cache", marker)
    builds = marker.read_text().split()
    assert len(builds) == 1, f"expected one build, got {builds}"
    assert all(o.endswith("// built by " + builds[0]) for o in outs), outs    # every process got that artifact
    assert sorted(o.split()[0] for o in outs) == ["built", "disk", "disk", "disk"]


def test_damaged_entry_is_rebuilt_by_the_next_processes(tmp_path):
    marker = tmp_path / "builds.txt"
    _spawn(1, tmp_path / "cache", marker)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    text = entry.read_text()
    entry.write_text(text[: len(text) // 3])                   # truncated behind the cache's back
    outs = _spawn(3, tmp_path / "cache", marker)
    assert len(marker.read_text().split()) == 2                # one rebuild among the three
    assert sorted(o.split()[0] for o in outs) == ["built", "disk", "disk"]
    entry.write_text(json.dumps({"checksum": "0" * 64, "payload": {"format": 2}}))    # replaced
    outs = _spawn(2, tmp_path / "cache", marker)
    assert len(marker.read_text().split()) == 3
    assert C.KernelCache(tmp_path / "cache").get(("shared ir", "sm_90a", {})) is not None


def test_in_process_threads_build_once(tmp_path):
    import threading
    c = C.KernelCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.2)
        return built()
    ts = [threading.Thread(target=c.get_or_build, args=(("ir", "sm_90a"), build)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert calls == [1]


def test_permissions(tmp_path):
    root = tmp_path / "new" / "cache"
    c = C.KernelCache(root)
    e = c.get_or_build(("ir", "sm_90a"), built)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(c.path_of(e.key).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(c.path_of(e.key).stat().st_mode) == 0o600
    assert stat.S_IMODE(c.lock_path_of(e.key).stat().st_mode) == 0o600
    # an existing, too-open directory of ours is tightened when written to
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    C.KernelCache(loose).get_or_build(("ir", "sm_80"), built)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_lru_eviction_order(tmp_path):
    size = len(C.KernelCache(tmp_path / "probe").put(("x", "sm_90a"), built(pad=1000)).key) and \
        next((tmp_path / "probe").rglob("*.json")).stat().st_size
    c = C.KernelCache(tmp_path / "c", max_bytes=3 * size + size // 2)      # room for three entries
    keys = []
    for i in range(3):
        keys.append(c.put((f"ir{i}", "sm_90a"), built(pad=1000)).key)
        os.utime(c.path_of(keys[-1]), ns=(10**18 + i * 10**9, 10**18 + i * 10**9))   # written at t0, t0+1, t0+2
    assert c.info()["entries"] == 3 and c.stats.evictions == 0
    # reading ir0 makes it the most recently used: ir1 is now the oldest
    fresh = C.KernelCache(tmp_path / "c", max_bytes=c.max_bytes)
    assert fresh.get(("ir0", "sm_90a")).source == "disk"
    fresh.put(("ir3", "sm_90a"), built(pad=1000))
    left = {p.stem for p in (tmp_path / "c").rglob("*.json")}
    assert left == {keys[0], keys[2], C.KernelCache.key_of(("ir3", "sm_90a"))}
    assert fresh.stats.evictions == 1
    fresh.put(("ir4", "sm_90a"), built(pad=1000))                        # next oldest: ir2
    left = {p.stem for p in (tmp_path / "c").rglob("*.json")}
    assert keys[2] not in left and keys[0] in left and len(left) == 3
    info = fresh.info()
    assert info["bytes"] <= info["max_bytes"] and info["entries"] == 3


def test_entry_larger_than_the_cap_is_not_kept_on_disk(tmp_path):
    c = C.KernelCache(tmp_path, max_bytes=100)
    e = c.get_or_build(("ir", "sm_90a"), lambda: built(pad=1000))
    assert e.ptx.startswith("// ptx") and c.info()["entries"] == 0


def test_max_bytes_from_env(monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_MAX_BYTES", "64M")
    assert C.KernelCache(disk=False).max_bytes == 64 << 20
    monkeypatch.setenv("TILEC_CACHE_MAX_BYTES", "12345")
    assert C.max_bytes_from_env() == 12345
    monkeypatch.delenv("TILEC_CACHE_MAX_BYTES")
    assert C.max_bytes_from_env() == 1 << 30
    monkeypatch.setenv("TILEC_CACHE_MAX_BYTES", "lots")
    with pytest.warns(RuntimeWarning, match="TILEC_CACHE_MAX_BYTES"):
        assert C.max_bytes_from_env() == 1 << 30


# ------------------------------------------------------------------------------ the CLI
TIR = textwrap.dedent("""\
    kernel @k(%A: tensor<?x4xf32>, %n: i32) {
      %c = constant {value = 3} : i32
      %t = full {value = 1.5} : tile<4xf32>
      store %A, %c, %n, %t
    }
    """)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TILEC_CACHE_DIR", str(d))
    monkeypatch.delenv("TILEC_CACHE", raising=False)
    monkeypatch.setattr(C, "_DEFAULT", None)
    return d


def test_cli_compile_goes_through_the_cache(capsys, tmp_path, own_cache, monkeypatch):
    from tile import cli, compiler
    tir = tmp_path / "k.tir"
    tir.write_text(TIR)
    calls = []
    real = compiler.generate
    monkeypatch.setattr(compiler, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli.main(["compile", str(tir), "--target", "sm_80", "-o", str(tmp_path / "a.ptx")]) == 0
    assert cli.main(["compile", str(tir), "--target", "sm_80", "-o", str(tmp_path / "b.ptx")]) == 0
    assert len(calls) == 1                                     # the second compile read the cache
    assert (tmp_path / "a.ptx").read_text() == (tmp_path / "b.ptx").read_text()
    assert len(list(own_cache.rglob("*.json"))) == 1
    monkeypatch.setattr(C, "_DEFAULT", None)                   # a new process: from disk
    assert cli.main(["compile", str(tir), "--target", "sm_80", "-o", str(tmp_path / "c.ptx")]) == 0
    assert len(calls) == 1
    assert cli.main(["compile", str(tir), "--target", "sm_80", "--no-cache", "-o", str(tmp_path / "d.ptx")]) == 0
    assert len(calls) == 2
    assert cli.main(["compile", str(tir), "--target", "sm_89", "-o", str(tmp_path / "e.ptx")]) == 0
    assert len(calls) == 3                                     # another target, another key
    capsys.readouterr()
    assert cli.main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"directory: {own_cache}" in out and "entries:   2" in out and f"cap:       {1 << 30}" in out
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert not list(own_cache.rglob("*.json")) and not list(own_cache.rglob("*.lock"))
    assert cli.main(["cache", "info"]) == 0
    assert "entries:   0" in capsys.readouterr().out


def test_sources_hash_memo_follows_every_edit(tmp_path, monkeypatch):
    """The hash of the compiler's sources is kept in the cache directory under a stamp of the files'
    sizes and times: an edit (even one that keeps the size) gives a new hash, an unchanged tree
    reads the memo instead of the files."""
    import os
    src = tmp_path / "src"
    src.mkdir()
    files = [(f"ir/{n}.py", str(src / f"{n}.py")) for n in ("a", "b")]
    for _, p in files:
        Path(p).write_text("x = 1\n")
    monkeypatch.setattr(C, "_source_files", lambda: files)
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEC_CACHE", raising=False)
    h1 = C._sources_hash()
    assert json.loads((tmp_path / "cache" / "sources-hash.json").read_text())["hash"] == h1
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: reads.append(p) or real_open(p, *a, **k))
    assert C._sources_hash() == h1 and not [r for r in reads if str(r).endswith(".py")]   # from the memo
    monkeypatch.setattr("builtins.open", real_open)
    st = os.stat(files[0][1])
    Path(files[0][1]).write_text("x = 2\n")                       # same size
    os.utime(files[0][1], ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    h2 = C._sources_hash()
    assert h2 != h1
    monkeypatch.setenv("TILEC_CACHE", "0")                          # no disk tier: computed, not remembered
    Path(files[1][1]).write_text("y = 3\n")
    assert C._sources_hash() not in (h1, h2)
