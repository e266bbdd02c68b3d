"""Hostile wheels: archives crafted to crash, exhaust or mislead the inspector. Each ends in
an InvalidWheel naming the problem (a check violation in a build), in bounded time and memory;
nothing in a wheel is ever extracted to disk."""

from __future__ import annotations

import contextlib
import io
import random
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipwhl.build import build_release, load_plan
from ipwhl.errors import CheckFailed
from ipwhl.store import Store
from ipwhl.unixfs import file_cid
from ipwhl.wheels import (
    MAX_METADATA_SIZE,
    InvalidWheel,
    InvalidWheelFilename,
    inspect_wheel,
    parse_wheel_filename,
    verify_record,
)
from tests.releasefactory import Project, write_release
from tests.wheelfactory import build_wheel

NAME = "demo-1.0-py3-none-any.whl"
METADATA = "demo-1.0.dist-info/METADATA"


def good_wheel(directory: Path) -> bytes:
    directory.mkdir(exist_ok=True)
    return build_wheel(directory, "demo", "1.0", requires_dist=["attrs>=20"]).read_bytes()


def problems(path: Path) -> tuple[str, ...]:
    with pytest.raises(InvalidWheel) as caught:
        inspect_wheel(path)
    return caught.value.problems


def recompressed(data: bytes, method: int) -> bytes:
    """The same entries, compressed with another method (bz2, lzma)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info), compress_type=method)
    return out.getvalue()


def data_offset(data: bytes, name: str) -> int:
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    local = info.header_offset
    name_length = int.from_bytes(data[local + 26 : local + 28], "little")
    extra_length = int.from_bytes(data[local + 28 : local + 30], "little")
    return local + 30 + name_length + extra_length


def with_encryption_flag(data: bytes) -> bytes:
    """Every entry marked encrypted (general purpose flag bit 0), in both headers."""
    out = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            out[start + flag_at] |= 1
            start += 4
    return bytes(out)


def test_encrypted_entries_are_a_problem_not_a_crash(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(with_encryption_flag(good_wheel(tmp_path / "src")))
    found = problems(path)
    assert any(p.startswith(f"{METADATA} cannot be read: ") and "encrypted" in p for p in found)
    assert any("RECORD" in p and "encrypted" in p for p in verify_record(path))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_corrupt_bzip2_and_lzma_streams_are_problems(tmp_path, method):
    data = bytearray(recompressed(good_wheel(tmp_path / "src"), method))
    start = data_offset(bytes(data), METADATA)
    for index in range(start + 4, start + 24):
        data[index] ^= 0x55
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    assert any(p.startswith(f"{METADATA} cannot be read: ") for p in problems(path))
    assert any("cannot be read" in p for p in verify_record(path))


def test_bzip2_and_lzma_wheels_that_are_intact_are_read(tmp_path):
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = tmp_path / NAME
        path.write_bytes(recompressed(good_wheel(tmp_path / "src"), method))
        assert inspect_wheel(path).metadata.name == "demo"


def test_an_unknown_zip_version_is_a_problem(tmp_path):
    data = bytearray(good_wheel(tmp_path / "src"))
    central = data.find(b"PK\x01\x02")
    data[central + 6] = 71  # "version needed to extract" 7.1, which zipfile refuses
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    assert problems(path) == ("not a zip archive (zip file version 7.1)",)
    assert verify_record(path) == ["not a zip archive (zip file version 7.1)"]


def test_an_entry_with_an_empty_name(tmp_path):
    # Found by the fuzzer below: a zeroed byte turns the name of a central directory entry
    # into "", on which zipfile's ZipInfo.is_dir() raises IndexError.
    data = bytearray(good_wheel(tmp_path / "src"))
    data[155714 % len(data)] = 0
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    assert "" in zipfile.ZipFile(path).namelist()
    assert "an entry has an empty name" in problems(path)
    assert isinstance(verify_record(path), list)


def test_a_metadata_bomb_is_read_no_further_than_the_limit(tmp_path):
    # 64 MiB of headers deflate to ~64 KiB; the entry's size is honest, so it is refused
    # before decompression, and a lying size stops at the limit (or fails its CRC).
    bomb = b"Name: demo\nVersion: 1.0\n" + b"X-Filler: " + b"a" * (64 << 20) + b"\n"
    path = build_wheel(tmp_path, "demo", "1.0", metadata=bomb)
    started = time.monotonic()
    found = problems(path)
    assert time.monotonic() - started < 2
    assert f"{METADATA} is {len(bomb)} bytes, more than the {MAX_METADATA_SIZE} allowed" in found


def test_an_entry_that_lies_about_its_size_stops_at_the_limit(tmp_path):
    bomb = b"Name: demo\nVersion: 1.0\n" + b"X: " + b"a" * (MAX_METADATA_SIZE + 1024) + b"\n"
    path = build_wheel(tmp_path, "demo", "1.0", metadata=bomb)
    data = bytearray(path.read_bytes())
    # Rewrite the central directory's uncompressed size of METADATA to a small number.
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(METADATA)] != METADATA.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    started = time.monotonic()
    found = problems(path)
    assert time.monotonic() - started < 2
    assert any(p.startswith(f"{METADATA} cannot be read") for p in found), found


@pytest.mark.parametrize(
    "entry",
    ["../evil.py", "demo/../../evil.py", "/etc/evil", "\\\\server\\share\\x", "C:/evil.py",
     "demo\\..\\..\\evil.py"],
)
def test_traversal_in_every_spelling_is_refused(tmp_path, entry):
    path = build_wheel(tmp_path, "demo", "1.0", extra_entries=[(entry, b"x")])
    assert any(p.startswith(repr(entry)) for p in problems(path)), problems(path)


def test_two_dist_info_directories_and_a_duplicate_entry(tmp_path):
    path = build_wheel(
        tmp_path, "demo", "1.0",
        extra_entries=[("other-2.0.dist-info/METADATA", b"Name: other\nVersion: 2.0\n"),
                       (METADATA, b"Name: demo\nVersion: 6.6\n")],
    )
    found = problems(path)
    assert any("2 .dist-info directories" in p for p in found)
    assert any("appears 2 times" in p for p in found)


def test_non_utf8_metadata_and_top_level(tmp_path):
    path = build_wheel(tmp_path, "demo", "1.0", metadata=b"Name: d\xe9mo\nVersion: 1.0\n",
                       top_level=["ok"])
    assert any("not UTF-8 (byte 0xe9" in p for p in problems(path))


def test_thirty_thousand_entries_are_inspected_quickly(tmp_path):
    path = build_wheel(
        tmp_path, "demo", "1.0", extra_entries=[(f"demo/m{i}.py", b"") for i in range(30_000)]
    )
    started = time.monotonic()
    inspect_wheel(path)
    assert time.monotonic() - started < 5


def test_a_hostile_wheel_with_the_right_cid_fails_the_build_not_the_program(tmp_path):
    spec = write_release(tmp_path, [Project("demo", "1.0")])
    wheel = spec.wheels[NAME]
    wheel.write_bytes(with_encryption_flag(wheel.read_bytes()))
    declaration = spec.declaration_files[NAME]
    text = declaration.read_text()
    old_cid = text.split("content-id = '", 1)[1].split("'", 1)[0]
    declaration.write_text(text.replace(old_cid, str(file_cid(wheel.read_bytes()))))
    store = Store(tmp_path / "store").open()
    with pytest.raises(CheckFailed) as caught:
        build_release(store, load_plan(spec.path))
    assert "encrypted" in str(caught.value)
    assert store.roots() == []


# --- fuzzing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_wheel(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return good_wheel(tmp_path_factory.mktemp("seed"))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                      max_size=8),
       cut=st.none() | st.integers(0, 10**6))
def test_mutated_wheels_raise_only_invalid_wheel(seed_wheel, tmp_path, edits, cut):
    data = bytearray(seed_wheel)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with contextlib.suppress(InvalidWheel):
        inspect_wheel(path)
    assert isinstance(verify_record(path), list)


def test_many_random_mutations_raise_only_invalid_wheel(seed_wheel, tmp_path):
    # Hypothesis shrinks well but explores slowly; a seeded sweep covers more of the format.
    rng = random.Random(10)
    path = tmp_path / NAME
    for _ in range(3000):
        data = bytearray(seed_wheel)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        with contextlib.suppress(InvalidWheel):
            inspect_wheel(path)
        assert isinstance(verify_record(path), list)


@pytest.mark.parametrize(
    "filename",
    ["demo-1.0-py3-none-\udcff.whl", "demo-1.0-py3-none-any\n.whl", "démo-1.0-py3-none-any.whl",
     "demo-1.0-py3-none-any\x00.whl"],
    ids=["surrogate", "newline", "non-ascii", "nul"],
)
def test_wheel_file_names_are_printable_ascii(filename):
    # A name that is not UTF-8 used to pass, then crash the evaluator when it was encoded.
    with pytest.raises(InvalidWheelFilename, match="printable ASCII"):
        parse_wheel_filename(filename)
