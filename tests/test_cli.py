"""The `tilec` command line: help, IR text in and out, pass listing, kernels from Python files, and
one-line errors with the right exit status."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tile import cli
from tile.ir.parser import parse_module
from tile.ir.printer import print_module

IR = textwrap.dedent("""\
    kernel @k(%A: tensor<?x4xf32>, %n: i32) {
      %c = constant {value = 3} : i32
      %d = add %c, %c : i32   // folds to 6
      %t = full {value = 1.5} : tile<4xf32>
      store %A, %d, %n, %t
    }
    """)

KERNELS = textwrap.dedent("""\
    import tile
    from tile import f32

    @tile.kernel
    def add1(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], n: int, BLOCK: tile.constexpr = 16):
        i = tile.block_id(0) * BLOCK
        x = tile.load(X, (i,), (BLOCK,))
        if BLOCK > 8:
            x = x + 1.0
        tile.store(Y, (i,), x)

    @tile.kernel
    def scale(X: tile.Tensor[f32], s: float, N: tile.constexpr):
        x = tile.load(X, (0,), (N,))
        tile.store(X, (0,), x * s)

    if __name__ == "__main__":
        open(__file__ + ".ran", "w").write("the main block ran")
    """)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def tir(tmp_path):
    p = tmp_path / "k.tir"
    p.write_text(IR)
    return p


@pytest.fixture
def kfile(tmp_path):
    p = tmp_path / "kernels.py"
    p.write_text(KERNELS)
    return p


# ------------------------------------------------------------------------------ help and usage
@pytest.mark.parametrize("argv", [["--help"], ["ir", "--help"], ["passes", "--help"], ["compile", "--help"]])
def test_help(capsys, argv):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tilec")
    if argv[0] == "ir":
        assert "--after" in out and "--all" in out and "-D" in out
    if argv[0] == "compile":
        assert "-o" in out and "--target" in out


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["ir"])
    assert ei.value.code == 2
    assert "error" in one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit):
        cli.main(["ir", "x.tir", "--after", "dce", "--all"])
    one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ IR text
def test_ir_on_tir_round_trips(capsys, tir):
    rc, out, err = run(capsys, "ir", str(tir))
    assert rc == 0 and err == ""
    assert out == print_module(parse_module(IR))
    assert out == IR.replace("   // folds to 6", "")


def test_ir_on_tir_after_passes(capsys, tir):
    rc, out, _ = run(capsys, "ir", str(tir), "--after", "canonicalize")
    assert rc == 0 and "%d = constant {value = 6} : i32" in out
    rc, out, _ = run(capsys, "ir", str(tir), "--all", "--target", "sm_80")
    assert rc == 0
    headers = [ln for ln in out.splitlines() if ln.startswith("//")]
    assert headers[0].startswith("// after frontend") and "// after canonicalize" in headers and "// after dce" in headers
    assert len(parse_module(out).functions) == len(headers)     # the headers are comments the parser skips


def test_bad_tir_reports_file_line_col(capsys, tmp_path):
    bad = tmp_path / "bad.tir"
    bad.write_text(IR.replace("%t = full {value = 1.5}", "%t = full {value = 1.5"))
    rc, out, err = run(capsys, "ir", str(bad))
    assert rc == 1 and out == ""
    line = one_line(err)
    assert re.match(rf"^{re.escape(str(bad))}:4:\d+: unexpected", line), line
    bad.write_text(IR.replace("add %c, %c", "add %c, %zz"))
    rc, _, err = run(capsys, "ir", str(bad))
    assert rc == 1 and one_line(err).startswith(f"{bad}:3:16: value %zz is not defined")


def test_missing_file_and_bad_target(capsys, tmp_path):
    rc, _, err = run(capsys, "ir", str(tmp_path / "nope.tir"))
    assert rc == 1 and "nope.tir" in one_line(err)
    rc, _, err = run(capsys, "passes", "--target", "sm_70")
    assert rc == 1 and "unknown target 'sm_70'" in one_line(err)
    rc, _, err = run(capsys, "ir", str(tmp_path / "nope.py"))
    assert rc == 1 and "no such file" in one_line(err)


def test_passes_lists_pipeline(capsys):
    rc, out, _ = run(capsys, "passes")
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[0] == "canonicalize" and lines[1].split()[0] == "dce"
    assert all(len(ln.split(None, 1)) == 2 for ln in lines)          # name and a description
    rc, out, _ = run(capsys, "passes", "--target", "gfx942")
    assert rc == 0 and "canonicalize" in out


# ------------------------------------------------------------------------------ kernels from Python files
def test_ir_of_a_python_kernel(capsys, kfile):
    rc, out, err = run(capsys, "ir", f"{kfile}::add1")
    assert rc == 0, err
    assert out.startswith("kernel @add1(%X: tensor<?xf32>, %Y: tensor<?xf32>, %n: i32) attributes {BLOCK = 16}")
    assert "add" in out
    assert print_module(parse_module(out)) == out
    assert not os.path.exists(str(kfile) + ".ran"), "the file's __main__ block must not run"
    rc, out, err = run(capsys, "ir", f"{kfile}::add1", "-D", "BLOCK=4", "--after", "dce")
    assert rc == 0, err
    assert "BLOCK = 4" in out and "tile<4xf32>" in out and "add" not in out.split("{", 2)[2].replace("dce", "")
    rc, out, err = run(capsys, "ir", f"{kfile}::scale", "-D", "N=8", "-D", "X=tensor<?xf32>", "--all")
    assert rc == 0, err
    assert "// after dce" in out and "kernel @scale(%X: tensor<?xf32>, %s: f32) attributes {N = 8}" in out


def test_kernel_choice_and_signature_errors(capsys, kfile):
    rc, _, err = run(capsys, "ir", str(kfile))
    assert rc == 1 and "add1, scale" in one_line(err)
    rc, _, err = run(capsys, "ir", f"{kfile}::nope")
    assert rc == 1 and "no kernel named 'nope'; kernels: add1, scale" in one_line(err)
    rc, _, err = run(capsys, "ir", f"{kfile}::scale", "-D", "N=8")
    assert rc == 1 and "tensor parameter 'X' needs a rank" in one_line(err)
    rc, _, err = run(capsys, "ir", f"{kfile}::scale", "-D", "X=tensor<?xf32>")
    assert rc == 1 and "constexpr 'N' has no default" in one_line(err)
    rc, _, err = run(capsys, "ir", f"{kfile}::add1", "-D", "NOPE=1")
    assert rc == 1 and "no parameter 'NOPE'" in one_line(err)
    rc, _, err = run(capsys, "ir", f"{kfile}::add1", "--after", "nope")
    assert rc == 1 and "not in the cpu pipeline" in one_line(err)


def test_compile_error_in_kernel_shows_the_line(capsys, tmp_path):
    p = tmp_path / "broken.py"
    p.write_text(textwrap.dedent("""\
        import tile
        from tile import f32

        @tile.kernel
        def broken(X: tile.Tensor[f32, 1]):
            x = tile.load(X, (0,), (4,))
            tile.store(X, (0,), tile.dot(x, x))
        """))
    rc, _, err = run(capsys, "ir", str(p))
    assert rc == 1
    lines = err.rstrip("\n").splitlines()           # as the Python API shows it: message, source line, caret
    assert len(lines) == 3 and "Traceback" not in err, err
    assert re.match(r"^.*broken\.py:7:\d+: ", lines[0]), err
    assert lines[1].strip() == "tile.store(X, (0,), tile.dot(x, x))" and lines[2].strip().startswith("^")
    p.write_text("import tile\nraise RuntimeError('boom')\n")
    rc, _, err = run(capsys, "ir", str(p))
    assert rc == 1 and "RuntimeError: boom" in one_line(err)
    p.write_text("def f(:\n")
    rc, _, err = run(capsys, "ir", str(p))
    assert rc == 1 and re.match(r"^.*broken\.py:1:\d+: ", one_line(err))


def test_parse_value():
    from tile.ir.dtypes import dtype
    assert cli.parse_value("64") == 64 and cli.parse_value("0x10") == 16
    assert cli.parse_value("1.5") == 1.5 and cli.parse_value("True") is True and cli.parse_value("false") is False
    assert cli.parse_value("bf16") == dtype("bf16") and cli.parse_value("int4") == dtype("int4")
    assert cli.parse_value("none") is None and cli.parse_value("(64, 32)") == (64, 32)
    assert cli.parse_value("relu") == "relu" and cli.parse_value("'f32'") == "f32"


# ------------------------------------------------------------------------------ compile
def test_compile_to_tir(capsys, tmp_path, kfile, tir):
    out = tmp_path / "out.tir"
    rc, _, err = run(capsys, "compile", f"{kfile}::add1", "--target", "sm_80", "-o", str(out))
    assert rc == 0, err
    text = out.read_text()
    assert print_module(parse_module(text)) == text and text.startswith("kernel @add1")
    rc, _, err = run(capsys, "compile", str(tir), "--target", "gfx942", "-o", str(out), "--dump", str(tmp_path / "d"))
    assert rc == 0, err
    assert "constant {value = 6}" in out.read_text()
    assert (tmp_path / "d" / "k" / "00-frontend.tir").exists()


def test_launch_option_num_warps(capsys, tmp_path, kfile):
    """-D num_warps=N shapes the code as the launch option does (threads per block in the PTX)."""
    out = tmp_path / "k.ptx"
    rc, _, err = run(capsys, "compile", f"{kfile}::add1", "--target", "sm_80", "-o", str(out), "-D", "num_warps=2")
    assert rc == 0, err
    assert ".reqntid 64" in out.read_text()
    rc, _, err = run(capsys, "compile", f"{kfile}::add1", "--target", "sm_80", "-o", str(out), "-D", "num_warps=3")
    assert rc == 1 and "'num_warps' must be a positive power of two" in one_line(err)


def test_compile_machine_code_or_unavailable(capsys, tmp_path, tir):
    out = tmp_path / "k.ptx"
    rc, _, err = run(capsys, "compile", str(tir), "--target", "sm_80", "-o", str(out))
    assert rc == 0, err
    assert ".entry k" in out.read_text()
    rc, _, err = run(capsys, "compile", str(tir), "--target", "gfx942", "-o", str(tmp_path / "k.hsaco"))
    assert rc == 0, err
    assert (tmp_path / "k.hsaco").read_bytes()[:4] == b"\x7fELF"
    rc, _, err = run(capsys, "compile", str(tir), "--target", "gfx950", "-o", str(tmp_path / "k.s"))
    assert rc == 0, err
    assert "gfx950" in (tmp_path / "k.s").read_text()
    rc, _, err = run(capsys, "compile", str(tir), "--target", "sm_80", "-o", str(tmp_path / "k.s"))
    assert rc == 1 and "not an output of target sm_80" in one_line(err)
    rc, _, err = run(capsys, "compile", str(tir), "--target", "cpu", "-o", str(tmp_path / "k.ll"))
    assert rc == 2 and "cpu" in one_line(err)
    rc, _, err = run(capsys, "compile", str(tir), "--target", "gfx942", "-o", str(out))
    assert rc == 1 and "not an output of target gfx942" in one_line(err)
    rc, _, err = run(capsys, "compile", str(tir), "--target", "sm_80", "-o", str(tmp_path / "k.exe"))
    assert rc == 1 and "unknown output kind" in one_line(err)


def test_python_dash_m_entry_point(tmp_path, tir):
    r = subprocess.run([sys.executable, "-m", "tile.cli", "ir", str(tir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == print_module(parse_module(IR))
    bad = tmp_path / "bad.tir"
    bad.write_text("kernel @k( {\n}\n")
    r = subprocess.run([sys.executable, "-m", "tile.cli", "ir", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.match(rf"^{re.escape(str(bad))}:1:\d+: ", one_line(r.stderr))


def test_layout_picture(capsys):
    code, out, err = run(capsys, "layout", "tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>")
    assert code == 0
    rows = [l for l in out.splitlines() if "|" in l and "T" in l]
    assert rows[0].split("|")[1].split()[:4] == ["T0V0", "T0V1", "T1V0", "T1V1"]   # mma C fragment row 0
    code, out, err = run(capsys, "layout", "(4,(2,")
    assert code == 1 and "position 6" in err and "Traceback" not in err
