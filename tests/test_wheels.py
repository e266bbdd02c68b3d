"""Tests for ipwhl.wheels: wheel file names, METADATA, safety checks and RECORD."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
from packaging.metadata import Metadata
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name
from packaging.version import Version

from ipwhl.errors import IpwhlError
from ipwhl.wheels import (
    MAX_METADATA_SIZE,
    CoreMetadata,
    InvalidWheel,
    InvalidWheelFilename,
    inspect_wheel,
    parse_metadata,
    parse_wheel_filename,
    verify_record,
)
from tests.wheelfactory import build_wheel, record_hash

PYPI_FILES = Path("/opt/pypi/files")


def problems_of(path: Path, filename: str | None = None) -> tuple[str, ...]:
    with pytest.raises(InvalidWheel) as caught:
        inspect_wheel(path, filename)
    return caught.value.problems


# -- file names ------------------------------------------------------------------------------


def test_parse_wheel_filename() -> None:
    parsed = parse_wheel_filename(
        "typing_extensions-4.12.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    )
    assert parsed.filename.startswith("typing_extensions-4.12.2-")
    assert parsed.name == "typing_extensions"
    assert parsed.project == "typing-extensions"
    assert parsed.version == Version("4.12.2")
    assert parsed.build == ()
    assert parsed.tags == {
        Tag("cp311", "cp311", "manylinux_2_17_x86_64"),
        Tag("cp311", "cp311", "manylinux2014_x86_64"),
    }


def test_parse_wheel_filename_with_build_tag() -> None:
    parsed = parse_wheel_filename("Foo.Bar-1.0-12abc-py2.py3-none-any.whl")
    assert parsed.name == "Foo.Bar"
    assert parsed.project == "foo-bar"
    assert parsed.build == (12, "abc")
    assert parsed.tags == {Tag("py2", "none", "any"), Tag("py3", "none", "any")}


@pytest.mark.parametrize(
    "filename",
    [
        "example-1.0.tar.gz",
        "example-1.0.whl",
        "example-1.0-py3-none.whl",
        "example-not.a.version-py3-none-any.whl",
        "dir/example-1.0-py3-none-any.whl",
        "",
    ],
)
def test_invalid_wheel_filenames(filename: str) -> None:
    with pytest.raises(InvalidWheelFilename) as caught:
        parse_wheel_filename(filename)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, IpwhlError)
    assert caught.value.exit_code == 3
    message = str(caught.value)
    assert message.startswith(f"{filename}: ")
    assert "e.g. 'example-1.0-py3-none-any.whl'" in message


# -- METADATA --------------------------------------------------------------------------------


def test_parse_metadata() -> None:
    data = (
        b"Metadata-Version: 2.4\n"
        b"Name: Example.Project\n"
        b"Version: 1.0.post1\n"
        b"Requires-Python: >=3.8 \n"
        b"Provides-Extra: Socks\n"
        b"Provides-Extra: test\n"
        b"Requires-Dist: idna>=2.5\n"
        b"Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == 'socks'\n"
        b"Description-Content-Type: text/markdown\n"
        b"\n"
        b"Name: not a header, the description\n"
    )
    assert parse_metadata(data) == CoreMetadata(
        name="Example.Project",
        version="1.0.post1",
        requires_python=">=3.8",
        requires_dist=("idna>=2.5", "PySocks!=1.5.7,>=1.5.6; extra == 'socks'"),
        provides_extra=("Socks", "test"),
    )


def test_parse_metadata_1_0_with_crlf_bom_and_folding() -> None:
    data = (
        "\ufeffMetadata-Version: 1.0\r\nName: old\r\nVersion: 0.1\r\n"
        "Requires-Dist: long-name\r\n  >=1.0\r\nSummary: caf\u00e9\r\n\r\n"
    ).encode()
    metadata = parse_metadata(data)
    assert metadata.name == "old"
    assert metadata.version == "0.1"
    assert metadata.requires_python is None
    assert metadata.requires_dist == ("long-name  >=1.0",)
    assert metadata.provides_extra == ()


def test_empty_requires_python_is_none() -> None:
    assert parse_metadata(b"Name: a\nVersion: 1\nRequires-Python: \n").requires_python is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"Version: 1.0\n", "no Name field"),
        (b"Name: a\n", "no Version field"),
        (b"Name: a\nName: b\nVersion: 1\n", "2 Name fields"),
        (b"Name: a\nVersion: 1\nRequires-Python: >=3\nRequires-Python: <4\n", "Requires-Python"),
        (b"Name: caf\xe9\nVersion: 1\n", "not UTF-8 (byte 0xe9 at offset 9)"),
    ],
)
def test_invalid_metadata(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidWheel) as caught:
        parse_metadata(data, "x.dist-info/METADATA")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("x.dist-info/METADATA: ")


def test_invalid_metadata_reports_every_problem() -> None:
    with pytest.raises(InvalidWheel) as caught:
        parse_metadata(b"Metadata-Version: 2.1\nSummary: nothing else\n")
    assert len(caught.value.problems) == 2


def test_invalid_wheel_pickles() -> None:
    error = InvalidWheel("a-1-py3-none-any.whl", ["one", "two"])
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == "a-1-py3-none-any.whl: one\na-1-py3-none-any.whl: two"


# -- inspect_wheel ---------------------------------------------------------------------------


def test_inspect_built_wheel(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "Example-Project",
        "1.2.0",
        requires_python=">=3.9",
        requires_dist=["attrs>=20", 'rich; extra == "cli"'],
        provides_extra=["cli"],
    )
    assert path.name == "Example_Project-1.2.0-py3-none-any.whl"
    info = inspect_wheel(path)
    assert info.filename.project == "example-project"
    assert info.dist_info == "Example_Project-1.2.0.dist-info"
    assert info.metadata == CoreMetadata(
        name="Example-Project",
        version="1.2.0",
        requires_python=">=3.9",
        requires_dist=("attrs>=20", 'rich; extra == "cli"'),
        provides_extra=("cli",),
    )
    with zipfile.ZipFile(path) as archive:
        assert info.metadata_bytes == archive.read("Example_Project-1.2.0.dist-info/METADATA")
    assert info.wheel_tags == {Tag("py3", "none", "any")}
    assert info.root_is_purelib is True
    assert info.top_level == ("example_project",)


def test_inspect_platform_wheel(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "fast",
        "2.0",
        tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
        modules={
            "fast/__init__.py": "",
            "fast/_speed.cpython-311-x86_64-linux-gnu.so": "",
            "_fast_cffi.abi3.so": "",
            "helper.py": "",
            "fast.libs/libz.so.1": "",
            "README.txt": "",
            "fast-2.0.data/purelib/fast_extra/__init__.py": "",
            "fast-2.0.data/platlib/_native.pyd": "",
            "fast-2.0.data/scripts/fast-cli": "",
            "fast-2.0.data/headers/fast.h": "",
        },
    )
    info = inspect_wheel(path)
    assert info.root_is_purelib is False
    assert info.wheel_tags == {
        Tag("cp311", "cp311", "manylinux_2_17_x86_64"),
        Tag("cp311", "cp311", "manylinux2014_x86_64"),
    }
    assert info.top_level == ("_fast_cffi", "_native", "fast", "fast_extra", "helper")


def test_top_level_txt_wins(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "pyyaml", "6.0", top_level=["yaml", "_yaml", "", "yaml/_ext"])
    assert inspect_wheel(path).top_level == ("_yaml", "yaml")


def test_empty_top_level_txt_falls_back_to_entries(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "gmsh", "4.0", modules={"gmsh.py": ""}, top_level=[""])
    assert inspect_wheel(path).top_level == ("gmsh",)


def test_no_top_level(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "meta", "1.0", modules={})
    assert inspect_wheel(path).top_level == ()


def test_store_object_with_explicit_filename(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0")
    stored = tmp_path / "0123abcd"
    stored.write_bytes(path.read_bytes())
    info = inspect_wheel(stored, "example-1.0-py3-none-any.whl")
    assert info.filename.filename == "example-1.0-py3-none-any.whl"
    with pytest.raises(InvalidWheelFilename):
        inspect_wheel(stored)


def test_dist_info_name_is_compared_normalised(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path, "zope.interface", "5.0", dist_info="Zope.Interface-5.0.0.dist-info"
    )
    assert inspect_wheel(path).dist_info == "Zope.Interface-5.0.0.dist-info"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really", b"plain text\n" * 100])
def test_not_a_zip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "example-1.0-py3-none-any.whl"
    path.write_bytes(content)
    (problem,) = problems_of(path)
    assert problem.startswith("not a zip archive")


def test_truncated_zip(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0")
    path.write_bytes(path.read_bytes()[:-30])
    assert problems_of(path)[0].startswith("not a zip archive")


def test_no_dist_info(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0", omit=["METADATA", "WHEEL", "RECORD"])
    (problem,) = problems_of(path)
    assert problem == ("no .dist-info directory at the root; expected example-1.0.dist-info")


def test_two_dist_infos(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path, "example", "1.0", extra_entries=[("other-1.0.dist-info/METADATA", b"")]
    )
    (problem,) = problems_of(path)
    assert "2 .dist-info directories (example-1.0.dist-info, other-1.0.dist-info)" in problem


def test_nested_dist_info_is_not_at_the_root(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path, "example", "1.0", extra_entries=[("example/vendored-1.0.dist-info/METADATA", b"")]
    )
    assert inspect_wheel(path).dist_info == "example-1.0.dist-info"


@pytest.mark.parametrize(
    "dist_info",
    [
        "other-1.0.dist-info",
        "example-2.0.dist-info",
        "example.dist-info",
        "example-x.y.z.dist-info",
    ],
)
def test_dist_info_must_match_filename(tmp_path: Path, dist_info: str) -> None:
    path = build_wheel(tmp_path, "example", "1.0", dist_info=dist_info)
    (problem,) = problems_of(path)
    assert problem == f"{dist_info} does not match the file name; expected example-1.0.dist-info"


def test_unsafe_entries_are_all_reported(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "example",
        "1.0",
        extra_entries=[
            ("/etc/passwd", b""),
            ("example/../../escape.py", b""),
            ("C:\\Windows\\evil.dll", b""),
            ("example\\..\\..\\escape.py", b""),
            ("example/__init__.py", b"again"),
        ],
    )
    with pytest.raises(InvalidWheel) as caught:
        inspect_wheel(path)
    message = str(caught.value)
    assert all(line.startswith("example-1.0-py3-none-any.whl: ") for line in message.splitlines())
    problems = caught.value.problems
    assert "'example/__init__.py' appears 2 times in the archive" in problems
    assert "'/etc/passwd' is an absolute path; entries must be relative" in problems
    assert "'C:\\\\Windows\\\\evil.dll' is an absolute path; entries must be relative" in problems
    assert sum("has a '..' component" in problem for problem in problems) == 2
    assert len(problems) == 5


def test_metadata_too_large(tmp_path: Path) -> None:
    padding = b"x" * (MAX_METADATA_SIZE + 1 - 40)
    metadata = b"Name: example\nVersion: 1.0\n\n" + padding
    metadata += b"y" * (MAX_METADATA_SIZE + 1 - len(metadata))
    path = build_wheel(tmp_path, "example", "1.0", metadata=metadata)
    (problem,) = problems_of(path)
    assert problem == (
        f"example-1.0.dist-info/METADATA is {MAX_METADATA_SIZE + 1} bytes, "
        f"more than the {MAX_METADATA_SIZE} allowed"
    )


def test_metadata_at_the_limit_is_read(tmp_path: Path) -> None:
    metadata = b"Name: example\nVersion: 1.0\n\n"
    metadata += b"z" * (MAX_METADATA_SIZE - len(metadata))
    path = build_wheel(tmp_path, "example", "1.0", metadata=metadata)
    assert len(inspect_wheel(path).metadata_bytes) == MAX_METADATA_SIZE


def test_non_utf8_metadata(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path, "example", "1.0", metadata=b"Name: example\nVersion: 1.0\n\nd\xe9j\xe0\n"
    )
    with pytest.raises(InvalidWheel) as caught:
        inspect_wheel(path)
    assert str(caught.value) == (
        "example-1.0-py3-none-any.whl: example-1.0.dist-info/METADATA: not UTF-8 (byte 0xe9 at "
        "offset 29); core metadata must be UTF-8 encoded"
    )


def test_missing_metadata_and_wheel(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0", omit=["METADATA", "WHEEL"])
    assert set(problems_of(path)) == {
        "example-1.0.dist-info/METADATA is missing",
        "example-1.0.dist-info/WHEEL is missing",
    }


def test_metadata_without_version(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0", metadata=b"Name: example\n")
    assert problems_of(path) == (
        "example-1.0.dist-info/METADATA: no Version field; it is required",
    )


def test_unsupported_wheel_version(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "example",
        "1.0",
        omit=["WHEEL", "RECORD"],
        extra_entries=[
            ("example-1.0.dist-info/WHEEL", b"Wheel-Version: 2.0\nTag: py3-none-any\n"),
        ],
    )
    assert problems_of(path) == (
        "example-1.0.dist-info/WHEEL: Wheel-Version 2.0 is not supported; expected 1.x",
    )


def test_corrupt_member_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "example", "1.0", metadata=b"Name: example\nVersion: 1.0\n" * 50)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("example-1.0.dist-info/METADATA")
    # Flip a byte inside the compressed METADATA so the CRC (or inflate) fails on read.
    start = info.header_offset + 30 + len(info.filename) + 10
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    (problem,) = problems_of(path)
    assert problem.startswith("example-1.0.dist-info/METADATA cannot be read: ")


# -- the test factory ------------------------------------------------------------------------


def test_factory_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build_wheel(tmp_path / "a", "example", "1.0", requires_dist=["attrs"])
    second = build_wheel(tmp_path / "b", "example", "1.0", requires_dist=["attrs"])
    assert first.read_bytes() == second.read_bytes()


def test_factory_wheels_agree_with_packaging(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "demo",
        "0.3",
        requires_python="<4,>=3.8",
        requires_dist=['b; extra == "x"'],
        provides_extra=["x"],
    )
    reference = Metadata.from_email(inspect_wheel(path).metadata_bytes)
    assert reference.name == "demo"
    assert reference.requires_python == SpecifierSet(">=3.8,<4")
    assert reference.provides_extra == ["x"]


# -- verify_record ---------------------------------------------------------------------------


def test_verify_record_clean(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path,
        "example",
        "1.0",
        modules={"example/__init__.py": "x = 1\n", "example/data.txt": "hello"},
    )
    assert verify_record(path) == []


def test_verify_record_finds_every_problem(tmp_path: Path) -> None:
    data = b"x = 1\n"
    record = (
        f"example/__init__.py,{record_hash(b'other')},{len(data)}\n"
        f"example/gone.py,{record_hash(b'')},0\n"
        f"example-1.0.dist-info/METADATA,md5=abc,1\n"
        f"example-1.0.dist-info/WHEEL,,\n"
        f"example/sized.py,{record_hash(b'')},7\n"
        f"bad line\n"
        f"example-1.0.dist-info/RECORD,,\n"
    ).encode()
    path = build_wheel(
        tmp_path,
        "example",
        "1.0",
        modules={"example/__init__.py": data.decode(), "example/sized.py": ""},
        omit=["RECORD"],
        extra_entries=[
            ("example-1.0.dist-info/RECORD", record),
            ("example/unlisted.py", b""),
        ],
    )
    problems = verify_record(path)
    record_name = "example-1.0.dist-info/RECORD"
    assert f"{record_name} line 6: expected 'path,hash,size', got ['bad line']" in problems
    assert f"'example/unlisted.py' is in the archive but not in {record_name}" in problems
    assert f"{record_name} lists 'example/gone.py', which is not in the archive" in problems
    assert (
        f"{record_name}: 'example-1.0.dist-info/METADATA' is hashed with 'md5'; "
        "expected sha256 or stronger" in problems
    )
    assert f"{record_name} has no hash for 'example-1.0.dist-info/WHEEL'" in problems
    assert f"{record_name} says 'example/sized.py' is 7 bytes; it is 0 bytes" in problems
    assert any(
        problem.startswith(f"'example/__init__.py' does not match {record_name}: sha256=")
        for problem in problems
    )
    assert len(problems) == 7


def test_verify_record_wrong_hash_and_missing_record(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wrong = build_wheel(tmp_path / "a", "example", "1.0", wrong_hashes=["example/__init__.py"])
    (problem,) = verify_record(wrong)
    assert problem.startswith("'example/__init__.py' does not match")
    missing = build_wheel(tmp_path / "b", "example", "1.0", omit=["RECORD"])
    assert verify_record(missing) == ["example-1.0.dist-info/RECORD is missing"]


def test_verify_record_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "example-1.0-py3-none-any.whl"
    path.write_bytes(b"nope")
    (problem,) = verify_record(path)
    assert problem.startswith("not a zip archive")


# -- real wheels -----------------------------------------------------------------------------


def _real_wheels(count: int) -> list[Path]:
    wheels = sorted(PYPI_FILES.glob("*.whl")) if PYPI_FILES.is_dir() else []
    step = max(1, len(wheels) // count)
    return wheels[::step][:count]


@pytest.mark.skipif(not _real_wheels(1), reason=f"no real wheels in {PYPI_FILES}")
def test_real_wheels_agree_with_packaging_metadata() -> None:
    wheels = _real_wheels(100)
    for path in wheels:
        info = inspect_wheel(path)
        reference = Metadata.from_email(info.metadata_bytes, validate=False)
        ours = info.metadata
        assert canonicalize_name(ours.name) == info.filename.project, path.name
        assert ours.name == reference.name, path.name
        assert Version(ours.version) == reference.version, path.name
        assert SpecifierSet(ours.requires_python or "") == (
            reference.requires_python or SpecifierSet()
        ), path.name
        assert [Requirement(r) for r in ours.requires_dist] == list(
            reference.requires_dist or []
        ), path.name
        assert [canonicalize_name(e) for e in ours.provides_extra] == list(
            reference.provides_extra or []
        ), path.name
        assert all("/" not in name for name in info.top_level), path.name
        assert info.wheel_tags, path.name


@pytest.mark.skipif(not _real_wheels(1), reason=f"no real wheels in {PYPI_FILES}")
def test_real_wheels_have_consistent_records() -> None:
    smallest = sorted(_real_wheels(400), key=lambda path: path.stat().st_size)[:15]
    for path in smallest:
        assert verify_record(path) == [], path.name
