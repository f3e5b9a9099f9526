"""The kernel cache: compiled kernels in memory and on disk.

Key: sha256 over (IR text, target, options sorted by name, compiler version), where the compiler
version is the tilec package version + the llvmlite version + a hash of the sources of dsl/, ir/,
passes/, codegen/ and the driver (so editing any of them invalidates old entries) + this file's format.

An entry holds one compiled-artifact (`ir/artifact.py`: code, ABI, launch facts, IR signature,
`extra` facts) in its JSON form. On disk each entry is ONE file,
`<dir>/<key[:2]>/<key>.json`, written to a temporary file in the same directory and renamed with
`os.replace`, so a reader sees either nothing or a whole entry, and concurrent processes writing the
same key leave one valid entry. Each file carries a sha256 of its payload: a corrupt, truncated or
foreign file is deleted and rebuilt, never loaded.

Directory: `$TILEC_CACHE_DIR`, else `~/.cache/tilec`. `TILEC_CACHE=0` turns the disk tier off
(memory only). An unwritable directory degrades to memory-only with one warning.

Trust: directories are created 0700 and entry files 0600 (compiled code is loaded and run; other
users must not be able to plant it). One process compiles a key while others wait: `get_or_build`
takes an exclusive `fcntl.flock` on `<key>.lock` next to the entry, reads the entry again under the
lock (another process may have written it meanwhile) and builds only if it is still missing. Lock
files are never deleted by eviction (deleting a lock file someone waits on would break the lock).

Aliases: `put_alias(name, key_parts)` / `get_alias(name)` map another 64-hex name to an entry
(`<dir>/<name[:2]>/<name>.alias`, holding the entry's key): launches use the key of a kernel's
Python source (tile/source_key.py) to find its entry without running the front end. An alias whose
entry was evicted finds nothing; `clear` removes them with the entries.

Size: the entries are capped at `$TILEC_CACHE_MAX_BYTES` (default 1 GiB; `max_bytes=`); a read
touches the entry's mtime and a write that leaves the cache over the cap deletes the least recently
used entries (oldest mtime first) until it fits again. `tilec cache info` / `tilec cache clear`.

    cache = default_cache()
    entry = cache.get_or_build((ir_text, "sm_90a", {"num_warps": 4}), lambda: compiler.compile(fn, "sm_90a"))
    entry.artifact                # the Artifact (entry.ptx, .cubin, .meta, .signature, .extra read through)
    entry.obj                     # what build_fn returned (this process only)
    cache.stats  # CacheStats(memory_hits=.., disk_hits=.., misses=.., build_seconds=.., ...)
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..ir.artifact import Artifact, KernelMeta

__all__ = ["KernelCache", "CacheEntry", "CacheStats", "default_cache", "cache_key", "compiler_version",
           "meta_to_json", "meta_from_json", "cache_dir"]

FORMAT = 2
DEFAULT_MAX_BYTES = 1 << 30


def max_bytes_from_env() -> int:
    """$TILEC_CACHE_MAX_BYTES (an int, or with a K/M/G suffix), else 1 GiB."""
    text = os.environ.get("TILEC_CACHE_MAX_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    try:
        n = int(float(text[:-1] if mult != 1 else text) * mult)
    except ValueError:
        warnings.warn(f"tilec: TILEC_CACHE_MAX_BYTES={text!r} is not a size; using 1 GiB", RuntimeWarning,
                      stacklevel=3)
        return DEFAULT_MAX_BYTES
    return max(n, 0)


def _mkdir_private(path: Path) -> None:
    """Create `path` (and parents) with mode 0700; an existing directory we own is tightened to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except (OSError, AttributeError):
        pass


try:
    import fcntl as _fcntl
except ImportError:                            # not POSIX: in-process locking only
    _fcntl = None


# ------------------------------------------------------------------------------ versioning
_VERSION = None
_VERSION_LOCK = threading.Lock()


def _source_files() -> list:
    """[(name in the hash, path)] of every source that shapes compiled code, sorted."""
    root = Path(__file__).resolve().parent.parent
    out = []
    for layer in ("dsl", "ir", "passes", "codegen"):
        d = root / layer
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(x for x in dirnames if x != "__pycache__")
            for f in filenames:
                if os.path.splitext(f)[1] in (".py", ".lark", ".json"):
                    p = os.path.join(dirpath, f)
                    out.append((f"{layer}/{Path(p).relative_to(d).as_posix()}", p))
    for drv in (root / "compiler.py", root / "tile" / "compiler.py"):
        if drv.is_file():
            out.append(("compiler.py", str(drv)))
            break
    return sorted(out)


def _sources_hash() -> str:
    """A hash of every source that shapes compiled code: the dsl, ir, passes and codegen folders and
    the driver (tile/compiler.py), found next to this package's folder -- read as files, not
    imported (the runtime stays below the compiler).

    Reading and hashing them is ~8 ms, a sixth of a warm-cache launch's budget: the result is kept
    in the cache directory (`sources-hash.json`, private like the entries) under a stamp of the
    files' names, sizes and modification times, and read back while the stamp matches."""
    files = _source_files()
    stamp = hashlib.sha256()
    for name, p in files:
        try:
            st = os.stat(p)
        except OSError:
            stamp = None
            break
        stamp.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    stamp = stamp.hexdigest() if stamp is not None else None
    memo = cache_dir() / "sources-hash.json"
    use_memo = stamp is not None and os.environ.get("TILEC_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")
    if use_memo:
        try:
            d = json.loads(memo.read_text())
            if d.get("stamp") == stamp and isinstance(d.get("hash"), str) and len(d["hash"]) == 16:
                return d["hash"]
        except (OSError, ValueError, AttributeError):
            pass
    h = hashlib.sha256()
    for name, p in files:
        if name == "compiler.py":
            with open(p, "rb") as f:
                h.update(b"compiler.py\0" + f.read())
            continue
        h.update(f"{name}\0".encode())
        with open(p, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    out = h.hexdigest()[:16]
    if use_memo:
        try:
            import tempfile
            _mkdir_private(memo.parent)
            fd, tmp = tempfile.mkstemp(dir=memo.parent, prefix=".sources-", suffix=".tmp")        # 0600
            with os.fdopen(fd, "w") as f:
                json.dump({"stamp": stamp, "hash": out}, f)
            os.replace(tmp, memo)
        except OSError:
            pass
    return out


def _dist_versions(names) -> dict:
    """{distribution: version} read from the `<name>-<version>.dist-info` folder names on sys.path
    (what importlib.metadata finds first, without importing it: that import alone is ~40 ms, most of
    a warm-cache launch's budget); a distribution found no such way is asked importlib.metadata."""
    import re
    import sys
    want = {n.lower().replace("-", "_"): n for n in names}
    out: dict = {}
    for entry in sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue
        for f in listing:
            m = re.match(r"^(.+?)-([^-]+)\.dist-info$", f)
            if m:
                n = want.get(m.group(1).lower().replace("-", "_").replace(".", "_"))
                if n is not None and n not in out:
                    out[n] = m.group(2)
        if len(out) == len(want):
            break
    for n in names:
        if n not in out:
            try:
                from importlib.metadata import version
                out[n] = version(n)
            except Exception:                    # noqa: BLE001 - not installed as a distribution
                out[n] = "none"
    return out


def compiler_version() -> str:
    """"tilec-<version>+llvmlite-<version>+src-<hash of dsl/ ir/ passes/ codegen/ and the driver>+fmt-<FORMAT>"
    (computed once)."""
    global _VERSION
    if _VERSION is None:
        with _VERSION_LOCK:
            if _VERSION is None:
                dists = ("tilec", "llvmlite", "numpy", "lark")      # what shapes the generated code
                vs = _dist_versions(dists)
                _VERSION = "+".join(f"{d}-{vs[d]}" for d in dists) + f"+src-{_sources_hash()}+fmt-{FORMAT}"
    return _VERSION


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if isinstance(o, bytes):
        return {"__bytes__": base64.b64encode(o).decode()}
    return str(o)


def cache_key(ir_text: str, target: str, options: dict | None = None, version: str | None = None) -> str:
    """The sha256 (hex) of (IR text, target, options sorted by name, compiler version)."""
    payload = {"ir": ir_text, "target": target, "options": dict(options or {}),
               "version": version if version is not None else compiler_version()}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


# ------------------------------------------------------------------------------------ meta
def meta_to_json(meta) -> dict:
    return meta if isinstance(meta, dict) else meta.to_json()


def meta_from_json(d: dict) -> KernelMeta:
    return KernelMeta.from_json(d)


# ----------------------------------------------------------------------------------- entries
@dataclass
class CacheEntry:
    """A cache record: the `artifact`, its `key`, where it came from (`source`: "built" | "memory" |
    "disk"), and `obj`, what build_fn returned when the entry was built in this process (else None).
    The artifact's fields read through (`entry.ptx`, `.cubin`, `.meta`, `.signature`, `.extra`)."""
    artifact: Artifact
    key: str = ""
    source: str = "built"
    obj: object = None

    ptx = property(lambda self: self.artifact.ptx)
    cubin = property(lambda self: self.artifact.cubin)
    meta = property(lambda self: self.artifact.meta)
    signature = property(lambda self: self.artifact.signature)
    extra = property(lambda self: self.artifact.extra)


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0
    write_errors: int = 0
    evictions: int = 0
    lock_waits: int = 0          # builds this process skipped because another process built the key
    build_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hits"] = self.hits
        return d


def cache_dir() -> Path:
    env = os.environ.get("TILEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tilec"


class CorruptEntry(Exception):
    pass


def _entry_from_built(obj, key: str) -> CacheEntry:
    """A record of what a build returned: an Artifact (or a CacheEntry), or a dict in the artifact's
    shape ({"ptx", "meta"[, "cubin", "signature", "extra"]})."""
    if isinstance(obj, CacheEntry):
        return dataclasses.replace(obj, key=key, source="built", obj=obj.obj if obj.obj is not None else obj)
    if isinstance(obj, Artifact):
        return CacheEntry(obj, key, "built", obj)
    if isinstance(obj, dict) and obj.get("ptx") is not None and obj.get("meta") is not None:
        meta = obj["meta"] if isinstance(obj["meta"], KernelMeta) else meta_from_json(obj["meta"])
        art = Artifact(meta=meta, ptx=obj["ptx"], cubin=obj.get("cubin"), signature=list(obj.get("signature") or []),
                       extra=dict(obj.get("extra") or {}))
        return CacheEntry(art, key, "built", obj)
    raise TypeError(f"build_fn must return an Artifact (or a dict with ptx and meta), got {type(obj).__name__}")


class KernelCache:
    """Two tiers: a dict in memory, and one JSON file per entry on disk (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike | None = None, disk: bool | None = None, memory: bool = True,
                 max_bytes: int | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else cache_dir()
        if disk is None:
            disk = os.environ.get("TILEC_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")
        self.disk = disk
        self.max_bytes = max_bytes_from_env() if max_bytes is None else int(max_bytes)
        self.memory = memory
        self.stats = CacheStats()
        self._mem: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._aliases: dict[str, str] = {}
        self._warned = False

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key_of(key_parts) -> str:
        """A key from (ir_text, target[, options]) / {"ir":..., "target":..., "options":...} / a hex key."""
        if isinstance(key_parts, str):
            if len(key_parts) == 64 and all(c in "0123456789abcdef" for c in key_parts):
                return key_parts
            raise ValueError("a string cache key must be a 64-digit sha256 hex; pass (ir_text, target, options)")
        if isinstance(key_parts, dict):
            return cache_key(key_parts["ir"], key_parts["target"], key_parts.get("options"), key_parts.get("version"))
        parts = tuple(key_parts)
        if len(parts) == 2:
            return cache_key(parts[0], parts[1], None)
        if len(parts) == 3:
            return cache_key(parts[0], parts[1], parts[2])
        raise ValueError("key_parts must be (ir_text, target) or (ir_text, target, options)")

    def path_of(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def lock_path_of(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.lock"

    @contextlib.contextmanager
    def _file_lock(self, key: str):
        """An exclusive inter-process lock on `key` (yields True), or nothing to lock (yields False:
        no disk tier, no fcntl, or the directory cannot be written)."""
        if not self.disk or _fcntl is None:
            yield False
            return
        path = self.lock_path_of(key)
        try:
            _mkdir_private(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield False
            return
        try:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                _fcntl.flock(fd, _fcntl.LOCK_EX)            # another process holds it: wait for it
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                _fcntl.flock(fd, _fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ get / put
    def get(self, key_parts) -> CacheEntry | None:
        """The entry, from memory or disk, or None (counts a hit, or nothing)."""
        key = self.key_of(key_parts)
        e = self._mem.get(key) if self.memory else None
        if e is not None:
            self.stats.memory_hits += 1
            return dataclasses.replace(e, source="memory")
        if not self.disk:
            return None
        t0 = time.perf_counter()
        e = self._read(key)
        if e is None:
            return None
        self.stats.load_seconds += time.perf_counter() - t0
        self.stats.disk_hits += 1
        if self.memory:
            self._mem[key] = e
        return e

    # ------------------------------------------------------------------ aliases
    def alias_path_of(self, name: str) -> Path:
        return self.directory / name[:2] / f"{name}.alias"

    def get_alias(self, name: str) -> CacheEntry | None:
        """The entry an alias (a 64-hex name, e.g. tile/source_key.py's key of a launch) points to,
        or None: no alias, or its entry is gone (evicted, corrupt)."""
        key = self._aliases.get(name)
        if key is None and self.disk:
            try:
                key = self.alias_path_of(name).read_text().strip()
            except OSError:
                return None
        if key is None or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            return None
        e = self.get(key)
        if e is not None:
            self._aliases[name] = key
        return e

    def put_alias(self, name: str, key_parts) -> None:
        """Point `name` at the entry of `key_parts` (written like an entry: a private temporary file
        renamed into place; an unwritable directory leaves it in memory)."""
        key = self.key_of(key_parts)
        self._aliases[name] = key
        if not self.disk:
            return
        path = self.alias_path_of(name)
        try:
            _mkdir_private(path.parent)
            import tempfile                          # (imported on write: a warm launch only reads)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".alias-", suffix=".tmp")        # 0600
            with os.fdopen(fd, "w") as f:
                f.write(key)
            os.replace(tmp, path)
        except OSError:
            pass

    def put(self, key_parts, built) -> CacheEntry:
        """Store what a build produced (object/dict with ptx, meta[, cubin, extra], or a CacheEntry)."""
        key = self.key_of(key_parts)
        e = _entry_from_built(built, key)
        if self.memory:
            self._mem[key] = e
        if self.disk:
            self._write(e)
        return e

    def get_or_build(self, key_parts, build_fn) -> CacheEntry:
        """The cached entry for key_parts, or build_fn() stored and returned (source "built")."""
        key = self.key_of(key_parts)
        e = self.get(key)
        if e is not None:
            return e
        with self._lock:
            klock = self._key_locks.setdefault(key, threading.Lock())
        with klock, self._file_lock(key) as locked:    # one build per key per process, and across processes
            e = self._mem.get(key) if self.memory else None
            if e is not None:
                self.stats.memory_hits += 1
                return dataclasses.replace(e, source="memory")
            if locked:                            # another process may have built it while we waited
                e = self.get(key)
                if e is not None:
                    self.stats.lock_waits += 1
                    return e
            self.stats.misses += 1
            t0 = time.perf_counter()
            built = build_fn()
            self.stats.build_seconds += time.perf_counter() - t0
            return self.put(key, built)

    def clear(self, disk: bool = False) -> int:
        """Drop the memory tier (and the disk entries, aliases and lock files with disk=True); returns
        the number of disk entries deleted."""
        self._mem.clear()
        self._aliases.clear()
        n = 0
        if disk and self.directory.is_dir():
            for pattern in ("??/*.json", "??/*.lock", "??/*.alias", "??/.*.tmp"):
                for p in self.directory.glob(pattern):
                    try:
                        p.unlink()
                        n += pattern == "??/*.json"
                    except OSError:
                        pass
            for d in self.directory.glob("??"):
                try:
                    d.rmdir()
                except OSError:
                    pass
        return n

    def _entries(self) -> list:
        """[(mtime, size, path)] of the entry files on disk."""
        out = []
        if not self.directory.is_dir():
            return out
        for p in self.directory.glob("??/*.json"):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((st.st_mtime_ns, st.st_size, p))
        return out

    def info(self) -> dict:
        """{directory, entries, bytes, max_bytes, disk} of the disk tier."""
        es = self._entries() if self.disk else []
        return {"directory": str(self.directory), "entries": len(es), "bytes": sum(e[1] for e in es),
                "max_bytes": self.max_bytes, "disk": self.disk}

    def evict(self, keep: Path | None = None) -> int:
        """Delete least-recently-used entries (oldest mtime first) until the total size is within
        max_bytes; `keep` (the entry just written) goes last. Returns the number deleted."""
        es = self._entries()
        total = sum(e[1] for e in es)
        if total <= self.max_bytes:
            return 0
        es.sort(key=lambda e: (e[2] == keep, e[0]))
        n = 0
        for _, size, p in es:
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            total -= size
            n += 1
            self._mem.pop(p.stem, None)
        self.stats.evictions += n
        return n

    def reset_stats(self) -> None:
        self.stats = CacheStats()

    # ------------------------------------------------------------------ disk format
    @staticmethod
    def _payload(e: CacheEntry) -> dict:
        return {"format": FORMAT, "key": e.key, "artifact": e.artifact.to_json()}

    def _write(self, e: CacheEntry) -> None:
        payload = self._payload(e)
        try:
            body = _canonical(payload)
        except (TypeError, ValueError) as err:
            self._warn(f"entry {e.key[:12]} is not JSON-serialisable ({err}); kept in memory only")
            self.stats.write_errors += 1
            return
        doc = '{"checksum":"%s","payload":%s}\n' % (hashlib.sha256(body.encode()).hexdigest(), body)
        path = self.path_of(e.key)
        tmp = None
        try:
            _mkdir_private(self.directory)
            _mkdir_private(path.parent)
            import tempfile                          # (imported on write: a warm launch only reads)
            fd, tmp = tempfile.mkstemp(prefix=f".{e.key[:16]}.", suffix=".tmp", dir=path.parent)   # 0600
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(doc)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            tmp = None
            self.stats.writes += 1
            if self.max_bytes >= 0:
                self.evict(keep=path)
        except OSError as err:
            self.stats.write_errors += 1
            self._warn(f"cannot write the kernel cache in {self.directory} ({err}); continuing without it")
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _read(self, key: str) -> CacheEntry | None:
        path = self.path_of(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            self._discard(path)
            return None
        try:
            e = self._decode(text, key)
        except Exception:                        # noqa: BLE001 - anything wrong: rebuild
            self._discard(path)
            return None
        try:
            os.utime(path)                       # least recently used = oldest mtime
        except OSError:
            pass
        return e

    def _decode(self, text: str, key: str) -> CacheEntry:
        doc = json.loads(text)
        if not isinstance(doc, dict) or "payload" not in doc or "checksum" not in doc:
            raise CorruptEntry("not a cache entry")
        payload = doc["payload"]
        if hashlib.sha256(_canonical(payload).encode()).hexdigest() != doc["checksum"]:
            raise CorruptEntry("checksum mismatch")
        if payload.get("format") != FORMAT or payload.get("key") != key:
            raise CorruptEntry("format or key mismatch")
        return CacheEntry(Artifact.from_json(payload["artifact"]), key=key, source="disk")

    def _discard(self, path: Path) -> None:
        self.stats.corrupt += 1
        try:
            path.unlink()
        except OSError:
            pass

    def _warn(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"tilec: {msg}", RuntimeWarning, stacklevel=3)


_DEFAULT: KernelCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> KernelCache:
    """The process-wide cache (directory from the environment at first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = KernelCache()
    return _DEFAULT
