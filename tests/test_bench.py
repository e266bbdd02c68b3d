"""bench/run on a few generated wheels: every step runs, and its figures land in the one table
beside their floors or peers (so the harness cannot rot between the runs that matter)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import run
from tests.wheelfactory import build_wheel

MAIN = Path(__file__).resolve().parents[1]


def _wheels(folder: Path) -> Path:
    """Five projects in a chain (e0 needs e1, …) and one wheel of several UnixFS chunks."""
    folder.mkdir()
    for number in range(5):
        requires = [f"e{number + 1}>=1"] if number < 4 else []
        build_wheel(folder, f"e{number}", "1.0", requires_dist=requires)
    blob = random.Random(9).randbytes(400_000).hex()  # deflates to about 400 kB
    build_wheel(folder, "big", "1.0", modules={"big/__init__.py": f"DATA = {blob!r}\n"})
    return folder


def test_bench_run_prints_one_table_of_every_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = _wheels(tmp_path / "wheels")
    out = tmp_path / "out"
    code = run.main([
        "--wheels", str(wheels), "--tiny", "30", "--closure", "3", "--seconds", "1",
        "--connections", "4", "--repeat", "1", "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| step " in printed and "| ratio " in printed
    results = json.loads((out / "results.json").read_text())
    assert results["wheels"] == 6
    assert not [n for n in results["notes"] if "failed" in n], results["notes"]
    rows: dict[str, dict] = {}
    for row in results["rows"]:
        rows.setdefault(row["step"], row)  # the first of a step's rows holds its peak memory
    for step in ("check, cold", "check, warm", "build, cold", "build, warm, beyond start-up",
                 "eval, 6 wheels, empty store", "eval, 30 tiny projects",
                 "gc, everything rooted", "import into an empty store, beyond start-up",
                 "store verify, beyond start-up", "fetch from ipwhl serve, beyond start-up"):
        assert rows[step]["ratio"] > 0, step
        assert rows[step]["peak_mib"] > 5, step  # a Python process, measured on its own
        assert rows[step]["cpu"] > 0, step
    overlays = [step for step in rows if step.startswith("overlay, ")]
    assert len(overlays) == 2 and "fresh copy" in overlays[1], overlays  # edited in place, copy
    assert any(step.startswith("export (") for step in rows)
    assert rows["build, cold"]["floor_name"] == "persist floor"
    assert 1 < rows["store size (everything rooted)"]["ratio"] < 1.5
    assert rows["gateway ?format=car, one client"]["ratio"] > 0
    if shutil.which("wrk") and shutil.which("nginx"):
        gateway = [row for step, row in rows.items() if step.startswith("gateway ")
                   and "?format=car" not in step]
        assert len(gateway) == 4 and all(row["ratio"] > 0 for row in gateway)
    else:
        assert any("gateway skipped" in note for note in results["notes"])
    if shutil.which("nginx"):
        installs = [row for step, row in rows.items() if step.startswith(("pip ", "uv "))]
        assert installs and all(row["floor_name"] == "same from nginx" for row in installs)
        assert all(step.endswith(", 5 projects") for step in rows
                   if step.startswith(("pip ", "uv ")))


def test_bench_run_is_one_command() -> None:
    done = subprocess.run([str(MAIN / "bench" / "run"), "--help"], capture_output=True,
                          text=True, check=False, env={"PATH": "/usr/bin:/bin",
                                                       "PYTHON": run.sys.executable})
    assert done.returncode == 0, done.stderr
    assert "each figure beside its floor or peer" in done.stdout
