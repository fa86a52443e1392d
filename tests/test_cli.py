"""The command line as a user meets it: help everywhere, a closed pipe, what `ls`
shows (age, what an overwrite ring retains), the demo's options, output and chart."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

import shmring
from shmring import demo
from shmring.__main__ import build_parser
from _procs import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "shmring", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _parsers(ap: argparse.ArgumentParser, path=("shmring",)):
    yield path, ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_and_argument_has_help():
    parsers = list(_parsers(build_parser())) + [(("shmring", "demo"), demo.build_parser())]
    assert {p[-1] for p, _ in parsers} >= {"shmring", "ls", "info", "top", "rm", "gc", "demo"}
    for path, ap in parsers:
        for action in ap._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{' '.join(path)}: {action.option_strings or action.dest} has no help text"


def test_bare_shmring_prints_help():
    r = run_cli()
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: shmring") and "top" in r.stdout and "demo" in r.stdout


def test_ls_json_into_a_closed_pipe_exits_quietly(ring_name, rings):
    """The reader is gone before the first write: EPIPE at once, no traceback."""
    rings.create(ring_name, np.int64, 8)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = run([sys.executable, "-m", "shmring", "ls", "--json"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert r.stderr == "" and r.returncode == 141


def test_ls_json_piped_into_head(ring_names, rings):
    for _ in range(3):
        rings.create(ring_names(), np.int64, 8)
    r = run(f"{sys.executable} -m shmring ls --json | head -n 2", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("[")


def test_ls_shows_age_and_overwrite_fill_as_retained_records(ring_names, rings):
    over, block = ring_names(), ring_names()
    o = rings.create(over, np.int64, 4, mode="broadcast", overflow="overwrite")
    b = rings.create(block, np.int64, 8, mode="broadcast")
    handles = [o.consumer(), b.consumer()]
    o.producer().push_many(np.arange(10))
    b.producer().push_many(np.arange(3))
    rows = {r["name"]: r for r in json.loads(run_cli("ls", "--json").stdout)}
    assert rows[over]["available"] == 10 and rows[over]["retained"] == 4
    assert rows[block]["retained"] == 3
    assert 0 <= rows[over]["age"] < 120
    lines = run_cli("ls").stdout.splitlines()
    header = lines[0].split()
    assert header == ["NAME", "KIND", "MODE", "SIZE", "FILL", "PRODUCER", "CONS", "AGE", "DTYPE"]
    row = next(ln for ln in lines if ln.split()[0] == over)
    assert "4/4 (6 overwritten)" in row
    assert re.search(r"\s\d+s\s+int64$", row), row
    # columns line up: every cell of a row ends where its header ends (right-aligned numbers)
    cap_end = lines[0].index("SIZE") + 4
    for ln in lines[1:]:
        if ln.split()[0] in (over, block):
            assert ln[cap_end - 1].isdigit() and ln[cap_end] == " "
    assert len(handles) == 2


def test_info_shows_retained_and_age(ring_name, rings):
    ring = rings.create(ring_name, np.int64, 4, mode="broadcast", overflow="overwrite")
    cons = ring.consumer()
    ring.producer().push_many(np.arange(9))
    out = run_cli("info", ring_name).stdout
    assert re.search(r"^retained\s+4$", out, re.M) and re.search(r"^available\s+9$", out, re.M)
    assert re.search(r"^age\s+\d+s$", out, re.M)
    assert cons.popped == 0


# ---- the demo -----------------------------------------------------------------------

def test_demo_help_lists_only_options_that_work():
    r = run_cli("demo", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: shmring demo")
    listed = set(re.findall(r"(--[a-z][a-z-]+)", r.stdout)) - {"--help"}
    flags = {"--messages", "--board", "--queue"}
    assert listed == {"--consumers", "--records", "--queue-records", "--plot", "--seconds"} | flags
    ap = demo.build_parser()
    for opt in listed - flags:  # each one parses
        ap.parse_args([opt, "x.png" if opt == "--plot" else "5"])
    for opt in flags:
        assert getattr(ap.parse_args([opt]), opt[2:])
    r = run_cli("demo", "--speed", "5")
    assert r.returncode == 2 and "unrecognized arguments: --speed" in r.stderr
    r = run_cli("demo", "--messages", "--board")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    r = run_cli("demo", "--board", "--plot", "x.png")
    assert r.returncode == 2 and "does not go with --board" in r.stderr
    r = run_cli("demo", "--board", "--seconds", "0")
    assert r.returncode == 2 and "must be between 0.05 and 3600 seconds" in r.stderr


def _small_demo(*extra: str) -> subprocess.CompletedProcess:
    return run_cli("demo", "--consumers", "2", "--records", "20000", "--queue-records", "3000", *extra,
                   timeout=240)


def test_demo_runs_and_checks_delivery():
    """A small real run: every phase line says exactly once with the per-consumer
    shares adding up, and the lines and the summary table are aligned."""
    r = _small_demo()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no warnings
    lines = r.stdout.splitlines()
    phases = [ln for ln in lines if "ticks/s" in ln and "exactly once" in ln]
    assert len(phases) == 4
    for ln in phases:
        m = re.search(r"exactly once \((\d+)\+(\d+)\)", ln)
        total = int(re.search(r"([\d,]+) ticks ", ln).group(1).replace(",", ""))
        assert m and int(m.group(1)) + int(m.group(2)) == total
    # the phase lines' columns line up
    assert len({ln.index(" ticks ") for ln in phases}) == 1
    table = lines[lines.index("summary (ticks/s, higher is better)") + 1:][:3]
    ends = [[m.end() for m in re.finditer(r"\S+(?: M)?", ln)][-3:] for ln in table]
    assert ends[0] == ends[1] == ends[2], table


def test_demo_chart(tmp_path):
    png = tmp_path / "demo.png"
    r = _small_demo("--plot", str(png))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert f"chart saved to {png}" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_demo_plot_without_matplotlib_says_what_to_install(tmp_path):
    """matplotlib hidden from the interpreter: a clear message before any work."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "matplotlib.py").write_text("raise ImportError('hidden for the test')\n")
    env = dict(os.environ, PYTHONPATH=str(block))
    r = run_cli("demo", "--plot", str(tmp_path / "x.png"), env=env, timeout=60)
    assert r.returncode == 1 and "pip install 'shmring[plot]'" in r.stderr
    assert "ticks/s" not in r.stdout


# ---- the demo's feature tours ------------------------------------------------------------

def _tour(popen, flag: str, check_stderr: bool = True) -> subprocess.CompletedProcess:
    """The demo with one tour flag, in its own session (killed with its workers at teardown)."""
    args = [sys.executable, "-m", "shmring", "demo", flag, "--consumers", "2", "--seconds", "0.4"]
    p = popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    r = subprocess.CompletedProcess(args, p.returncode, out, err)
    if check_stderr:
        assert r.stderr == "", r.stderr  # no warnings, no traceback
    return r


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def test_demo_messages_counts_add_up(popen):
    r = _tour(popen, "--messages")
    assert r.returncode == 0
    assert r.stdout.startswith("shmring demo --messages: 1 producer -> 2 consumer processes")
    phases = re.findall(r"^  (.+?)\s{2,}([\d,]+) messages\s+([\d,]+) msg/s\s+([\d,.]+) MB/s  "
                        r"exactly once \((\d+)\+(\d+)\)$", r.stdout, re.M)
    assert [p[0] for p in phases] == ["shmring, pop() (one copy out)", "shmring, view() (zero-copy)",
                                      "multiprocessing.Queue, get()"], r.stdout
    rates = {}
    for label, n, rate, mbs, a, b in phases:
        assert _num(n) > 0 and int(a) + int(b) == _num(n)
        # MB/s is the message rate times the 300 KiB frame
        want = _num(rate) * 307200 / 1e6
        assert abs(float(mbs.replace(",", "")) - want) <= 0.005 * want + 0.1
        rates[label] = _num(rate)
    m = re.search(r"speed-up over multiprocessing.Queue: pop\(\) ([\d.]+)x, view\(\) ([\d.]+)x", r.stdout)
    mpq = rates["multiprocessing.Queue, get()"]
    # the printed ratios come from unrounded rates: they agree with the rounded ones closely
    assert abs(float(m.group(1)) - rates["shmring, pop() (one copy out)"] / mpq) < 0.06 + 0.01 * float(m.group(1))
    assert abs(float(m.group(2)) - rates["shmring, view() (zero-copy)"] / mpq) < 0.06 + 0.01 * float(m.group(2))


def test_demo_board_versions_add_up_to_the_writes(popen):
    r = _tour(popen, "--board")
    assert r.returncode == 0
    out = r.stdout
    writes = _num(re.search(r"^  board writes\s+([\d,]+) writes", out, re.M).group(1))
    m = re.search(r"^  board reads \(all readers\)\s+([\d,]+) reads\s+[\d,]+ /s  \((\d+)\+(\d+)\)$", out, re.M)
    reads = _num(m.group(1))
    assert reads > 0 and int(m.group(2)) + int(m.group(3)) == reads
    m = re.search(r"^  versions on the board\s+([\d,]+) in all \((.*)\)$", out, re.M)
    per_key = [int(kv.split(":")[1]) for kv in m.group(2).split()]
    assert len(per_key) == 8 and sum(per_key) == _num(m.group(1)) == writes
    # the writer goes round the keys: no key is more than one write ahead of another
    assert max(per_key) - min(per_key) <= 1
    assert f"checked: {reads:,} reads, 0 torn, versions never went back, versions add up to the {writes:,} writes" in out


def test_demo_queue(popen):
    r = _tour(popen, "--queue", check_stderr=False)
    if not hasattr(shmring, "Queue"):
        assert r.returncode == 1 and r.stderr.strip() == "--queue: this version of shmring has no Queue"
        return
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = re.findall(r"^  (shmring.Queue|multiprocessing.Queue)\s+([\d,]+) items\s+([\d,]+) items/s  "
                      r"exactly once, in order \((\d+)\+(\d+)\)$", r.stdout, re.M)
    assert [row[0] for row in rows] == ["shmring.Queue", "multiprocessing.Queue"], r.stdout
    for _, n, _rate, a, b in rows:
        assert _num(n) > 0 and int(a) + int(b) == _num(n)
    assert re.search(r"speed-up over multiprocessing.Queue: [\d.]+x", r.stdout)


# ---- the README -----------------------------------------------------------------------

def test_readme_commands_use_the_venv_and_list_demo():
    text = open(os.path.join(ROOT, "README.md")).read()
    commands = re.findall(r"`([^`\n]*python[^`\n]*)`", text)
    commands += [ln for block in re.findall(r"```sh\n(.*?)```", text, re.S) for ln in block.splitlines()]
    for cmd in commands:
        for m in re.finditer(r"(\S*)python3?\s+(?:-m\s+pytest|benchmarks/)", cmd):
            assert m.group(1) == ".venv/bin/", f"README command not run with the venv's python: {cmd!r}"
    assert "shmring demo" in text and "shmring top" in text
