"""ipwhl's benchmarks in one table: each figure beside its floor or peer, measured in the same run.

    bench/run [--wheels DIR ...] [--limit 300] [--repeat 2] [--tiny 10000] [--closure 40]
              [--seconds 5] [--only STEP ...] [--out bench/out/run]

Steps (--only picks some): check, build, overlay, eval, gc (with store size and verify), car
(export, import, the gateway's CAR, fetch from it), gateway, install.
Floors, on the same files, page cache warm (see ../shared/README.md "Benchmark floors"):
- hash floor: read every byte once and sha256 it, one core; "all cores": the files split over
  one thread per core (hashlib drops the GIL);
- persist floor: read, sha256, write a temporary file on the store's file system, fsync, rename,
  one file after another; steps that put bytes into the store are held against it;
- start-up: `ipwhl --version`; warm rebuilds and overlays count only the time beyond it.
Peers: nginx (serving the tree `ipwhl get` writes) for the gateway, and for pip and uv resolving
and installing a closure of real wheels. Every ratio is a cost ratio: our time over the floor's
(for rates, the peer's rate over ours), so 1.00x is as fast as the floor and more is slower.
The peak resident memory of each child process (its own and its children's) comes from wait4,
of a server from /proc (VmHWM). The figures of the former bench/gateway.py, car.py and gc.py are
steps here; bench/overlay.py remains for its study of overlays across release sizes. Not a
test (tests/test_bench.py runs it on a few tiny wheels so it cannot rot): it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import genrelease  # noqa: E402

DEFAULT_WHEELS = [Path("/opt/pypi/files"), Path("/opt/pypi-more/files")]
STEPS = ("check", "build", "overlay", "eval", "gc", "car", "gateway", "install")
_READ = 1 << 20
STORE_PREFIX = "store-"  # bench stores under --out, removed at the start and end of a run


# -- running children --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished child process: wall time, exit code, output and peak memory (MiB)."""

    seconds: float
    code: int
    stdout: str
    stderr: str
    peak_mib: float
    cpu: float  # user + system seconds, children included


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "IPWHL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


# A child forked from this (large) process would count our memory as its own (Linux keeps the
# high-water mark across exec), so a fresh small Python forks it, times it and reads wait4.
_SHIM = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {cpu}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def child(command: list[str], *, env: dict[str, str] | None = None, check: bool = True,
          cwd: Path | None = None) -> Run:
    """Run `command` to its end: its wall time, and its peak RSS (its own and its children's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as measured:
        code = subprocess.run([sys.executable, "-I", "-S", "-c", _SHIM, measured.name, *command],
                              stdout=out, stderr=err, env=env or _env(), cwd=cwd).returncode
        seconds, peak_kib, cpu = measured.read().split()
        out.seek(0)
        err.seek(0)
        done = Run(float(seconds), code, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"), int(peak_kib) / 1024, float(cpu))
    if check and done.code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.code}):\n{done.stderr[-4000:]}")
    return done


def run_ipwhl(*args: str, store: Path | None = None, check: bool = True) -> Run:
    """`python -m ipwhl ARGS -q [--store STORE]` as a child; its page cache effects stay."""
    command = [sys.executable, "-m", "ipwhl", *args, "-q"]
    if store is not None:
        command += ["--store", str(store)]
    os.sync()  # writes of an earlier step still being flushed would slow this one down
    return child(command, check=check)


def ipwhl(*args: str, store: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(seconds, completed process) of `ipwhl ARGS --store STORE -q` (bench/overlay.py's API)."""
    done = run_ipwhl(*args, store=store)
    return done.seconds, subprocess.CompletedProcess(args, done.code, done.stdout, done.stderr)


def startup() -> float:
    """`ipwhl --version`, best of five."""
    return min(child([sys.executable, "-m", "ipwhl", "--version"]).seconds for _ in range(5))


# -- floors -------------------------------------------------------------------------------------


def wheel_files(release_dir: Path) -> list[Path]:
    """The wheel files a generated release's declarations name (file: sources)."""
    files = []
    for declaration in sorted((release_dir / "pkgs").glob("*/*.toml")):
        source = declaration.read_text().split('"')[1]
        files.append(Path(source.removeprefix("file://")))
    return files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def hash_floor(files: list[Path]) -> float:
    """Read every byte once and sha256 it, one core."""
    started = time.perf_counter()
    for path in files:
        _sha256_file(path)
    return time.perf_counter() - started


def hash_floor_all_cores(files: list[Path]) -> float:
    """The hash floor with one thread per core, largest files first."""
    ordered = sorted(files, key=lambda p: -p.stat().st_size)
    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_sha256_file, ordered))
    return time.perf_counter() - started


def persist_floor(files: list[Path], scratch: Path) -> float:
    """Read, sha256, write a temporary file, fsync, rename: one file after another."""
    scratch.mkdir(parents=True, exist_ok=True)
    os.sync()
    started = time.perf_counter()
    for index, path in enumerate(files):
        digest = hashlib.sha256()
        temp = scratch / f"tmp-{index}"
        with open(path, "rb") as source, open(temp, "wb") as target:
            while chunk := source.read(_READ):
                digest.update(chunk)
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, scratch / digest.hexdigest())
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


def read_floor(files: list[Path]) -> float:
    """Read every byte once, nothing else."""
    started = time.perf_counter()
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(_READ):
                pass
    return time.perf_counter() - started


def warm(files: list[Path]) -> None:
    """Read the files once so the floors and the steps meet a warm page cache alike."""
    read_floor(files)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_floor(release_dir: Path) -> float:
    """Read and parse every declaration with tomli: the least an evaluation must do."""
    import tomli

    started = time.perf_counter()
    for path in (release_dir / "pkgs").rglob("*.toml"):
        tomli.loads(path.read_text())
    return time.perf_counter() - started


def store_read_floor(store: Path) -> float:
    """List the store and read every file but the objects (what gc could possibly read)."""
    started = time.perf_counter()
    for kind in ("layouts", "blocks", "records", "sources", "roots"):
        for folder, _dirs, names in os.walk(store / kind):
            for name in names:
                with open(os.path.join(folder, name), "rb") as handle:
                    handle.read()
    with contextlib.suppress(FileNotFoundError):
        for _folder, _dirs, _names in os.walk(store / "objects"):
            pass
    return time.perf_counter() - started


# -- the table ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure beside its floor or peer: a cost ratio (ours over the floor's)."""

    step: str
    value: float
    unit: str  # "s", "MB", "MiB" (costs) or "req/s", "MB/s" (rates)
    floor_name: str = ""
    floor_value: float | None = None
    target: str = ""
    peak_mib: float | None = None
    peer_peak_mib: float | None = None
    # CPU seconds (user + system) of the step and of its floor: on a shared machine these
    # vary less than wall time, and show whether a step is bound by the CPU or by the disk.
    cpu: float | None = None
    floor_cpu: float | None = None

    @property
    def ratio(self) -> float | None:
        if not self.floor_value or not self.value:
            return None
        if self.unit.endswith("/s"):
            return self.floor_value / self.value  # a rate: the peer's over ours
        return self.value / self.floor_value

    def cells(self) -> list[str]:
        value = _shown(self.value, self.unit)
        floor = ""
        if self.floor_value is not None:
            floor = f"{self.floor_name} {_shown(self.floor_value, self.unit)}"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else ""
        peak = f"{self.peak_mib:.0f}" if self.peak_mib is not None else ""
        if self.peer_peak_mib is not None:
            peak += f" ({self.peer_peak_mib:.0f})"
        cpu = f"{self.cpu:.2f}" if self.cpu is not None else ""
        if self.floor_cpu is not None:
            cpu += f" ({self.floor_cpu:.2f})"
        return [self.step, value, floor, ratio, self.target, peak, cpu]


def _shown(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.1f} {unit}" if unit == "MB" else f"{value:,.0f} {unit}"


class Table:
    """Rows printed as they come, and all together at the end."""

    HEADER = ["step", "figure", "floor or peer (same run)", "ratio", "target", "peak MiB",
              "CPU s (floor)"]

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("  " + " | ".join(row.cells()), flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def render(self) -> str:
        lines = [self.HEADER, *(row.cells() for row in self.rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.HEADER))]
        out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
               for line in lines]
        out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(out + [f"- {note}" for note in self.notes])


# -- steps --------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the steps share: the release, its wheels, the store built from it, the floors."""

    args: argparse.Namespace
    out: Path
    table: Table
    release: Path
    files: list[Path]
    start: float
    floors: dict[str, float]
    store: Path
    floors_cpu: dict[str, float]
    root: str = ""
    cold_build: float = 0.0
    stores: int = 0

    def fresh_store(self, name: str) -> Path:
        """A new store folder, deleted only when the benchmark ends.

        Deleting a store just before a cold run would time ext4 rather than ipwhl: for a few
        seconds (minutes while its inode tables are dirty) the inodes of deleted files are
        skipped when new ones are allocated, and a build makes ~3,600 files (perf of such a
        run: 35% of its CPU in find_inode_bit and recently_deleted; system time 1.8 s → 6 s)."""
        self.stores += 1
        return self.out / f"{STORE_PREFIX}{name}-{self.stores}"


def _best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def step_check(ctx: Context) -> None:
    runs = []
    for _ in range(ctx.args.repeat):
        store = ctx.fresh_store("check")
        runs.append(run_ipwhl("check", str(ctx.release), store=store))
    cold = _best(runs)
    f = ctx.floors
    c = ctx.floors_cpu
    ctx.table.add(Row("check, cold", cold.seconds, "s", "persist floor", f["persist"],
                      "<= 1.2x", cold.peak_mib, cpu=cold.cpu, floor_cpu=c["persist"]))
    ctx.table.add(Row("check, cold", cold.seconds, "s", "sha256, one core", f["hash"],
                      "<= 1.5x (issue 2)", floor_cpu=c["hash"]))
    ctx.table.add(Row("check, cold", cold.seconds, "s", "sha256, all cores", f["hash_all"]))
    warm_run = _best([run_ipwhl("check", str(ctx.release), store=store) for _ in range(3)])
    ctx.table.add(Row("check, warm", warm_run.seconds, "s", "cold check", cold.seconds,
                      "<= 0.05x (issue 2)", warm_run.peak_mib, cpu=warm_run.cpu))


def step_build(ctx: Context) -> None:
    runs = []
    for _ in range(ctx.args.repeat):
        ctx.store = ctx.fresh_store("build")
        runs.append(run_ipwhl("build", str(ctx.release), store=ctx.store))
    cold = _best(runs)
    ctx.root = cold.stdout.strip()
    ctx.cold_build = cold.seconds
    f = ctx.floors
    c = ctx.floors_cpu
    ctx.table.add(Row("build, cold", cold.seconds, "s", "persist floor", f["persist"],
                      "<= 1.2x", cold.peak_mib, cpu=cold.cpu, floor_cpu=c["persist"]))
    ctx.table.add(Row("build, cold", cold.seconds, "s", "sha256, one core", f["hash"],
                      "<= 1.5x (issue 3)", floor_cpu=c["hash"]))
    ctx.table.add(Row("build, cold", cold.seconds, "s", "sha256, all cores", f["hash_all"]))
    again = _best([run_ipwhl("build", str(ctx.release), store=ctx.store) for _ in range(3)])
    if again.stdout.strip() != ctx.root:
        raise SystemExit(f"a warm rebuild gave {again.stdout.strip()}, not {ctx.root}")
    ctx.table.add(Row("build, warm, beyond start-up", again.seconds - ctx.start, "s",
                      "cold build beyond start-up", cold.seconds - ctx.start,
                      "<= 0.02x", again.peak_mib, cpu=again.cpu))


def _ensure_built(ctx: Context) -> None:
    if not ctx.root:
        ctx.store = ctx.fresh_store("build")
        done = run_ipwhl("build", str(ctx.release), store=ctx.store)
        ctx.root, ctx.cold_build = done.stdout.strip(), done.seconds


def step_overlay(ctx: Context) -> None:
    from bench import overlay

    _ensure_built(ctx)
    projects = overlay.pick_projects(ctx.release, 1)
    if not projects:
        ctx.table.note("overlay skipped: no project can be bumped without breaking a dependent")
        return
    # As a curator works: one declaration edited in the tree the release was built from.
    undo = overlay.bump_in_place(ctx.release, projects[0], ctx.out / "bumped-wheels")
    try:
        done = run_ipwhl("build", str(ctx.release), "--on-top-of", ctx.root, store=ctx.store)
    finally:
        undo()
    ctx.table.add(Row(f"overlay, {projects[0]} upgraded, beyond start-up",
                      done.seconds - ctx.start, "s", "cold build beyond start-up",
                      ctx.cold_build - ctx.start, "<= 0.02x (issue 4)", done.peak_mib,
                      cpu=done.cpu))
    # As CI works: a fresh copy of the declarations, which no cache in the store has seen.
    bumped = overlay.bump(ctx.release, projects[0], ctx.out / "bumped")
    done = run_ipwhl("build", str(bumped), "--on-top-of", ctx.root, store=ctx.store)
    ctx.table.add(Row("overlay, the same, declarations in a fresh copy", done.seconds - ctx.start,
                      "s", "cold build beyond start-up", ctx.cold_build - ctx.start, "",
                      done.peak_mib, cpu=done.cpu))


def step_eval(ctx: Context) -> None:
    scratch = ctx.out / "store-eval"
    shutil.rmtree(scratch, ignore_errors=True)
    done = run_ipwhl("eval", str(ctx.release), store=scratch)
    ctx.table.add(Row(f"eval, {len(ctx.files)} wheels, empty store", done.seconds, "s",
                      "tomli of every declaration", parse_floor(ctx.release.parent), "",
                      done.peak_mib, cpu=done.cpu))
    if ctx.args.tiny:
        tiny = genrelease.tiny(ctx.out / f"tiny{ctx.args.tiny}", ctx.args.tiny)
        done = run_ipwhl("eval", str(tiny), store=scratch)
        ctx.table.add(Row(f"eval, {ctx.args.tiny} tiny projects", done.seconds, "s",
                          "tomli of every declaration", parse_floor(tiny.parent),
                          "< 10 s (issue 2)", done.peak_mib, cpu=done.cpu))
    shutil.rmtree(scratch, ignore_errors=True)


def _store_bytes(store: Path) -> int:
    total = 0
    for kind in ("objects", "layouts", "blocks", "records", "sources", "roots"):
        for folder, _dirs, names in os.walk(store / kind):
            total += sum(os.stat(os.path.join(folder, name)).st_size for name in names)
    return total


def step_gc(ctx: Context) -> None:
    _ensure_built(ctx)
    wheel_bytes = sum(path.stat().st_size for path in ctx.files)
    ctx.table.add(Row("store size (everything rooted)", _store_bytes(ctx.store) / 1e6, "MB",
                      "the wheels", wheel_bytes / 1e6, "<= 1.05x (issue 5)"))
    runs = [run_ipwhl("gc", store=ctx.store) for _ in range(3)]
    floor = min(store_read_floor(ctx.store) for _ in range(3))
    done = _best(runs)
    ctx.table.add(Row("gc, everything rooted", done.seconds, "s",
                      "read every file but objects", floor, "", done.peak_mib, cpu=done.cpu))
    objects = sorted((ctx.store / "objects").glob("*/*"))
    warm(objects)
    verified = run_ipwhl("store", "verify", store=ctx.store)
    ctx.table.add(Row("store verify, beyond start-up", verified.seconds - ctx.start, "s",
                      "sha256 of the objects, one core", hash_floor(objects), "",
                      verified.peak_mib, cpu=verified.cpu))


def _read_hash(path: Path) -> float:
    started = time.perf_counter()
    _sha256_file(path)
    return time.perf_counter() - started


def step_car(ctx: Context) -> None:
    _ensure_built(ctx)
    car = ctx.out / "release.car"
    car.unlink(missing_ok=True)
    exported = run_ipwhl("export", ctx.root, "-o", str(car), store=ctx.store)
    size = car.stat().st_size
    warm([car])
    ctx.table.add(Row(f"export ({size / 1e6:,.0f} MB CAR), beyond start-up",
                      exported.seconds - ctx.start, "s", "read + sha256 of the CAR",
                      _read_hash(car), "", exported.peak_mib, cpu=exported.cpu))
    imported = run_ipwhl("import", str(car), store=ctx.fresh_store("import"))
    persisted = persist_floor([car], ctx.out / "scratch-car")
    ctx.table.add(Row("import into an empty store, beyond start-up",
                      imported.seconds - ctx.start, "s", "persist floor of the CAR", persisted,
                      "", imported.peak_mib, cpu=imported.cpu))
    port = free_port()
    server = Server([sys.executable, "-m", "ipwhl", "serve", "--store", str(ctx.store),
                     "--port", str(port)], f"http://127.0.0.1:{port}")
    try:
        wait_for(server.url + "/")
        started = time.perf_counter()
        with urllib.request.urlopen(f"{server.url}/ipfs/{ctx.root}?format=car") as response:
            got = 0
            while chunk := response.read(_READ):
                got += len(chunk)
        streamed = time.perf_counter() - started
        if got != size:
            raise SystemExit(f"the gateway's CAR has {got} bytes, ipwhl export wrote {size}")
        ctx.table.add(Row("gateway ?format=car, one client", streamed, "s",
                          "read + sha256 of the CAR", _read_hash(car)))
        fetched = run_ipwhl("fetch", ctx.root, "--from", server.url,
                            store=ctx.fresh_store("fetch"))
        ctx.table.add(Row("fetch from ipwhl serve, beyond start-up", fetched.seconds - ctx.start,
                          "s", "persist floor of the CAR", persisted, "", fetched.peak_mib,
                          cpu=fetched.cpu))
    finally:
        server.stop()
    car.unlink()


# -- servers: the gateway beside nginx ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str) -> None:
    for _ in range(400):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def _tree_peak_kib(pid: int) -> int:
    """The sum of VmHWM (peak RSS) over a process and its descendants, from /proc (Linux)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, ValueError):
        return total
    return total + sum(_tree_peak_kib(int(c)) for c in children)


def _tree_cpu(pid: int) -> float:
    """User + system seconds of a process and its descendants so far, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError):
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_tree_cpu(int(c)) for c in children)


class Server:
    """A server child; `stop` ends it and returns its peak memory (MiB, workers included)."""

    def __init__(self, command: list[str], url: str) -> None:
        self.process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.url = url
        self.peak_mib = 0.0

    def cpu(self) -> float:
        return _tree_cpu(self.process.pid)

    def stop(self) -> float:
        if self.process.poll() is None:
            self.peak_mib = _tree_peak_kib(self.process.pid) / 1024
            self.process.terminate()
            self.process.wait(timeout=30)
        return self.peak_mib


@contextlib.contextmanager
def servers(ctx: Context) -> Iterator[tuple[Server, Server, Path]]:
    """Our gateway over the store and nginx over the tree `ipwhl get` writes; (ours, nginx)."""
    _ensure_built(ctx)
    work = Path(tempfile.mkdtemp(prefix="ipwhl-bench-"))
    work.chmod(0o755)  # nginx's workers may run as another user
    tree = work / "tree"
    run_ipwhl("get", ctx.root, "-o", str(tree), store=ctx.store)
    ours_port, nginx_port = free_port(), free_port()
    (work / "nginx.conf").write_text(f"""
worker_processes {os.cpu_count() or 1};
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  types {{ text/html html; application/octet-stream whl metadata; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location /ipfs/{ctx.root}/ {{ alias {tree}/; }}
  }}
}}
""")
    base = f"/ipfs/{ctx.root}/"
    ours = Server([sys.executable, "-m", "ipwhl", "serve", "--store", str(ctx.store),
                   "--port", str(ours_port)], f"http://127.0.0.1:{ours_port}{base}")
    nginx = Server(["nginx", "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                   f"http://127.0.0.1:{nginx_port}{base}")
    try:
        wait_for(ours.url)
        wait_for(nginx.url + "index.html")
        yield ours, nginx, tree
    finally:
        ours.stop()
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, str]:
    """(requests/s, MB/s, a note: p99 latency and errors) from wrk."""
    done = child(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
                  url])
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", done.stdout)
    if rate_match is None or transfer is None:
        raise SystemExit(f"cannot read wrk's output:\n{done.stdout}")
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[transfer.group(2)]
    latency = re.search(r"99%\s+(\S+)", done.stdout)
    note = f"p99 {latency.group(1) if latency else '?'}"
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", done.stdout)
    if errors:
        note += f"; {errors.group(0)}"
    return float(rate_match.group(1)), float(transfer.group(1)) * scale * 1.048576, note


def step_gateway(ctx: Context) -> None:
    if not (shutil.which("wrk") and shutil.which("nginx")):
        ctx.table.note("gateway skipped: needs wrk and nginx (apt-get install wrk nginx-light)")
        return
    seconds, connections = ctx.args.seconds, ctx.args.connections
    with servers(ctx) as (ours, nginx, tree):
        page = sorted(tree.glob("simple/*/index.html"))[0].parent.relative_to(tree).as_posix()
        wheels = sorted(tree.glob("simple/*/*.whl"), key=lambda p: p.stat().st_size)
        # A wheel of a few MB: big enough that bytes, not requests, are what is measured.
        wheel = min(wheels, key=lambda p: abs(p.stat().st_size - 4_000_000))
        targets = [
            ("small page (simple/<project>/)", f"{page}/", "req/s"),
            ("root page (index.html)", "", "req/s"),
            (f"wheel ({wheel.stat().st_size / 1e6:.1f} MB)",
             wheel.relative_to(tree).as_posix(), "MB/s"),
        ]
        for name, path, unit in targets:
            before = nginx.cpu()
            theirs = wrk(nginx.url + path, seconds, connections)
            theirs_cpu, before = nginx.cpu() - before, ours.cpu()
            mine = wrk(ours.url + path, seconds, connections)
            mine_cpu = ours.cpu() - before
            pick = 0 if unit == "req/s" else 1
            ctx.table.add(Row(f"gateway {name}, {connections} connections", mine[pick], unit,
                              "nginx", theirs[pick], cpu=mine_cpu, floor_cpu=theirs_cpu))
            ctx.table.note(f"gateway {name}: ipwhl {mine[2]}, nginx {theirs[2]}")
        our_peak, nginx_peak = ours.stop(), nginx.stop()
    ctx.table.add(Row("gateway peak memory (after every wrk run)", our_peak, "MiB", "nginx",
                      nginx_peak))


def pick_closure(release: Path, size: int, max_wheel_bytes: int = 8_000_000
                 ) -> tuple[list[str], set[str]]:
    """Projects to ask pip for whose closure (this interpreter's markers) has about `size`
    projects, of wheels no larger than `max_wheel_bytes`: (requested, closure)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from ipwhl.build import load_plan

    plan = load_plan(release)
    environment = default_environment()
    needs: dict[str, list[Requirement]] = {}
    wheel_bytes: dict[str, int] = {}
    for project in plan.projects:
        declaration = project.declarations[0]
        needs[project.project] = [Requirement(t) for t in declaration.dependency_texts]
        source = Path(urllib.parse.urlsplit(declaration.source_url()).path)
        wheel_bytes[project.project] = source.stat().st_size if source.exists() else 0

    def closure(name: str) -> set[str]:
        seen: set[tuple[str, tuple[str, ...]]] = set()
        pending = [(name, ())]
        while pending:
            key = pending.pop()
            if key in seen or key[0] not in needs:
                continue
            seen.add(key)
            for requirement in needs[key[0]]:
                extras = key[1] or ("",)
                if requirement.marker is None or any(
                    requirement.marker.evaluate({**environment, "extra": e}) for e in extras
                ):
                    pending.append((canonicalize_name(requirement.name),
                                    tuple(sorted(requirement.extras))))
        return {n for n, _ in seen}

    closures = {name: closure(name) for name in needs}
    requested: list[str] = []
    chosen: set[str] = set()
    for name in sorted(closures, key=lambda n: (-len(closures[n]), n)):
        if len(chosen) >= size:
            break
        if closures[name] <= chosen:
            continue
        if any(wheel_bytes[p] > max_wheel_bytes for p in closures[name]):
            continue
        requested.append(name)
        chosen |= closures[name]
    return requested, chosen


def step_install(ctx: Context) -> None:
    if not shutil.which("nginx"):
        ctx.table.note("pip and uv skipped: needs nginx (apt-get install nginx-light)")
        return
    requested, closure = pick_closure(ctx.release, ctx.args.closure)
    ctx.table.note(f"pip and uv install {len(requested)} projects whose closure is "
                   f"{len(closure)} projects: {' '.join(requested)}")
    work = ctx.out / "install"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "requirements.in").write_text("".join(f"{name}\n" for name in requested))
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    have_uv = Path(uv).exists()
    env = _env()
    env["PIP_CONFIG_FILE"] = os.devnull
    env["UV_NO_CONFIG"] = "1"

    def venv(name: str) -> Path:
        target = work / name
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
        return target / "bin" / "python"

    def pip(index: str, python: Path, *extra: str) -> Run:
        return child([sys.executable, "-m", "pip", "--isolated", "--no-cache-dir",
                      "--disable-pip-version-check", "--no-input", "--python", str(python),
                      "install", "-q", "--index-url", index, "--only-binary", ":all:",
                      *extra, "-r", str(work / "requirements.in")], env=env)

    def uv_run(*arguments: str) -> Run:
        return child([uv, *arguments], env=env)

    runs: dict[str, dict[str, list[Run]]] = {"nginx": {}, "ipwhl": {}}
    with servers(ctx) as (ours, nginx, _tree):
        # Twice each, alternating servers, the best kept: the first run of a tool pays for its
        # own start (binaries and interpreters read from disk) wherever it installs from.
        for _ in range(2):
            for server, base in (("nginx", nginx.url), ("ipwhl", ours.url)):
                index = base + "simple/"
                done = runs[server]
                done.setdefault("pip resolve (install --dry-run)", []).append(
                    pip(index, venv(f"dry-{server}"), "--dry-run"))
                done.setdefault("pip install into a fresh venv", []).append(
                    pip(index, venv(f"pip-{server}")))
                if have_uv:
                    done.setdefault("uv pip compile", []).append(uv_run(
                        "pip", "compile", "--no-cache", "--index-url", index, "--python",
                        sys.executable, "-q", str(work / "requirements.in")))
                    target = venv(f"uv-{server}")
                    done.setdefault("uv pip install into a fresh venv", []).append(uv_run(
                        "pip", "install", "--no-cache", "--index-url", index, "--python",
                        str(target), "-q", "-r", str(work / "requirements.in")))
    for what, mine in runs["ipwhl"].items():
        best, theirs = _best(mine), _best(runs["nginx"][what])
        ctx.table.add(Row(f"{what}, {len(closure)} projects", best.seconds, "s",
                          "same from nginx", theirs.seconds, "", best.peak_mib,
                          theirs.peak_mib, cpu=best.cpu, floor_cpu=theirs.cpu))
    if not have_uv:
        ctx.table.note("uv skipped: not installed")
    shutil.rmtree(work, ignore_errors=True)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, nargs="*", default=DEFAULT_WHEELS)
    parser.add_argument("--limit", type=int, default=300, help="real wheels in the release")
    parser.add_argument("--repeat", type=int, default=2, help="cold runs (the best is shown)")
    parser.add_argument("--tiny", type=int, default=10000,
                        help="projects in the generated release eval reads (0: none)")
    parser.add_argument("--closure", type=int, default=40, help="projects pip and uv install")
    parser.add_argument("--seconds", type=int, default=5, help="of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="of each wrk run")
    parser.add_argument("--only", nargs="*", choices=STEPS, default=list(STEPS))
    parser.add_argument("--out", type=Path, default=HERE / "out" / "run")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    folders = [d for d in args.wheels if d.is_dir()]
    if not folders:
        raise SystemExit("no wheel folders found; pass --wheels DIR")
    for leftover in out.glob(f"{STORE_PREFIX}*"):  # of an earlier run, long before timing
        shutil.rmtree(leftover, ignore_errors=True)
    release, count, nbytes = genrelease.from_wheels(folders, out / "release", args.limit)
    files = wheel_files(release.parent)
    print(f"release: {count} wheels, {nbytes / 1e6:,.0f} MB from "
          f"{', '.join(map(str, folders))}; {os.cpu_count()} cores", flush=True)
    table = Table()
    warm(files)
    os.sync()
    floors_cpu: dict[str, float] = {}

    def best(name: str, measure: Callable[[], float], times: int) -> float:
        runs = []
        for _ in range(times):
            before = _own_cpu()
            wall = measure()
            runs.append((wall, _own_cpu() - before))
        wall, floors_cpu[name] = min(runs)
        return wall

    floors = {
        "hash": best("hash", lambda: hash_floor(files), 2),
        "hash_all": best("hash_all", lambda: hash_floor_all_cores(files), 2),
        "persist": best("persist", lambda: persist_floor(files, out / "scratch"), args.repeat),
    }
    start = startup()
    table.add(Row("start-up (ipwhl --version)", start, "s"))
    table.add(Row("hash floor: read + sha256, one core", floors["hash"], "s",
                  cpu=floors_cpu["hash"]))
    table.add(Row("hash floor, all cores", floors["hash_all"], "s", cpu=floors_cpu["hash_all"]))
    table.add(Row("persist floor: + write, fsync, rename", floors["persist"], "s",
                  cpu=floors_cpu["persist"]))
    ctx = Context(args, out, table, release, files, start, floors, out / "store", floors_cpu)
    ctx.store = ctx.fresh_store("build")
    steps = {"check": step_check, "build": step_build, "overlay": step_overlay,
             "eval": step_eval, "gc": step_gc, "car": step_car, "gateway": step_gateway,
             "install": step_install}
    for name in STEPS:
        if name in args.only:
            try:
                steps[name](ctx)
            except SystemExit as failed:  # one broken step must not hide the others' figures
                table.note(f"{name} failed: {str(failed.code).strip().splitlines()[-1]}")
                print(failed.code, file=sys.stderr)
    for store in out.glob(f"{STORE_PREFIX}*"):
        shutil.rmtree(store, ignore_errors=True)
    print()
    print(table.render())
    (out / "results.json").write_text(json.dumps(
        {"wheels": count, "bytes": nbytes, "cores": os.cpu_count(),
         "rows": [asdict(r) | {"ratio": r.ratio} for r in table.rows], "notes": table.notes},
        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
