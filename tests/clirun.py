"""Run `python -m ipwhl` in a child process with stderr on a real terminal (a pty) or a pipe.

    code, out, err = run_ipwhl(["check", "release.toml"], on_terminal=True, cwd=tmp_path)

stdout is always a pipe (results are read from it); the environment is the test's, without
NO_COLOR unless `env` sets it, and with TERM=xterm and 100 columns.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

__all__ = ["run_ipwhl"]

REPO = Path(__file__).resolve().parents[1]


def run_ipwhl(argv: list[str], *, on_terminal: bool, cwd: Path,
              env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ipwhl run with `argv`."""
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update(PYTHONPATH=str(REPO), TERM="xterm", COLUMNS="100", **(env or {}))
    command = [sys.executable, "-m", "ipwhl", *argv]
    if not on_terminal:
        done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True,
                              check=False, timeout=timeout)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(command, cwd=cwd, env=environ, stdout=subprocess.PIPE,
                                   stderr=slave)
        os.close(slave)
        chunks = []
        while select.select([master], [], [], timeout)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child is gone and the pty closed
                break
            if not data:
                break
            chunks.append(data)
        process.wait(timeout=timeout)
        out = process.stdout.read().decode() if process.stdout else ""
        return process.returncode, out, b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(master)
