"""End to end: build a release, serve it on 127.0.0.1, install from it with real pip and uv."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl.build import build_release, load_plan
from ipwhl.gateway import GatewayConfig, running
from ipwhl.store import Store
from tests.releasefactory import Project, write_release

pytestmark = pytest.mark.slow

INTERPRETER = f"cp{sys.version_info.major}{sys.version_info.minor}"
ARCH = platform.machine()
if sys.platform != "linux" or ARCH not in {"x86_64", "aarch64"}:
    pytest.skip("the end-to-end release targets Linux x86_64/aarch64", allow_module_level=True)
if "musl" in (sysconfig.get_config_var("HOST_GNU_TYPE") or ""):
    pytest.skip("the end-to-end release targets glibc Linux", allow_module_level=True)

HERE_PLATFORM = f"manylinux_2_17_{ARCH}"
ELSEWHERE = "win_amd64"


def _projects() -> list[Project]:
    return [
        Project(
            "alpha", "1.0",
            requires_python=">=3.8",
            requires_dist=["beta>=1.0", 'gamma>=2; extra == "speed"'],
            provides_extra=["speed"],
            modules={"alpha/__init__.py": "import beta\nVALUE = 'alpha ' + beta.VALUE\n"},
        ),
        Project(
            "beta", "1.5",
            tags=(f"{INTERPRETER}-{INTERPRETER}-{HERE_PLATFORM}",
                  f"{INTERPRETER}-{INTERPRETER}-{ELSEWHERE}"),
            modules={"beta/__init__.py": "VALUE = 'beta 1.5'\n"},
        ),
        Project("gamma", "2.0", requires_python=">=3",
                modules={"gamma/__init__.py": "VALUE = 'gamma'\n"}),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """(index URL, request log) for a built release served by `ipwhl serve`'s gateway."""
    directory = tmp_path_factory.mktemp("release")
    release = write_release(
        directory, _projects(),
        supported=[f"{INTERPRETER} {HERE_PLATFORM}", f"{INTERPRETER} {ELSEWHERE}"],
    )
    store = Store(directory / "store").open()
    result = build_release(store, load_plan(release.path))
    requests: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            requests.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("ipwhl.gateway.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with running(store, GatewayConfig(port=0)) as base:
            yield f"{base}/ipfs/{result.root}/simple/", requests
    finally:
        logger.removeHandler(handler)


def _isolated_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_CACHE_DIR="1", UV_NO_CONFIG="1", UV_NO_CACHE="1")
    return env


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def _fetched(requests: list[str], since: int) -> list[str]:
    return [line for line in requests[since:] if line.startswith("GET ")]


def test_pip_resolves_from_metadata_then_installs_and_imports(
    served: tuple[str, list[str]], tmp_path: Path
) -> None:
    index_url, requests = served
    python = _venv(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--isolated"]
    mark = len(requests)
    subprocess.run(
        [*pip, "install", "--dry-run", "--index-url", index_url, "alpha[speed]"],
        env=_isolated_env(), check=True, capture_output=True, text=True,
    )
    fetched = _fetched(requests, mark)
    assert any(line.split()[1].endswith("alpha-1.0-py3-none-any.whl.metadata") for line in fetched)
    assert any(".whl.metadata" in line and "/beta/" in line for line in fetched)
    assert not [line for line in fetched if line.split()[1].endswith(".whl")], fetched

    subprocess.run(
        [*pip, "install", "--index-url", index_url, "alpha[speed]"],
        env=_isolated_env(), check=True, capture_output=True, text=True,
    )
    shown = subprocess.run(
        [str(python), "-c", "import alpha, gamma; print(alpha.VALUE, gamma.VALUE)"],
        check=True, capture_output=True, text=True,
    )
    assert shown.stdout.strip() == "alpha beta 1.5 gamma"


def test_pip_refuses_what_the_release_does_not_offer(
    served: tuple[str, list[str]], tmp_path: Path
) -> None:
    index_url, _ = served
    python = _venv(tmp_path / "venv")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "--isolated", "install",
         "--index-url", index_url, "beta>=2"],
        env=_isolated_env(), capture_output=True, text=True,
    )
    assert done.returncode != 0
    assert "beta" in done.stderr and "1.5" in done.stderr


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


@pytest.mark.skipif(_uv() is None, reason="uv is not installed (pip install ipwhl[test])")
def test_uv_resolves_from_metadata_then_installs_and_imports(
    served: tuple[str, list[str]], tmp_path: Path
) -> None:
    index_url, requests = served
    uv = _uv()
    assert uv is not None
    python = _venv(tmp_path / "venv")
    mark = len(requests)
    subprocess.run(
        [uv, "pip", "compile", "--no-config", "--no-cache", "--index-url", index_url,
         "--python", str(python), "-"],
        input="alpha[speed]\n", env=_isolated_env(), check=True, capture_output=True, text=True,
    )
    fetched = _fetched(requests, mark)
    assert any(line.split()[1].endswith("alpha-1.0-py3-none-any.whl.metadata") for line in fetched)
    assert not [line for line in fetched if line.split()[1].endswith(".whl")], fetched

    subprocess.run(
        [uv, "pip", "install", "--no-config", "--no-cache", "--index-url", index_url,
         "--python", str(python), "alpha[speed]"],
        env=_isolated_env(), check=True, capture_output=True, text=True,
    )
    shown = subprocess.run(
        [str(python), "-c", "import alpha, gamma; print(alpha.VALUE, gamma.VALUE)"],
        check=True, capture_output=True, text=True,
    )
    assert shown.stdout.strip() == "alpha beta 1.5 gamma"
