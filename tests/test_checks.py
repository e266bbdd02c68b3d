"""The four checks, run by `ipwhl check` on real releases: every violation, placed and worded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipwhl.cli import main
from ipwhl.unixfs import file_cid
from tests.releasefactory import Project, Release, declaration_text, write_release
from tests.wheelfactory import build_wheel

LINUX = "cp311 manylinux_2_17_x86_64"
WINDOWS = "cp312 win_amd64"
BOTH = f"{LINUX}; {WINDOWS}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """Run ipwhl in-process; returns the exit code, stdout and the violation lines of stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if not line.startswith("ipwhl: ")]


def check(capsys: pytest.CaptureFixture[str], release: Release) -> tuple[int, list[str]]:
    store = release.path.parent / "store"
    code, _, violations = run(capsys, "check", str(release.path), "--store", str(store), "-q")
    return code, violations


def value_at(declaration: Path, key: str) -> str:
    """`path:line:col` of the value of `key` in a declaration file."""
    for number, line in enumerate(declaration.read_text().splitlines(), start=1):
        if line.startswith(f"{key} = "):
            return f"{declaration}:{number}:{len(key) + 4}"
    raise AssertionError(f"{key!r} is not in {declaration}")


def element_at(declaration: Path, text: str) -> str:
    """`path:line:col` of a string array element's text (inside its quotes)."""
    for number, line in enumerate(declaration.read_text().splitlines(), start=1):
        for quote in "'\"":
            if f"{quote}{text}{quote}" in line:
                return f"{declaration}:{number}:{line.index(quote + text + quote) + 2}"
    raise AssertionError(f"{text!r} is not in {declaration}")


def redeclare(
    release: Release,
    wheel_name: str,
    *,
    content_id: str | None = None,
    requires_python: str | None = None,
    extras: tuple[str, ...] = (),
    dependencies: tuple[str, ...] = (),
) -> Path:
    """Rewrite a wheel's declaration, keeping its source and (unless given) its content-id."""
    wheel = release.wheels[wheel_name]
    path = release.declaration_files[wheel_name]
    path.write_text(
        declaration_text(
            f"../../wheels/{wheel.name}",
            content_id or str(file_cid(wheel.read_bytes())),
            requires_python,
            extras,
            dependencies,
        )
    )
    return path


# -- 1. platform-unique --------------------------------------------------------------------


@pytest.mark.parametrize(
    "specific",
    ["cp311-cp311-manylinux_2_17_x86_64", "cp37-abi3-manylinux1_x86_64", "cp311-none-any"],
)
def test_two_wheels_installable_on_one_environment_are_both_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], specific: str
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0", tags=(specific, "py3-none-any"))])
    code, violations = check(capsys, release)
    names = ", ".join(sorted([f"a-1.0-{specific}.whl", "a-1.0-py3-none-any.whl"]))
    message = (
        f"platform-unique: 2 wheels of 'a' are installable on {LINUX}: {names}; "
        "declare at most one wheel per environment"
    )
    first, second = (
        release.declaration_files[f"a-1.0-{tag}.whl"] for tag in (specific, "py3-none-any")
    )
    assert code == 4
    assert sorted(violations) == sorted([f"{first}:1:10: {message}", f"{second}:1:10: {message}"])


def test_platform_unique_names_every_environment_where_wheels_clash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    supported = (LINUX, "cp311 manylinux_2_28_x86_64", WINDOWS)
    release = write_release(
        tmp_path,
        [Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"))],
        supported=supported,
    )
    code, violations = check(capsys, release)
    assert code == 4
    assert len(violations) == 2
    for violation in violations:
        assert f"installable on {LINUX}; cp311 manylinux_2_28_x86_64: " in violation
        assert WINDOWS not in violation


def test_the_same_wheels_are_fine_where_they_never_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"))],
        supported=(WINDOWS,),
    )
    assert check(capsys, release) == (0, [])


def test_one_wheel_per_platform_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tags = ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64")
    release = write_release(tmp_path, [Project("a", "1.0", tags=tags)])
    assert check(capsys, release) == (0, [])


# -- 2. verifiable-source ------------------------------------------------------------------


def test_a_content_id_of_other_bytes_is_reported_and_nothing_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0"), Project("b", "1.0")])
    wheel = release.wheels["a-1.0-py3-none-any.whl"]
    other = str(file_cid(b"some other bytes"))
    declaration = redeclare(release, wheel.name, content_id=other)
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{declaration}:2:14: verifiable-source: {wheel.resolve().as_uri()} hashes to "
        f"{file_cid(wheel.read_bytes())}, but its declared content-id is {other}"
    ]
    assert value_at(declaration, "content-id") == f"{declaration}:2:14"
    stored = [p.read_bytes() for p in (tmp_path / "store" / "objects").rglob("*") if p.is_file()]
    assert release.wheels["b-1.0-py3-none-any.whl"].read_bytes() in stored
    assert wheel.read_bytes() not in stored


def test_a_cidv0_content_id_is_verified_in_its_own_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0")])
    wheel = release.wheels["a-1.0-py3-none-any.whl"]
    good = str(file_cid(wheel.read_bytes(), cid_version=0))
    assert good.startswith("Qm")
    redeclare(release, wheel.name, content_id=good)
    assert check(capsys, release) == (0, [])
    other = str(file_cid(b"some other bytes", cid_version=0))
    declaration = redeclare(release, wheel.name, content_id=other)
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{declaration}:2:14: verifiable-source: {wheel.resolve().as_uri()} hashes to "
        f"{good}, but its declared content-id is {other}"
    ]


def test_a_missing_source_is_reported_at_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0")])
    wheel = release.wheels["a-1.0-py3-none-any.whl"]
    wheel.unlink()
    declaration = release.declaration_files[wheel.name]
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{declaration}:1:10: verifiable-source: cannot read {wheel.resolve()}: "
        "No such file or directory"
    ]


# -- 3. matching-metadata ------------------------------------------------------------------


def test_every_metadata_difference_is_reported_where_it_is_declared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [
            Project("a", "1.0", requires_python=">=3.8", provides_extra=["x"],
                    requires_dist=["b>=1.0", "c; extra == 'x'"]),
            Project("b", "1.0"),
            Project("d", "1.0"),
        ],
    )
    declaration = redeclare(
        release, "a-1.0-py3-none-any.whl",
        requires_python=">=3.9", extras=("x", "y"), dependencies=("b>=1.0", "d"),
    )
    code, violations = check(capsys, release)
    assert code == 4
    assert sorted(violations) == sorted([
        f"{value_at(declaration, 'requires-python')}: matching-metadata: requires-python is "
        "declared as '>=3.9', but the wheel's METADATA has '>=3.8'",
        f"{value_at(declaration, 'extras')}: matching-metadata: extras differ from the wheel's "
        "Provides-Extra: y is declared but the wheel does not provide it",
        f"{element_at(declaration, 'd')}: matching-metadata: dependency 'd' is not among the "
        "wheel's Requires-Dist",
        f"{value_at(declaration, 'dependencies')}: matching-metadata: the wheel's METADATA "
        "requires \"c; extra == 'x'\", which is not declared",
    ])


def test_undeclared_extras_and_requires_python_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path, [Project("a", "1.0", requires_python=">=3.8", provides_extra=["x", "y"])]
    )
    declaration = redeclare(release, "a-1.0-py3-none-any.whl", extras=("x",))
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{declaration}:1:10: matching-metadata: requires-python is declared as None, "
        "but the wheel's METADATA has '>=3.8'",
        f"{declaration}:3:10: matching-metadata: extras differ from the wheel's "
        "Provides-Extra: the wheel provides y which is not declared",
    ]


def test_name_and_version_must_match_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0")])
    metadata = b"Metadata-Version: 2.1\nName: other\nVersion: 2.0\n\n"
    wheel = build_wheel(tmp_path / "wheels", "a", "1.0", metadata=metadata)
    declaration = redeclare(release, wheel.name)
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{declaration}:1:10: matching-metadata: the wheel's METADATA has version '2.0', "
        "but its file name says 1.0",
        f"{declaration}:1:10: matching-metadata: the wheel's METADATA names 'other', "
        "but it is declared under 'a'",
    ]


def test_requirements_are_compared_parsed_not_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel_says = [
        "b >= 1.0",
        "c; extra == 'x'",
        "Zope.Interface (>=5)",
        "d<4,>=2; python_version < '3.12' and sys_platform == 'linux'",
    ]
    declared = (
        "b>=1.0",
        'c; extra == "x"',
        "zope-interface>=5.0",
        'd>=2,<4 ; python_version<"3.12" and sys_platform=="linux"',
    )
    release = write_release(
        tmp_path,
        [
            Project("a", "1.0", provides_extra=["X"], requires_dist=wheel_says),
            Project("b", "1.0"), Project("c", "1.0"), Project("d", "3.0"),
            Project("zope.interface", "5.0"),
        ],
    )
    redeclare(release, "a-1.0-py3-none-any.whl", extras=("x",), dependencies=declared)
    assert check(capsys, release) == (0, [])


# -- 4. closure ----------------------------------------------------------------------------


def test_every_closure_violation_of_a_release_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [
            Project("a", "1.0", provides_extra=["x"], requires_dist=[
                "missing>=1",
                "b>=2",
                "c; extra == 'x'",
                "pywin32; sys_platform == 'win32'",
                "e",
                "b[fast]",
                "g; sys_platform == 'linux'",
            ]),
            Project("b", "1.0"),
            Project("e", "1.0", requires_python=">=3.12"),
            Project("f", "1.0", requires_python=">=3.12", requires_dist=["gone"]),
            Project("g", "1.0", tags=("py3-none-win_amd64",)),
        ],
    )
    a = release.declaration_files["a-1.0-py3-none-any.whl"]
    f = release.declaration_files["f-1.0-py3-none-any.whl"]
    expected = [
        ("missing>=1", f"requires 'missing>=1', but 'missing' is not in the release on {BOTH}"),
        ("b>=2", f"requires 'b>=2', but the release has b 1.0 on {BOTH}"),
        ("c; extra == 'x'",
         f"requires 'c' (for extra 'x'), but 'c' is not in the release on {BOTH}"),
        ("pywin32; sys_platform == 'win32'",
         f"requires 'pywin32', but 'pywin32' is not in the release on {WINDOWS}"),
        ("e", "requires 'e', but e 1.0 has requires-python '>=3.12', which excludes Python 3.11 "
         f"on {LINUX}"),
        ("b[fast]", f"requires 'b' with extra fast, but b 1.0 declares no such extra on {BOTH}"),
        ("g; sys_platform == 'linux'",
         f"requires 'g', but no wheel of 'g' is installable on {LINUX}"),
    ]
    code, violations = check(capsys, release)
    assert code == 4
    assert sorted(violations) == sorted(
        [f"{element_at(a, text)}: closure: a 1.0 {message}" for text, message in expected]
        + [f"{element_at(f, 'gone')}: closure: f 1.0 requires 'gone', "
           f"but 'gone' is not in the release on {WINDOWS}"]
    )


def test_a_dependency_behind_an_extra_is_needed_only_for_that_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = Project("a", "1.0", provides_extra=["x", "y"], requires_dist=["c; extra == 'x'"])
    release = write_release(tmp_path, [project])
    a = release.declaration_files["a-1.0-py3-none-any.whl"]
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{a}:5:3: closure: a 1.0 requires 'c' (for extra 'x'), "
        f"but 'c' is not in the release on {BOTH}"
    ]


def test_a_dependency_behind_an_undeclared_extra_is_refused_before_any_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("a", "1.0", requires_dist=["c; extra == 'x'"])])
    code, violations = check(capsys, release)
    assert code == 3
    assert len(violations) == 1
    assert ": syntax: marker names extra 'x'" in violations[0]


def test_a_base_dependency_is_reported_once_not_again_for_every_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [Project("a", "1.0", provides_extra=["x", "y"],
                 requires_dist=["b", "b; extra == 'y' or os_name == 'nt'"])],
    )
    a = release.declaration_files["a-1.0-py3-none-any.whl"]
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{a}:5:3: closure: a 1.0 requires 'b', but 'b' is not in the release on {BOTH}",
        f"{a}:6:3: closure: a 1.0 requires 'b' (for extra 'y'), "
        f"but 'b' is not in the release on {LINUX}",
        f"{a}:6:3: closure: a 1.0 requires 'b', but 'b' is not in the release on {WINDOWS}",
    ]


def test_a_marker_that_cannot_be_evaluated_is_a_violation_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [Project("a", "1.0", requires_dist=["b; os_name ~= 'nt'"]), Project("b", "1.0")],
        supported=(LINUX,),
    )
    a = release.declaration_files["a-1.0-py3-none-any.whl"]
    code, violations = check(capsys, release)
    assert code == 4
    assert violations == [
        f"{a}:5:3: closure: a 1.0 has a marker that cannot be evaluated "
        f"('~=' is undefined between 'posix' and 'nt') on {LINUX}"
    ]


def test_a_closed_release_passes_all_four_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(
        tmp_path,
        [
            Project("a", "1.0", provides_extra=["fast"],
                    requires_dist=["b[fast]>=1,<2", "c; extra == 'fast'",
                                   "w; sys_platform == 'win32'"]),
            Project("b", "1.5", provides_extra=["fast"]),
            Project("c", "2.0", requires_python=">=3.8"),
            Project("w", "1.0", tags=("py3-none-win_amd64",)),
        ],
    )
    store = tmp_path / "store"
    code, out, err = run(capsys, "check", str(release.path), "--store", str(store))
    assert (code, out, err) == (0, "", [])
