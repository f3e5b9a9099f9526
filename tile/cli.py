"""`tilec`: the command line of the tile compiler.

    tilec ir FILE.py[::KERNEL] [-D NAME=VALUE ...] [--target T] [--after PASS | --all]
    tilec ir FILE.tir|- [--target T] [--after PASS | --all]
    tilec passes [--target T]
    tilec compile FILE.py[::KERNEL] | FILE.tir --target T [-D NAME=VALUE ...] -o OUT(.tir|.ptx|.cubin|.hsaco|.s|.ll|.tilec)
    tilec cache info | clear

A kernel file is imported as a module under a private name (its `if __name__ == "__main__":` block
does not run). `-D NAME=VALUE` sets a constexpr (VALUE: int, float, true/false, a dtype name, none,
a Python literal such as (64, 64), else a string) or gives a runtime parameter's type for compiling
without arguments (`-D A=tensor<?x?xbf16>`, `-D n=i64`); tensor parameters annotated
`tile.Tensor[dtype, rank]` need none.

`tilec compile` reads and fills the kernel cache (runtime/cache.py; `--no-cache` bypasses it).

Errors are one line on stderr (`tilec: error: ...`, or `FILE:LINE:COL: message` for IR text; a
kernel's CompileError also shows its source line and a caret under the spot) with exit status 1; a back end that is not available for the target exits with 2. `--traceback` shows the
Python traceback instead.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2


class CLIError(Exception):
    """An error the CLI reports as one line, with an exit status."""

    def __init__(self, msg: str, status: int = EXIT_ERROR):
        super().__init__(msg)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------------ helpers
def _targets():
    from .passes.manager import TARGETS
    return TARGETS


def _is_located_compile_error(e: BaseException) -> bool:
    """A front-end CompileError with its source line (what `str()` shows as three lines)."""
    try:
        from .dsl.errors import CompileError
    except ImportError:
        return False
    return isinstance(e, CompileError) and bool(getattr(e, "source_line", None))


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


_PARSE_POS = re.compile(r"^line (\d+), column (\d+): ")


def _parse_tir(path: str, text: str):
    from .ir.errors import ParseError
    from .ir.parser import parse_module
    try:
        return parse_module(text)
    except ParseError as e:
        msg = _PARSE_POS.sub("", _first_line(e))
        raise CLIError(f"{path}:{e.line}:{e.col}: {msg}") from e


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not a text file ({e.reason})") from e


def _split_spec(spec: str) -> tuple[str, str | None]:
    if "::" in spec:
        path, name = spec.rsplit("::", 1)
        return path, (name or None)
    return spec, None


_counter = [0]


def load_file(path: str):
    """Import a Python file by path under a private module name (its __main__ block does not run)."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{path}: no such file")
    if p.is_dir():
        raise CLIError(f"{path}: is a directory")
    _counter[0] += 1
    modname = f"_tilec_user_{re.sub(r'[^A-Za-z0-9_]', '_', p.stem)}_{_counter[0]}"
    spec = importlib.util.spec_from_file_location(modname, str(p.resolve()))
    if spec is None or spec.loader is None:
        raise CLIError(f"{path}: cannot be imported as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    parent = str(p.resolve().parent)
    if sys.path[:1] != [parent]:            # sibling imports of the kernel file come first (a `gemm` module
        if parent in sys.path:              # elsewhere on the path, e.g. benchmarks/gemm.py, must not win)
            sys.path.remove(parent)
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(mod)
    except SystemExit as e:
        raise CLIError(f"{path}: importing it called exit({e.code})") from e
    except SyntaxError as e:
        raise CLIError(f"{e.filename or path}:{e.lineno}:{e.offset}: {e.msg}") from e
    except CLIError:
        raise
    except Exception as e:
        from .ir.errors import TileError
        if isinstance(e, TileError):
            raise
        raise CLIError(f"{path}: importing it failed: {type(e).__name__}: {_first_line(e)}") from e
    return mod


def find_kernel(mod, path: str, name: str | None):
    """The Kernel object `name` in the module (or its only kernel)."""
    from .kernel import Kernel
    found = {k: v for k, v in vars(mod).items() if isinstance(v, Kernel)}
    own = {k: v for k, v in found.items() if getattr(getattr(v, "fn", None), "__module__", None) == mod.__name__}
    if name is not None:
        if name in found:
            return found[name]
        if name in vars(mod):
            raise CLIError(f"{path}::{name} is not a @tile.kernel (it is a {type(vars(mod)[name]).__name__})")
        choices = ", ".join(sorted(own or found)) or "none"
        raise CLIError(f"{path} has no kernel named {name!r}; kernels: {choices}")
    pool = own or found
    if not pool:
        raise CLIError(f"{path} defines no @tile.kernel")
    if len(pool) > 1:
        raise CLIError(f"{path} defines {len(pool)} kernels, pick one with {path}::NAME: {', '.join(sorted(pool))}")
    return next(iter(pool.values()))


def parse_value(text: str):
    """A -D value: true/false, int, float, a dtype name, none, a Python literal, else the string."""
    from .ir.dtypes import dtype
    s = text.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(s, 0)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        pass
    try:
        return dtype(s)
    except ValueError:
        pass
    if s[:1] in "([{'\"":
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError):
            raise CLIError(f"-D value {text!r} is not a valid literal") from None
    return s


def parse_defines(defs) -> dict:
    out = {}
    for d in defs or []:
        if "=" not in d:
            raise CLIError(f"-D {d!r}: expected NAME=VALUE")
        k, v = d.split("=", 1)
        k = k.strip()
        if not k.isidentifier():
            raise CLIError(f"-D {d!r}: {k!r} is not a parameter name")
        out[k] = v
    return out


def _type_from_text(pname: str, text: str):
    """A runtime parameter's type from -D NAME=tensor<?x?xbf16> / NAME=i64."""
    from .ir.dtypes import dtype
    from .ir.parser import _shaped, _SHAPED
    from .ir.types import ScalarType
    s = text.strip()
    m = _SHAPED.match(s)
    try:
        if m:
            kind, body = m.groups()
            if kind != "tensor":
                raise ValueError("a kernel parameter is a tensor<...> or a scalar dtype")
            return _shaped(kind, body)
        return ScalarType(dtype(s))
    except (ValueError, TypeError) as e:
        raise CLIError(f"-D {pname}={text}: not a parameter type ({e}); e.g. tensor<?x?xbf16> or i32") from None


def signature_args(kernel, defines: dict) -> dict:
    """Keyword arguments for Kernel.compile: a signature for each runtime parameter, the constexprs."""
    from .ir.types import ScalarType, TensorType
    from .kernel import LAUNCH_OPTIONS
    params = list(getattr(kernel, "params", []))
    names = {p.name for p in params}
    unknown = [k for k in defines if k not in names and k not in LAUNCH_OPTIONS]
    if unknown:
        raise CLIError(f"{kernel.name} has no parameter {unknown[0]!r}; parameters: {', '.join(p.name for p in params)}"
                       f" (launch options: {', '.join(LAUNCH_OPTIONS)})")
    # launch options (-D num_warps=8) shape the code as constexprs do: passed to compile() the same way
    kw = {k: parse_value(v) for k, v in defines.items() if k in LAUNCH_OPTIONS and k not in names}
    for p in params:
        given = defines.get(p.name)
        if p.kind == "constexpr":
            if given is not None:
                kw[p.name] = parse_value(given)
            elif not p.has_default:
                raise CLIError(f"{kernel.name}: constexpr '{p.name}' has no default; give it with -D {p.name}=VALUE")
            continue
        if given is not None:
            kw[p.name] = _type_from_text(p.name, given)
            continue
        if p.kind == "tensor":
            if p.dtype is None or p.rank is None:
                what = "a dtype and a rank" if p.dtype is None and p.rank is None else \
                    "a rank" if p.rank is None else "a dtype"
                ex = f"tensor<{'x'.join(['?'] * (p.rank or 2))}x{p.dtype or 'f32'}>"
                raise CLIError(f"{kernel.name}: tensor parameter '{p.name}' needs {what} to compile without arguments: "
                               f"annotate it tile.Tensor[dtype, rank] or pass -D {p.name}={ex}")
            kw[p.name] = TensorType(p.dtype, (None,) * p.rank)
        elif p.kind == "scalar":
            kw[p.name] = ScalarType(p.dtype)
        else:
            raise CLIError(f"{kernel.name}: parameter '{p.name}' has no annotation; give its type with "
                           f"-D {p.name}=tensor<?x?xf32> (a tensor) or -D {p.name}=i32 (a scalar)")
    return kw


@contextmanager
def _no_env(name: str):
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def frontend_module(spec: str, defines: dict):
    """(module right after the front end, its name, the source path) for FILE.py::KERNEL or FILE.tir."""
    path, name = _split_spec(spec)
    if not path.endswith(".py"):                 # IR text: FILE.tir (any other name too), '-' = stdin
        if name is not None:
            raise CLIError(f"{spec}: '::KERNEL' applies to Python files only")
        if defines:
            raise CLIError("-D applies to Python kernel files, not to IR text")
        if path == "-":
            m = _parse_tir("<stdin>", sys.stdin.read())
            return m, (m.functions[0].name if m.functions else "stdin")
        m = _parse_tir(path, _read(path))
        return m, (m.functions[0].name if len(m.functions) == 1 else Path(path).stem)
    mod = load_file(path)
    k = find_kernel(mod, path, name)
    kw = signature_args(k, defines)
    # The front end's output, as text: the CPU compile runs only target-independent passes and its
    # .ir is the IR right after the front end. Dumps are written by the pipeline run below.
    with _no_env("TILEC_DUMP_IR"):
        ck = k.compile(target="cpu", **kw)
    return _parse_tir(f"<front end output of {k.name}>", ck.ir), k.name


def _check_target(t: str):
    from .ir.targets import UnknownTargetError, get_target
    try:
        get_target(t)
    except UnknownTargetError as e:
        raise CLIError(str(e)) from None


def run_passes(module, target: str, name: str, stop_after=None, dump_dir=None):
    from . import compiler
    try:
        return compiler.lower(module, target, stop_after=stop_after, dump_dir=dump_dir, name=name)
    except ValueError as e:
        if stop_after is not None and "not in the" in str(e):
            raise CLIError(_first_line(e)) from e
        raise


# ------------------------------------------------------------------------------------------ commands
def cmd_ir(a) -> int:
    from .ir.printer import print_module
    _check_target(a.target)
    m, name = frontend_module(a.spec, parse_defines(a.define))
    if a.after is None and not a.all and not a.dump:
        sys.stdout.write(print_module(m))
        return 0
    front = print_module(m)
    stop = None if a.all else a.after
    if stop == "frontend":
        sys.stdout.write(front)
        return 0
    _, ir_after = run_passes(m, a.target, name, stop_after=stop, dump_dir=a.dump)
    if a.all:
        sys.stdout.write(f"// after frontend (target {a.target})\n{front}")
        for key, text in ir_after.items():
            sys.stdout.write(f"\n// after {key}\n{text}")
    elif a.after is not None:
        sys.stdout.write(ir_after[a.after])
    else:
        sys.stdout.write(front)
    return 0


def cmd_passes(a) -> int:
    from .passes.manager import describe, pipeline
    _check_target(a.target)
    ps = pipeline(a.target)
    w = max((len(p.name) for p in ps), default=0)
    for p in ps:
        print(f"{p.name:<{w}}  {describe(p)}".rstrip())
    return 0


def cmd_layout(a) -> int:
    from .ir.layout import parse_layout
    from .ir.register_layout import picture
    print(picture(parse_layout(a.text)))   # a LayoutError (a TileError) becomes the one-line error
    return 0


_SUFFIXES = (".tir", ".ptx", ".cubin", ".hsaco", ".co", ".s", ".ll", ".tilec")


def cmd_compile(a) -> int:
    from .ir.printer import print_module
    _check_target(a.target)
    out = Path(a.output)
    suffix = out.suffix.lower()
    if suffix not in _SUFFIXES:
        raise CLIError(f"{a.output}: unknown output kind {suffix or '(no suffix)'!r}; "
                       f"use .tir, .ptx, .cubin, .hsaco, .s (AMD assembly), .ll or .tilec (the whole artifact)")
    from .ir.targets import get_target
    family = get_target(a.target).family
    if (suffix in (".ptx", ".cubin") and family != "nvidia") or (suffix in (".hsaco", ".co", ".s") and family != "amd"):
        raise CLIError(f"{a.output}: a {suffix} file is not an output of target {a.target}")
    from . import compiler
    m, name = frontend_module(a.spec, parse_defines(a.define))
    if len(m.functions) != 1:
        if not a.kernel:
            raise CLIError(f"{a.spec} holds {len(m.functions)} kernels; pick one with --kernel NAME: "
                           f"{', '.join(f.name for f in m.functions)}")
        m = compiler.Module([m.get(a.kernel)])
    if not all(compiler.is_prepared(f) for f in m.functions) or a.dump:
        # IR that has been through the pipeline (an edited dump) is compiled as it is: the choices
        # written in it (atoms, copies, layouts) are what code generation carries out
        m, _ = run_passes(m, a.target, name, dump_dir=a.dump)
    if suffix == ".tir":
        _write(out, print_module(m))
        return 0
    if a.target == "cpu":
        raise CLIError("target cpu runs in the interpreter and has no machine code; write a .tir file", EXIT_UNAVAILABLE)
    from .ir.errors import TileError
    try:
        # .ll needs the LLVM IR, which only a fresh build carries (the cache keeps the artifact)
        art = compiler.generate_cached(m, a.target, use_cache=not a.no_cache and suffix != ".ll")
    except NotImplementedError as e:
        raise CLIError(f"the back end for target {a.target} is not available: {_first_line(e)}", EXIT_UNAVAILABLE) from e
    except TileError as e:
        if "no code generator" in str(e):
            raise CLIError(_first_line(e), EXIT_UNAVAILABLE) from e
        raise
    if suffix == ".tilec":
        try:
            from .codegen import assemble
            assemble(art)                        # a cubin too where nvJitLink or ptxas is here
        except Exception:                        # noqa: BLE001 - the PTX alone still loads (driver JIT)
            pass
        art.save(out)
        return 0
    if suffix == ".cubin":
        from .codegen import assemble
        data = assemble(art)
    else:
        data = {".ptx": art.ptx, ".ll": art.llvm_ir, ".hsaco": art.hsaco, ".co": art.hsaco,
                ".s": (art.extra or {}).get("asm")}[suffix]
    if data is None:
        raise CLIError(f"the {a.target} back end gives no {suffix} output", EXIT_UNAVAILABLE)
    _write(out, data)
    return 0


def cmd_cache(a) -> int:
    from .runtime.cache import KernelCache
    c = KernelCache()
    winners = sorted((c.directory / "autotune").glob("*.json"))     # @tile.autotune's (tile/autotuner.py)
    if a.action == "clear":
        n = c.clear(disk=True)
        for p in winners:
            p.unlink(missing_ok=True)
        print(f"removed {n} entr{'y' if n == 1 else 'ies'} and {len(winners)} autotune winner"
              f"{'' if len(winners) == 1 else 's'} from {c.directory}")
        return 0
    i = c.info()
    print(f"directory: {i['directory']}{'' if i['disk'] else '  (disk tier off: TILEC_CACHE=0)'}")
    print(f"entries:   {i['entries']}")
    print(f"bytes:     {i['bytes']} ({_human(i['bytes'])})")
    print(f"cap:       {i['max_bytes']} ({_human(i['max_bytes'])}; TILEC_CACHE_MAX_BYTES)")
    print(f"autotune:  {len(winners)} winner{'' if len(winners) == 1 else 's'} (kept outside the cap)")
    return 0


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _write(path: Path, data):
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="tilec", description="The tile kernel compiler: inspect the IR, list passes, compile kernels.")
    ap.add_argument("--traceback", action="store_true", help="show Python tracebacks of errors (for debugging tilec)")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    def common(p, defines=True):
        if defines:
            p.add_argument("-D", "--define", action="append", metavar="NAME=VALUE",
                           help="a constexpr value (int, float, true/false, dtype, none, literal, string) or a "
                                "runtime parameter's type (tensor<?x?xbf16>, i64), or a launch option "
                                "(num_warps=8, num_stages=3); repeatable")
        p.add_argument("--dump", metavar="DIR", help="write DIR/<kernel>/NN-<pass>.tir after each pass "
                                                    "(also: env TILEC_DUMP_IR=DIR)")

    p = sub.add_parser("ir", help="print a kernel's IR (after the front end, one pass or every pass)",
                       description="Print the IR of FILE.py::KERNEL (compiled without arguments) or of an IR "
                                   "text FILE.tir (parsed and printed back).")
    p.add_argument("spec", metavar="FILE.py[::KERNEL] | FILE.tir | -", help="a kernel file, or IR text ('-': stdin)")
    p.add_argument("--target", default="cpu", help="target whose pipeline --after/--all run (default cpu): "
                                                    "cpu sm_80 sm_89 sm_90a gfx90a gfx942 gfx950")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--after", metavar="PASS", help="print the IR after this pass of the target's pipeline "
                                                    "('frontend': before any pass)")
    g.add_argument("--all", action="store_true", help="print the IR after the front end and after every pass, "
                                                       "each under a '// after <pass>' comment")
    common(p)
    p.set_defaults(func=cmd_ir)

    p = sub.add_parser("passes", help="list the pass pipeline of a target",
                       description="List the passes a target's pipeline runs, in order, with one-line descriptions.")
    p.add_argument("--target", default="cpu", help="cpu sm_80 sm_89 sm_90a gfx90a gfx942 gfx950 (default cpu)")
    p.set_defaults(func=cmd_passes)

    p = sub.add_parser("compile", help="compile a kernel through the pipeline and write IR or machine code",
                       description="Compile FILE.py::KERNEL or FILE.tir through the target's pipeline and write OUT: "
                                   ".tir (the IR after the pipeline; any target), .ptx/.cubin (NVIDIA), .hsaco "
                                   "/.s (AMD code object / assembly), .ll (LLVM IR) when the target's back end is available (else exit 2).")
    p.add_argument("spec", metavar="FILE.py[::KERNEL] | FILE.tir")
    p.add_argument("--target", required=True, help="cpu sm_80 sm_89 sm_90a gfx90a gfx942 gfx950")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (.tir .ptx .cubin .hsaco .s .ll)")
    p.add_argument("--kernel", metavar="NAME", help="the kernel to compile when FILE.tir holds several")
    p.add_argument("--no-cache", action="store_true", help="compile afresh, neither reading nor writing the kernel cache")
    common(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("cache", help="show or clear the kernel cache",
                       description="info: the cache directory ($TILEC_CACHE_DIR, else ~/.cache/tilec), its entries, "
                                   "their bytes and the size cap ($TILEC_CACHE_MAX_BYTES, default 1 GiB). "
                                   "clear: delete every entry and every @tile.autotune winner.")
    p.add_argument("action", choices=["info", "clear"])
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("layout", help="draw a layout: which thread holds which element, or each offset",
                       description="Parse a layout in its text form (`(8,64):(64,1)`, `sw<3,4,3> o (8,64):(64,1)`, "
                                   "`tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>`) and print a picture of it: for a "
                                   "thread-value layout, T<thread>V<value> in each tile cell; else each offset.")
    p.add_argument("text", help="the layout, quoted")
    p.set_defaults(func=cmd_layout)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "cmd", None):
        ap.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except CLIError as e:
        if args.traceback:
            raise
        print(str(e) if re.match(r"^.+:\d+:\d+: ", str(e)) else f"tilec: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("tilec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                      # `tilec ir ... | head`: the reader left; not an error
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except Exception as e:
        if args.traceback:
            raise
        from .ir.errors import TileError
        if _is_located_compile_error(e):
            # a kernel's CompileError reads as the Python API shows it: file:line:col: message, the
            # source line and a caret under the spot
            msg = str(e).rstrip("\n")
        elif isinstance(e, TileError):
            msg = _first_line(e)                 # ParseError/VerifyError: file:line:col first
        elif isinstance(e, (OSError, ValueError, TypeError, KeyError, LookupError, ImportError, NotImplementedError)):
            msg = f"{type(e).__name__}: {_first_line(e)}" if isinstance(e, (KeyError, ImportError)) else _first_line(e)
        else:
            msg = f"internal error: {type(e).__name__}: {_first_line(e)} (run with --traceback for details)"
        print(msg if re.match(r"^.+:\d+:\d+: ", msg) else f"tilec: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
