"""Launching a compiled kernel: argument packing per `ir/artifact.py`, module loading, host copies.

    launch(compiled, grid, args, stream=None)

`compiled` is an `ir.artifact.Artifact` (or anything holding one as `.artifact`: a cache entry, a
`tile.CompiledKernel`): its code (`.cubin` / `.ptx`), its ABI and launch facts (`.meta`) and its IR
signature (`.signature`, checked against the arguments; `param_types=` overrides it; an artifact
without one is launched from `meta.params`, tensor dtypes unchecked). The module is loaded once per
(context, code) and the function launched with block = (meta.num_threads, 1, 1), dynamic shared
memory meta.shared_bytes (opting in above 48 KB), and cluster meta.cluster.

Arguments, in IR parameter order:
* tensors: a DeviceArray, a torch tensor (read through data_ptr/shape/stride, torch not imported),
  anything with `__cuda_array_interface__` or `__dlpack__` (cupy, jax, numba...), or host data —
  a NumPy array or tile.Array of the parameter's dtype — copied to the device and, after the kernel
  finished, copied back into the same host object (every tensor argument, read-only NumPy arrays
  excepted: simple and correct);
* scalars: Python / NumPy numbers, range-checked against the parameter's dtype.
Every argument error is a TypeError / ValueError that names the parameter.

Streams: `stream=` (any object `runtime.cuda.stream_handle` understands) wins. Without it, a launch
with a torch tensor among its arguments goes on torch's current stream of tilec's device (so it orders
with the torch work around it, inside `with torch.cuda.stream(s):` and under CUDA-graph capture, where
the current stream is the capturing one); other launches go on the legacy default stream, which orders
with torch's and cupy's default streams. torch is never imported here: a torch tensor argument means
torch is in sys.modules already, and its stream is read from there (`torch_stream_fn`).

`pack_args` builds the kernel parameter array: a ctypes array of void*, one per machine parameter of
`meta.params`, pointing at the values, which live in the same buffer right after the pointers (one
8-byte slot each); DLPack owners that must outlive the launch call are kept on it as `_keep`. The
packing plan (formats, range checks) is built once per kernel and cached on its meta. A `tmap`
parameter's pointer is the address of the TMA tensor map of its tensor argument, built and cached
by runtime/tensor_maps.py (a repeated launch on the same tensors: one dict lookup per map); an
argument a tensor map cannot describe is a ValueError naming the parameter.
"""
from __future__ import annotations

import ctypes
import functools
import math
import re
import struct
import sys
import threading

import numpy as np

from ..ir.artifact import Artifact, KernelMeta, ParamABI, divisible_elems, divisible_ok, tensor_map_ok
from ..ir import numerics
from ..ir.dtypes import DType, dtype as _dtype
from ..ir.errors import TileError
from ..ir.types import ScalarType, TensorType
from . import cuda as _cuda
from .driver import driver_for
from .arrays import Array, dtype_of
from .device import _TORCH_TYPES, DeviceArray, _is_torch_tensor, extract_tensor, to_device
from .tensor_maps import TensorMapSpec, tensor_map

__all__ = ["pack_args", "launch", "signature_of", "load_function", "parse_type", "torch_stream_fn"]

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


# ================================================================================= signature
_TENSOR_RE = re.compile(r"^tensor<(?:(.*)x)?([A-Za-z0-9_]+)>$")


def parse_type(text: str):
    """An IR parameter type from its printed form: tensors as "tensor<?x128xf32>" (rank 0:
    "tensor<f32>"), scalars as their dtype ("i32", "f16", "i1")."""
    text = text.strip()
    m = _TENSOR_RE.match(text)
    if m:
        dims = [None if d == "?" else int(d) for d in m.group(1).split("x")] if m.group(1) else []
        return TensorType(_dtype(m.group(2)), tuple(dims))
    return ScalarType(_dtype(text))


class _AnyTensor:
    """A tensor parameter known only from meta.params (dtype unknown)."""

    def __init__(self, rank):
        self.rank = rank
        self.shape = (None,) * rank
        self.dtype = None


def artifact_of(compiled) -> Artifact:
    """The Artifact of what a caller passes to launch: an Artifact, or an object holding one."""
    if isinstance(compiled, Artifact):
        return compiled
    art = getattr(compiled, "artifact", None)
    if isinstance(art, Artifact):
        return art
    raise TypeError(f"launch() needs a compiled kernel (tile.ir.artifact.Artifact), got {type(compiled).__name__}")


def signature_of(compiled) -> tuple[list, list]:
    """(IR parameter types, names) of a compiled kernel: its artifact's signature, else rebuilt from
    the machine parameters (tensor dtypes then unknown)."""
    art = artifact_of(compiled)
    if art.signature:
        return [parse_type(t) for _, t in art.signature], [n for n, _ in art.signature]
    meta = art.meta
    types, names = [], []
    for src in _sources(meta):
        ps = [p for p in meta.params if p.source == src]
        if ps[0].role == "ptr":
            types.append(_AnyTensor(sum(1 for p in ps if p.role == "shape")))
        else:
            k = ps[0].kind
            types.append(ScalarType(_dtype({"i32": "i32", "i64": "i64", "f32": "f32", "f64": "f64"}[k])))
        names.append(src)
    return types, names


def _sources(meta) -> list:
    out = []
    for p in meta.params:
        if not out or out[-1] != p.source:
            if p.source not in out:
                out.append(p.source)
    return out


# ================================================================================== scalars
def _float_limit(dt: DType) -> float:
    """The rounding boundary above the largest finite value of dt: magnitudes beyond it overflow."""
    mx = float(dt.max_value)
    e = math.frexp(mx)[1] - 1                  # mx = 1.m * 2^e
    return mx + 2.0 ** (e - dt.man - 1)


def _pack_scalar(p: ParamABI, dt: DType, v, name: str):
    if isinstance(v, (np.ndarray,)) and v.ndim == 0:
        v = v[()]
    if dt.kind == "bool":
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1)):
            return ctypes.c_int32(1 if v else 0)
        raise TypeError(f"parameter '{name}' expects a bool (i1), got {type(v).__name__} {v!r}")
    if dt.kind in ("int", "uint"):
        if isinstance(v, (float, np.floating, complex, np.complexfloating)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"parameter '{name}' expects an integer ({dt}), got {type(v).__name__} {v!r}")
        iv = int(v)
        if not dt.min_value <= iv <= dt.max_value:
            raise ValueError(f"parameter '{name}' = {iv} is out of range for {dt} "
                             f"[{dt.min_value}, {dt.max_value}]")
        if p.kind == "i64":
            return ctypes.c_int64(iv) if dt.kind == "int" else ctypes.c_uint64(iv)
        if p.kind != "i32":
            raise TileError(f"parameter '{name}': ABI kind {p.kind!r} does not fit dtype {dt}")
        return ctypes.c_int32(iv) if dt.kind == "int" else ctypes.c_uint32(iv)
    # floats
    if isinstance(v, (complex, np.complexfloating)) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or isinstance(v, (bool, np.bool_)):
        raise TypeError(f"parameter '{name}' expects a number ({dt}), got {type(v).__name__} {v!r}")
    fv = float(v)
    if math.isfinite(fv) and abs(fv) > dt.max_value:
        if dt.name == "f32":
            with np.errstate(over="ignore"):
                back = float(np.float32(fv))
        else:
            back = float(numerics.decode(numerics.encode(np.array([fv]), dt), dt)[0])
        if abs(fv) > _float_limit(dt) or not math.isfinite(back):
            raise ValueError(f"parameter '{name}' = {fv!r} overflows {dt} (largest finite value {dt.max_value})")
    if p.kind == "f32":
        return ctypes.c_float(fv)
    if p.kind == "f64":
        return ctypes.c_double(fv)
    if p.kind == "i32":                          # f16 / bf16 / fp8 / small floats: the code in an i32
        return ctypes.c_uint32(_float_code(dt.name, fv))
    raise TileError(f"parameter '{name}': ABI kind {p.kind!r} does not fit dtype {dt}")


@functools.lru_cache(maxsize=4096)
def _small_float_code(name: str, fv: float) -> int:
    return int(numerics.encode(np.array([fv], dtype=np.float64), _dtype(name))[0])


def _float_code(name: str, fv: float) -> int:
    """The code of fv in a 16-bit-or-narrower float type (exactly numerics.encode)."""
    if name == "f16" and not math.isnan(fv):
        try:
            return struct.unpack("<H", struct.pack("<e", fv))[0]      # correctly rounded from the double
        except OverflowError:
            pass
    if math.isnan(fv):
        return int(numerics.encode(np.array([fv], dtype=np.float64), _dtype(name))[0])
    return _small_float_code(name, fv)


# ================================================================================== packing
def _i32_error(v: int, name: str, what: str):
    return ValueError(f"parameter '{name}': {what} {v} does not fit the kernel's 32-bit index "
                      f"(tensors must have fewer than 2^31 elements per dimension and stride)")


def _scalar_packer(p: ParamABI, dt: DType, name: str):
    """(struct format char, function value -> packable Python number) for one scalar parameter."""
    def pack(v, p=p, dt=dt, name=name):
        return _pack_scalar(p, dt, v, name).value
    if dt.kind == "bool":
        def pack_bool(v, slow=pack):
            if v is True or v is False:
                return int(v)
            return slow(v)
        return "i", pack_bool
    if dt.kind == "int":
        fmt = "q" if p.kind == "i64" else "i"
    elif dt.kind == "uint":
        fmt = "Q" if p.kind == "i64" else "I"
    else:
        fmt = {"f32": "f", "f64": "d", "i32": "I"}.get(p.kind, "?")
    if fmt in "iIqQ" and dt.kind in ("int", "uint"):
        lo, hi = dt.min_value, dt.max_value

        def pack_int(v, lo=lo, hi=hi, slow=pack):      # fast path: a plain int in range
            if type(v) is int and lo <= v <= hi:
                return v
            return slow(v)
        return fmt, pack_int
    if fmt == "I" and dt.is_float:                     # f16/bf16/fp8/...: the code in an i32
        lim, dname = dt.max_value, dt.name

        def pack_code(v, lim=lim, dname=dname, slow=pack):
            if type(v) is float and -lim <= v <= lim:
                return _float_code(dname, v)
            return slow(v)
        return fmt, pack_code
    if fmt in "fd":
        lim = dt.max_value

        def pack_float(v, lim=lim, slow=pack):
            if type(v) is float and -lim <= v <= lim:
                return v
            return slow(v)
        return fmt, pack_float
    return fmt, pack


class _Plan:
    """How to pack one kernel's arguments (built once per meta and IR signature)."""

    def __init__(self, meta: KernelMeta, types: tuple, names: tuple):
        self.meta, self.types, self.names = meta, types, names
        self.key = (id(meta.params), meta.align, tuple(meta.divisible))
        index = {n: i for i, n in enumerate(names)}
        self.tensors = []          # (arg index, name, dtype, rank, [(axis, static size)])
        self.slots = []            # (arg index, role 0 ptr / 1 shape / 2 stride / 3 scalar / 4 tmap, axis, packer)
        fmt = []
        seen_tensor = set()
        for p in meta.params:
            j = index.get(p.source)
            if j is None:
                raise TileError(f"kernel '{meta.name}': machine parameter {p.name!r} refers to unknown parameter "
                                f"{p.source!r} (meta.params and the IR signature disagree)")
            t = types[j]
            if p.role == "tmap":
                if isinstance(t, ScalarType) or j not in seen_tensor:
                    raise TileError(f"kernel '{meta.name}': tensor map {p.name!r} refers to {p.source!r}, which is not "
                                    f"a tensor parameter before it in meta.params")
                # the slot holds nothing: its pointer is the address of the cached tensor map
                self.slots.append((j, 4, -1, TensorMapSpec.of(p)))
                fmt.append("8x")
                continue
            if p.role in ("ptr", "shape", "stride"):
                if isinstance(t, ScalarType):
                    raise TileError(f"kernel '{meta.name}': parameter {p.source!r} is a scalar in the IR but a "
                                    f"tensor in meta.params")
                if j not in seen_tensor:
                    seen_tensor.add(j)
                    static = [(ax, d) for ax, d in enumerate(t.shape) if d is not None]
                    self.tensors.append((j, p.source, t.dtype, t.rank, static))
                role = {"ptr": 0, "shape": 1, "stride": 2}[p.role]
                self.slots.append((j, role, p.axis, None))
                fmt.append("Q" if role == 0 else "i4x")
            else:
                if not isinstance(t, ScalarType):
                    raise TileError(f"kernel '{meta.name}': parameter {p.source!r} is a tensor in the IR but a "
                                    f"scalar in meta.params")
                f, packer = _scalar_packer(p, t.dtype, p.source)
                if f == "?":
                    raise TileError(f"parameter '{p.source}': ABI kind {p.kind!r} does not fit dtype {t.dtype}")
                self.slots.append((j, 3, -1, packer))
                fmt.append(f if f in "qQd" else f + "4x")
        n = len(self.slots)
        self.n = n
        self.offs = [8 * n + 8 * i for i in range(n)]          # pointers first, then one 8-byte slot per value
        self.struct = struct.Struct("<" + "Q" * n + "".join(fmt))
        self.size = max(self.struct.size, 8)
        self.arr_t = ctypes.c_void_p * max(n, 1)
        # one generated function packs everything with a single struct call (no per-slot branching);
        # a tensor map's pointer is the address of its cached 128 bytes (runtime/tensor_maps.py)
        exprs, maps = [], []
        for (j, role, axis, spec), o in zip(self.slots, self.offs):
            if role == 4:
                exprs.append(f"tmap(M[{len(maps)}], infos[{j}][0], infos[{j}][1], infos[{j}][2])")
                maps.append(spec)
            else:
                exprs.append(f"b + {o}")
        self.maps = tuple(maps)
        packers = []
        for j, role, axis, packer in self.slots:
            if role == 4:
                continue
            if role == 3:
                exprs.append(f"P[{len(packers)}](args[{j}])")
                packers.append(packer)
            elif role == 0:
                exprs.append(f"infos[{j}][0]")
            else:
                exprs.append(f"infos[{j}][{role}][{axis}]")
        src = "def fill(buf, b, args, infos):\n    pack_into(buf, 0, " + ", ".join(exprs) + ")\n"
        env = {"pack_into": self.struct.pack_into, "P": tuple(packers), "M": self.maps, "tmap": tensor_map}
        exec(compile(src, f"<tilec pack_args {meta.name}>", "exec"), env)
        self.fill = env["fill"]

    def tensor_infos(self, args, stream, keep):
        align = self.meta.align
        infos = {}
        for j, name, want, rank, static in self.tensors:
            a = args[j]
            if type(a) is DeviceArray and (want is None or a.dtype is want or a.dtype == want) \
                    and len(a.shape) == rank and (align <= 1 or not a.ptr % align or not a.size):
                info = (a.ptr, a.shape, a.strides)
            else:
                info = extract_tensor(a, name, want, rank, align=align, stream=stream, keep=keep)
            for ax, d in static:
                if info[1][ax] != d:
                    t = self.types[j]
                    raise ValueError(f"parameter '{name}' must have size {d} along dim {ax} (shape "
                                     f"{tuple('?' if x is None else x for x in t.shape)}), got shape {tuple(info[1])}")
            if name in self.meta.divisible:
                bits = want.bits if want is not None else 1
                if not divisible_ok(info[0], tuple(info[1]), tuple(info[2]), bits):
                    e = divisible_elems(bits)
                    raise ValueError(f"parameter '{name}': kernel '{self.meta.name}' was compiled assuming it is "
                                     f"divisible (a 16-byte aligned address, a unit last stride, its last size and "
                                     f"other strides multiples of {e} elements), got address {info[0]:#x}, shape "
                                     f"{tuple(info[1])}, strides {tuple(info[2])}: compile it for these arguments")
            infos[j] = info
        return infos

    def pack(self, args, stream=None, keep=None):
        keep = [] if keep is None else keep
        infos = self.tensor_infos(args, stream, keep)
        buf = bytearray(self.size)
        arr = self.arr_t.from_buffer(buf)
        try:
            self.fill(buf, ctypes.addressof(arr), args, infos)
        except (struct.error, OverflowError):
            self._explain(infos)
            raise
        if keep:
            arr._keep = keep
        return arr

    def _explain(self, infos):
        for j, role, axis, _ in self.slots:
            if role in (1, 2):
                v = infos[j][role][axis]
                if not _I32_MIN <= v <= _I32_MAX:
                    raise _i32_error(v, self.names[j], f"{'size' if role == 1 else 'stride'} {axis} =")
            elif role == 0 and not 0 <= infos[j][0] < 2 ** 64:
                raise ValueError(f"parameter '{self.names[j]}': bad device address {infos[j][0]!r}")


def _plan_for(meta, types, names) -> _Plan:
    cached = getattr(meta, "_tilec_plan", None)
    if cached is not None and cached.types == types and cached.names == names and \
            cached.key == (id(meta.params), meta.align, tuple(meta.divisible)):
        return cached
    plan = _Plan(meta, types, names)
    try:
        meta._tilec_plan = plan
    except AttributeError:
        pass
    return plan


def pack_args(meta: KernelMeta, ir_param_types, args, names=None, *, stream=None, keep: list | None = None):
    """The kernel parameter array for `args` (one per IR parameter), following ir/artifact.py.

    Tensors must already be on the device (DeviceArray or GPU tensor objects); `launch` copies
    host arrays first. Returns a ctypes array of void* (one per machine parameter of
    meta.params), each pointing at its value, stored in the same buffer after the pointers (an
    8-byte slot per value); DLPack owners that must outlive the launch are kept on it as `_keep`."""
    types = tuple(ir_param_types)
    names = tuple(names) if names is not None else tuple(_sources(meta))
    if len(args) != len(types):
        raise TypeError(f"kernel '{meta.name}' takes {len(types)} argument{'s' * (len(types) != 1)} "
                        f"({', '.join(names)}), got {len(args)}")
    return _plan_for(meta, types, names).pack(args, stream, keep)


# ============================================================================== module cache
_FUNCS: dict = {}
_FUNCS_LOCK = threading.Lock()


def load_function(compiled) -> "_cuda.Function":
    """The loaded kernel of `compiled` in the current context (cached per context and code)."""
    if not _cuda._state.ok:
        _cuda.init()
    art = artifact_of(compiled)
    code = art.ptx if art.ptx is not None else art.cubin
    if code is None:
        raise TileError("the compiled kernel has neither PTX nor a cubin")
    key = (_cuda._state.ctx_int, code)
    f = _FUNCS.get(key)
    if f is not None:
        return f
    with _FUNCS_LOCK:
        f = _FUNCS.get(key)
        if f is None:
            cubin, ptx = art.cubin, art.ptx
            name = art.meta.name
            mod = None
            if cubin:
                try:
                    mod = _cuda.load_module(cubin, name=name)
                except (_cuda.CudaError, TileError):
                    if ptx is None:
                        raise
            if mod is None:
                mod = _cuda.load_module(ptx, name=name)
            f = _FUNCS[key] = mod.get_function(name)
    return f


# ============================================================================ torch's stream
_TORCH_STREAM: list = []        # [fn(device ordinal) -> raw handle of torch's current stream], once torch is seen


def _no_torch_stream(ordinal: int) -> int:
    return 0


def torch_stream_fn():
    """A function `(device ordinal) -> raw handle of torch's current CUDA stream on that device` (0 for
    torch's default stream, the legacy one). torch is not imported: it is read from sys.modules, where
    it is whenever a torch tensor is passed (a stand-in returning 0 where it is not, e.g. the mocked
    benchmark). `torch._C._cuda_getCurrentRawStream` (what Triton's launcher calls, ~0.1 µs) where it
    exists, else `torch.cuda.current_stream(ordinal).cuda_stream` (~1 µs)."""
    if _TORCH_STREAM:
        return _TORCH_STREAM[0]
    torch = sys.modules.get("torch")
    if torch is None:
        return _no_torch_stream                   # not cached: torch may be imported later
    fn = getattr(getattr(torch, "_C", None), "_cuda_getCurrentRawStream", None)
    if fn is None:
        current = torch.cuda.current_stream

        def fn(ordinal, current=current):
            return current(ordinal).cuda_stream
    _TORCH_STREAM.append(fn)
    return fn


def _is_torch(a) -> bool:
    return type(a) in _TORCH_TYPES or _is_torch_tensor(a)


# =================================================================================== launch
def _is_host(a) -> bool:
    return isinstance(a, (np.ndarray, Array))


def _host_to_device(a, t, name: str):
    check_host_array(a, t, name)
    return to_device(a)


def check_host_array(a, t, name: str) -> None:
    """A host array argument (copied to the device by the launch) must have the parameter's dtype and rank."""
    want = t.dtype
    if isinstance(a, Array):
        got = a.dtype
    else:
        try:
            got = dtype_of(a)
        except TypeError as e:
            raise TypeError(f"parameter '{name}': {e}") from None
    if want is not None and got != want:
        hint = f"tile.asarray(x, '{want}')" if isinstance(a, np.ndarray) else f"x.astype('{want}')"
        what = f"NumPy {a.dtype}" if isinstance(a, np.ndarray) else str(got)
        raise TypeError(f"parameter '{name}' expects a {want} tensor, got a {what} array (convert it: {hint})")
    if t.rank is not None and a.ndim != t.rank:
        raise ValueError(f"parameter '{name}' expects a rank-{t.rank} tensor, got rank {a.ndim} (shape {tuple(a.shape)})")


def _write_back(host, dev: DeviceArray) -> None:
    back = dev.to_host()
    if isinstance(host, Array):
        host._data = back.data
        return
    if not host.flags.writeable:
        return
    if host.dtype.itemsize * 8 == dev.dtype.bits:
        host[...] = back.data.reshape(host.shape).view(host.dtype)     # same bits: a bit copy (bf16, fp8, ...)
    else:
        host[...] = back.numpy().astype(host.dtype)                     # packed (bool, ml_dtypes int4): decode


class _Launcher:
    """Everything a launch of one compiled kernel needs, resolved once per (context, code)."""
    __slots__ = ("fn", "meta", "types", "names", "tensor_idx", "block", "shared", "cluster")

    def __init__(self, compiled, types, names):
        self.fn = load_function(compiled)
        self.meta = artifact_of(compiled).meta
        self.types, self.names = tuple(types), tuple(names)
        self.tensor_idx = tuple(i for i, t in enumerate(self.types) if not isinstance(t, ScalarType))
        self.block = (int(self.meta.num_threads), 1, 1)
        self.shared = int(self.meta.shared_bytes or 0)
        self.cluster = tuple(self.meta.cluster) if self.meta.cluster is not None else (1, 1, 1)


_LAUNCHERS: dict = {}


def _launcher(compiled, param_types, names) -> _Launcher:
    art = artifact_of(compiled)
    if param_types is not None:
        if names is None:
            names = _sources(art.meta)
        return _Launcher(art, param_types, names)
    key = (_cuda._state.ctx_int, id(art))
    lz = _LAUNCHERS.get(key)
    if lz is None or lz.meta is not art.meta:
        types, sig_names = signature_of(art)
        lz = _LAUNCHERS[key] = _Launcher(art, types, names or sig_names)
    return lz


def launch(compiled, grid, args, stream=None, *, param_types=None, names=None) -> None:
    """Launch `compiled` over `grid` (an int, a tuple of 1-3 ints, or a callable taking the meta)."""
    drv = driver_for(artifact_of(compiled).meta.target)
    if drv is not _cuda:                          # an AMD code object: runtime/launch_hip.py, same arguments
        from .launch_hip import launch_hip
        return launch_hip(drv, compiled, grid, args, stream, param_types=param_types, names=names)
    if not _cuda._state.ok:
        _cuda.init()                              # NoGPUError (one line) without a driver or device
    lz = _launcher(compiled, param_types, names)
    if callable(grid):
        grid = grid(lz.meta)
    if len(args) != len(lz.types):
        raise TypeError(f"kernel '{lz.meta.name}' takes {len(lz.types)} arguments ({', '.join(lz.names)}), "
                        f"got {len(args)}")
    copies = None                                 # [(host object, DeviceArray)]
    torch_args = False
    for i in lz.tensor_idx:
        a = args[i]
        if isinstance(a, (np.ndarray, Array)):
            if copies is None:
                copies, seen, args = [], {}, list(args)
            d = seen.get(id(a))
            if d is None:
                d = seen[id(a)] = _host_to_device(a, lz.types[i], lz.names[i])
                copies.append((a, d))
            args[i] = d
        elif not torch_args and type(a) is not DeviceArray and _is_torch(a) and a.is_cuda:
            torch_args = True
    if stream is None and torch_args:
        stream = torch_stream_fn()(getattr(_cuda._state.device, "ordinal", 0))
    params = _plan_for(lz.meta, lz.types, lz.names).pack(args, stream)
    lz.fn.launch(grid, lz.block, params, lz.shared, stream, lz.cluster)
    h = 0 if stream is None else _cuda.stream_handle(stream)
    for i in lz.tensor_idx:
        a = args[i]
        if type(a) is DeviceArray:
            a._stream = h
    if copies:
        try:
            if h:
                _cuda.Stream(handle=h).synchronize()
            else:
                _cuda.synchronize()
        except _cuda.CudaError as e:          # a fault of this kernel surfaces here: name it
            if e.kernel is None and e.sticky:
                raise _cuda.CudaError(e.call, e.code, e.result_name, e.description, lz.meta.name,
                                      f"(grid {grid}; block {lz.block})") from e
            raise
        for host, d in copies:
            _write_back(host, d)


# ============================================================================ the fast path
_GRID_CODE = """\
    if type(grid) is tuple:
        n = len(grid)
        if n == 1:
            gx = grid[0]
            if type(gx) is not int or not 0 < gx < 2147483648: return None
            gy = gz = 1
        elif n == 2:
            gx, gy = grid
            if type(gx) is not int or type(gy) is not int or not 0 < gx < 2147483648 or not 0 < gy < 65536: return None
            gz = 1
        elif n == 3:
            gx, gy, gz = grid
            if type(gx) is not int or type(gy) is not int or type(gz) is not int or not 0 < gx < 2147483648 \\
                    or not 0 < gy < 65536 or not 0 < gz < 65536: return None
        else:
            return None
    elif type(grid) is int:
        gx = grid
        if not 0 < gx < 2147483648: return None
        gy = gz = 1
    else:
        return None
"""


class FastLauncher:
    """One kernel specialization's launcher for one call signature (each tensor argument's type and
    dtype, each scalar's type, the constexpr keywords): `fl.fast(grid, args, kwargs)` is one
    generated function that checks what can change between calls -- the grid (ints in range), the
    tensors' dtype, rank, 16-byte alignment and device, read through cheap attributes (torch:
    data_ptr(), shape, stride(), is_cuda; DeviceArray: ptr, shape, strides), the scalars' types and
    ranges -- packs the values into a preallocated parameter buffer whose pointer array was written
    once (a tensor map's pointer, the address of the cached map of this launch's tensor, is packed
    per launch), and makes one driver call (cuLaunchKernel, called inline): on torch's current
    stream when the signature has a torch tensor (read per call, as the general path does), else on
    the legacy default stream. It returns `result` after launching; anything it does not expect --
    another type, dtype, rank or device, a host array, a value out of range, a misaligned pointer,
    strides a tensor map cannot take, a tensor the specialization assumes `divisible` that is not
    (KernelMeta.divisible), another thread, `guard` false -- returns None without launching, and the
    caller takes the general path, which gives the named errors.

    `kwargs`: the keyword arguments the call signature has (constexprs; compared by value and
    type); `guard`: (a Python expression, the names it reads) that must hold as well (the kernel's
    target still being the one in use). `any_strides`: the tensor parameters the specialization was
    compiled without TMA for (their arguments' strides did not allow a tensor map); arguments whose
    strides would allow one return None too, so that the caller can pick the TMA specialization.
    `divisible_key`: the `divisible` facts select the specialization (tile/kernel.py), so arguments
    that have them where it was compiled without return None as well."""

    def __init__(self, compiled, args, types, names, *, kwargs=None, guard=None, result=None, any_strides=(),
                 divisible_key=False):
        meta = artifact_of(compiled).meta
        self.meta = meta
        plan = _plan_for(meta, tuple(types), tuple(names))
        fn = load_function(compiled)
        cluster = tuple(meta.cluster) if meta.cluster is not None else (1, 1, 1)
        parts = fn.launch_parts((int(meta.num_threads), 1, 1), int(meta.shared_bytes or 0), cluster)
        self.owner = threading.get_ident()
        self.buf = bytearray(plan.size)
        self.arr = plan.arr_t.from_buffer(self.buf)
        base = ctypes.addressof(self.arr)
        self.addr = base
        n = plan.n
        # the pointer array never changes (tensor maps aside, see below): written once; each launch
        # packs only the values after it
        struct.pack_into("<" + "Q" * n, self.buf, 0, *(base + o for o in plan.offs))
        values = struct.Struct("<" + plan.struct.format[1 + n:])
        align = meta.align
        kwargs = dict(kwargs or {})
        env = {"pack_into": values.pack_into, "buf": self.buf, "get_ident": threading.get_ident,
               "RESULT": result, "KW": kwargs,
               "call": parts["call"], "H": parts["handle"], "STREAM": parts["stream"], "check": parts["check"]}
        head = "kwargs" if not kwargs else \
            "kwargs != KW or " + " or ".join(f"type(kwargs[{k!r}]) is not KT{i}" for i, k in enumerate(kwargs))
        for i, v in enumerate(kwargs.values()):
            env[f"KT{i}"] = type(v)
        lines = ["def fast(grid, args, kwargs):",
                 f"    if {head} or get_ident() != {self.owner} or len(args) != {len(args)}: return None"]
        if guard is not None:
            expr, genv = guard
            env.update(genv)
            lines.append(f"    if not ({expr}): return None")
        lines.append(_GRID_CODE.rstrip("\n"))
        if cluster != (1, 1, 1):                 # whole clusters, else the general path's named error
            lines.append(f"    if gx % {cluster[0]} or gy % {cluster[1]} or gz % {cluster[2]}: return None")
        lines.append(f"    {', '.join(f'a{j}' for j in range(len(args)))}{',' if len(args) == 1 else ''} = args"
                     if args else "    pass")
        multi = _cuda._state.device_count > 1
        ordinal = getattr(_cuda._state.device, "ordinal", 0)
        torch_args = False                        # decided once per call signature: any torch tensor?
        tensor_j = []
        for j, name, want, rank, static in plan.tensors:
            if static:
                raise _NotEligible("a static dimension")
            a = args[j]
            t = type(a)
            env[f"T{j}"] = t
            if t is DeviceArray:
                env[f"D{j}"] = a.dtype
                lines += [f"    if type(a{j}) is not T{j} or a{j}.dtype is not D{j}: return None",
                          f"    p{j} = a{j}.ptr; s{j} = a{j}.shape; st{j} = a{j}.strides"]
            elif _torch_like(a):
                torch_args = True
                env[f"D{j}"] = a.dtype
                lines += [f"    if type(a{j}) is not T{j} or a{j}.dtype is not D{j} or not a{j}.is_cuda: return None",
                          f"    p{j} = a{j}.data_ptr(); s{j} = a{j}.shape; st{j} = a{j}.stride()"]
                if multi:
                    lines.append(f"    if a{j}.get_device() != {ordinal}: return None")
            else:
                raise _NotEligible(f"argument {name!r} is a {t.__name__}")
            lines.append(f"    if len(s{j}) != {rank}" + (f" or p{j} % {align}" if align > 1 else "") + ": return None")
            if name in any_strides and want is not None:
                # compiled without TMA for this tensor because its strides did not allow a tensor map:
                # arguments that do allow one go back to the general path (and its TMA specialization)
                env["tmap_ok"] = tensor_map_ok
                lines.append(f"    if tmap_ok(s{j}, st{j}, {want.bits}): return None")
            # the `divisible` facts (ir/artifact.py divisible_ok) in a few integer ops: the sizes and
            # strides that must be multiples of e elements, or'ed and masked (e is a power of two)
            e = divisible_elems(want.bits if want is not None else 1)
            mult = " | ".join([f"s{j}[{rank - 1}]"] + [f"st{j}[{k}]" for k in range(rank - 1)])
            odd = f"p{j} % 16 or st{j}[{rank - 1}] != 1 or ({mult}) & {e - 1}"
            if name in meta.divisible:
                lines.append(f"    if {odd}: return None")
            elif divisible_key and want is not None:
                lines.append(f"    if not ({odd}): return None")
            tensor_j.append(j)
        exprs = []
        if plan.maps:
            # a tensor map's pointer changes with the tensor: the pointer array is packed per launch
            # too (the cached map's address; a miss builds it or raises), the others as constants
            env["pack_into"], env["tmap"], start = plan.struct.pack_into, tensor_map, 0
            for k, ((j, role, axis, spec), o) in enumerate(zip(plan.slots, plan.offs)):
                if role == 4:
                    env[f"M{k}"] = spec
                    exprs.append(f"tmap(M{k}, p{j}, s{j}, st{j})")
                else:
                    exprs.append(f"{base + o}")
        else:
            start = 8 * n
        scal = 0
        for j, role, axis, packer in plan.slots:
            if role == 4:
                continue
            if role == 3:
                a = args[j]
                ta = type(a)
                if ta is not int and ta is not float and ta is not bool:
                    raise _NotEligible(f"scalar argument of type {ta.__name__}")
                env[f"ST{scal}"] = ta
                inline = _inline_scalar_check(packer, ta, f"a{j}")
                if inline is not None:                   # a plain int / float in range: packed as is
                    lines.append(f"    if type(a{j}) is not ST{scal} or {inline}: return None")
                    exprs.append(f"a{j}")
                else:
                    env[f"P{scal}"] = packer
                    lines.append(f"    if type(a{j}) is not ST{scal}: return None")
                    exprs.append(f"P{scal}(a{j})")
                scal += 1
            elif role == 0:
                exprs.append(f"p{j}")
            elif role == 1:
                exprs.append(f"s{j}[{axis}]")
            else:
                exprs.append(f"st{j}[{axis}]")
        bx, by, bz = parts["block"]
        lines += ["    try:",
                  f"        pack_into(buf, {start}, " + ", ".join(exprs) + ")",
                  "    except Exception:",
                  "        return None"]
        if torch_args:                            # torch's current stream (~0.1 µs), as the general path
            env["cur"], env["stream_of"] = torch_stream_fn(), parts["stream_of"]
            lines += [f"    h = cur({ordinal})",
                      f"    res = call(H, gx, gy, gz, {bx}, {by}, {bz}, {parts['shared']}, "
                      f"stream_of(h) if h else STREAM, {base}, 0)"]
        else:
            lines.append(f"    res = call(H, gx, gy, gz, {bx}, {by}, {bz}, {parts['shared']}, STREAM, {base}, 0)")
        lines.append("    if res[0]: check(res)")
        for j in tensor_j:
            if type(args[j]) is DeviceArray:
                lines.append(f"    a{j}._stream = {'h' if torch_args else 0}")
        lines.append("    return RESULT")
        self.source = "\n".join(lines) + "\n"
        exec(compile(self.source, f"<tilec fast launch {meta.name}>", "exec"), env)
        self.fast = env["fast"]


def _inline_scalar_check(packer, ta, var):
    """The condition (Python source) under which a scalar of type `ta` is NOT packed as is by
    `packer` (its fast case: a plain int in the dtype's range, a plain float within f32/f64), or
    None when the value needs the packer (bools, f16 codes, an int for a float parameter)."""
    fast = getattr(packer, "__name__", "")
    d = packer.__defaults__ or ()
    if fast == "pack_int" and ta is int:
        lo, hi = int(d[0]), int(d[1])
        return f"not {lo} <= {var} <= {hi}"
    if fast == "pack_float" and ta is float:
        lim = float(d[0])
        return f"not {-lim!r} <= {var} <= {lim!r}"
    return None


class _NotEligible(Exception):
    pass


def _torch_like(a) -> bool:
    from .device import _is_torch_tensor
    return _is_torch_tensor(a)


def fast_launcher(compiled, args, types=None, names=None, *, kwargs=None, guard=None, result=None,
                  any_strides=(), divisible_key=False):
    """A FastLauncher for these arguments (the call signature of a launch that just went through
    the general path), or None where the fast path does not apply (host arrays, other tensor kinds,
    a cluster launch the general path must allow first, no driver)."""
    if not _cuda._state.ok:
        return None
    try:
        if types is None:
            types, names = signature_of(compiled)
        return FastLauncher(compiled, list(args), types, names, kwargs=kwargs, guard=guard, result=result,
                            any_strides=tuple(any_strides), divisible_key=divisible_key)
    except (_NotEligible, TileError, TypeError, ValueError, AttributeError):
        return None
