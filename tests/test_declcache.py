"""The declaration cache: files unchanged on disk are not read again; a changed one always is."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ipwhl.declarations import DeclarationSet, load_declarations, summarize
from ipwhl.declcache import DeclarationCache
from ipwhl.errors import DeclarationError
from ipwhl.store import Store

CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def declaration(dependencies: tuple[str, ...] = (), source: str = "https://example.org/a.whl",
                ) -> str:
    listed = "".join(f"\t'{d}',\n" for d in dependencies)
    return f"source = '{source}'\ncontent-id = '{CID}'\ndependencies = [\n{listed}]\n"


def write(root: Path, relpath: str, text: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    pkgs = tmp_path / "pkgs"
    write(pkgs, "a/a-1.0-py3-none-any.toml", declaration(("b>=1",)))
    write(pkgs, "b/b-1.0-py3-none-any.toml", declaration())
    write(pkgs, "b/b-1.0-cp311-cp311-manylinux_2_17_x86_64.toml", declaration())
    write(pkgs, "c/c-2.0-py3-none-any.toml", declaration(("a", 'B>1; python_version >= "3"')))
    return pkgs


# The racy window the tests use: files written before a load (which first waits a little longer
# than this) are settled, and a change after it lands in a later clock tick.
RACY = 0.05


def cache(tmp_path: Path, root: Path, racy_seconds: float = RACY) -> DeclarationCache:
    """The cache in a store (a short racy window: see RACY)."""
    store = Store(tmp_path / "store").open()
    found = DeclarationCache.in_store(store.root, root, racy_seconds=racy_seconds)
    assert found is not None
    return found


def load(tmp_path: Path, root: Path, racy_seconds: float = RACY) -> DeclarationSet:
    time.sleep(RACY + 0.02)
    return load_declarations(root, cache(tmp_path, root, racy_seconds))


def test_a_second_load_reads_no_file_and_gives_the_same_summaries(
    tmp_path: Path, root: Path
) -> None:
    first = load(tmp_path, root)
    assert first.parsed == 4
    second = load(tmp_path, root)
    assert second.parsed == 0
    assert second.summaries == first.summaries == load_declarations(root).summaries
    assert [summarize(d) for d in second.declarations] == list(first.summaries)
    assert second.parsed == 4  # whole declarations, asked for, are read then
    [c] = second.summaries_by_project()["c"]
    assert (c.project, c.filename, c.version, c.needs) == ("c", "c-2.0-py3-none-any.whl", "2.0",
                                                           ("a", "b"))


def test_a_changed_file_is_read_again_even_with_its_size_and_mtime_kept(
    tmp_path: Path, root: Path
) -> None:
    load(tmp_path, root)
    path = root / "a/a-1.0-py3-none-any.toml"
    before = path.stat()
    changed = declaration(("b>=2",))
    assert len(changed) == before.st_size
    path.write_text(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime cannot be set back
    again = load(tmp_path, root)
    assert again.parsed == 1
    [a] = again.summaries_by_project()["a"]
    assert a.digest == summarize(again.load(a)).digest
    assert str(again.load(a).dependencies[0]) == "b>=2"


def test_a_file_replaced_by_another_is_read_again(tmp_path: Path, root: Path) -> None:
    load(tmp_path, root)
    path = root / "b/b-1.0-py3-none-any.toml"
    replacement = write(root.parent, "elsewhere.toml", declaration(("a",)))
    os.replace(replacement, path)
    again = load(tmp_path, root)
    assert again.parsed == 1
    assert again.by_project()["b"][1].dependency_texts == ("a",)


def test_added_and_removed_files(tmp_path: Path, root: Path) -> None:
    load(tmp_path, root)
    (root / "c/c-2.0-py3-none-any.toml").unlink()
    (root / "c").rmdir()
    write(root, "d/d-1.0-py3-none-any.toml", declaration())
    again = load(tmp_path, root)
    assert again.parsed == 1
    assert list(again.summaries_by_project()) == ["a", "b", "d"]


def test_a_file_changed_just_now_is_not_cached(tmp_path: Path, root: Path) -> None:
    # Within the racy window a change in the same clock tick could keep the file's identity.
    assert load(tmp_path, root, racy_seconds=3600).parsed == 4
    assert load(tmp_path, root, racy_seconds=3600).parsed == 4
    assert load(tmp_path, root).parsed == 4
    assert load(tmp_path, root).parsed == 0


def test_a_file_that_changes_while_in_use_is_refused(tmp_path: Path, root: Path) -> None:
    load(tmp_path, root)
    declarations = load(tmp_path, root)
    [a] = declarations.summaries_by_project()["a"]
    write(root, "a/a-1.0-py3-none-any.toml", declaration(("b>=3",)))
    with pytest.raises(DeclarationError, match="changed while ipwhl was using it"):
        declarations.load(a)


def test_invalid_files_are_reported_every_time(tmp_path: Path, root: Path) -> None:
    write(root, "e/e-1.0-py3-none-any.toml", "source = 1\n")
    for _ in range(2):
        with pytest.raises(DeclarationError, match="'source' is an integer"):
            load(tmp_path, root)
    (root / "e/e-1.0-py3-none-any.toml").unlink()
    assert load(tmp_path, root).parsed == 0  # the valid ones were cached all along


def test_symlinked_files_are_read_every_time(tmp_path: Path, root: Path) -> None:
    target = write(root, ".kept/g-1.0-py3-none-any.toml", declaration())
    (root / "g").mkdir()
    os.symlink(target, root / "g/g-1.0-py3-none-any.toml")
    write(root, ".kept/h/h-1.0-py3-none-any.toml", declaration())
    os.symlink(root / ".kept/h", root / "h")
    load(tmp_path, root)
    assert load(tmp_path, root).parsed == 2  # g's file, and h's (in a symlinked folder)


def test_a_corrupt_or_torn_cache_is_ignored(tmp_path: Path, root: Path) -> None:
    load(tmp_path, root)
    shards = list(cache(tmp_path, root).directory.iterdir())
    assert shards
    for shard in shards:
        data = shard.read_bytes()
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert load(tmp_path, root).parsed == 4
    for shard in cache(tmp_path, root).directory.iterdir():
        shard.write_bytes(shard.read_bytes()[:40])
    assert load(tmp_path, root).parsed == 4
    assert load(tmp_path, root).parsed == 0


def test_no_cache_without_a_store(tmp_path: Path, root: Path) -> None:
    assert DeclarationCache.in_store(tmp_path / "nothing", root) is None
    assert not (tmp_path / "nothing").exists()


def test_each_declarations_folder_has_its_own_cache(tmp_path: Path, root: Path) -> None:
    other = tmp_path / "other"
    write(other, "a/a-1.0-py3-none-any.toml", declaration(("c",)))
    load(tmp_path, root)
    assert load(tmp_path, other).parsed == 1
    assert load(tmp_path, root).parsed == 0
    assert cache(tmp_path, root).directory != cache(tmp_path, other).directory


def test_a_real_racy_window(tmp_path: Path, root: Path) -> None:
    # With the default window, files written a moment ago are read again until they settle.
    store = Store(tmp_path / "store").open()
    assert load_declarations(root, DeclarationCache.in_store(store.root, root)).parsed == 4
    assert load_declarations(root, DeclarationCache.in_store(store.root, root)).parsed == 4
    old = time.time() - 10
    for path in root.glob("*/*.toml"):
        os.utime(path, (old, old))  # mtime only: ctime says a moment ago
    assert load_declarations(root, DeclarationCache.in_store(store.root, root)).parsed == 4


@pytest.mark.parametrize("spelling", [
    CID, CID.upper(), "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
    "f01551220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
    "zb2rhk6GMPQF3hfzwXTaNYFLKomMeC6UXdUt6jZKPpeVirLtV",
])
def test_summaries_spell_the_content_id_canonically(tmp_path: Path, spelling: str) -> None:
    from ipwhl.cid import CID as Cid

    write(tmp_path, "a/a-1.0-py3-none-any.toml",
          f"source = 'https://example.org/a.whl'\ncontent-id = '{spelling}'\n")
    [summary] = load_declarations(tmp_path).summaries
    assert summary.content_id == str(Cid.parse(spelling))


def test_a_listed_folder_that_gains_loses_or_renames_a_file_is_listed_again(
    tmp_path: Path, root: Path
) -> None:
    load(tmp_path, root)
    assert load(tmp_path, root).parsed == 0  # folders and files from the cache
    write(root, "b/b-1.0-cp312-cp312-win_amd64.toml", declaration())
    again = load(tmp_path, root)
    assert again.parsed == 1
    assert len(again.summaries_by_project()["b"]) == 3
    (root / "b/b-1.0-py3-none-any.toml").unlink()
    assert [s.filename for s in load(tmp_path, root).summaries_by_project()["b"]] == [
        "b-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "b-1.0-cp312-cp312-win_amd64.whl"
    ]
    os.rename(root / "b/b-1.0-cp312-cp312-win_amd64.toml",
              root / "b/b-1.0-cp313-cp313-win_amd64.toml")
    assert "b-1.0-cp313-cp313-win_amd64.whl" in {
        s.filename for s in load(tmp_path, root).summaries_by_project()["b"]
    }
    (root / "a/a-1.0-py3-none-any.toml").unlink()
    (root / "a/a-1.0-py3-none-any.toml").mkdir()
    with pytest.raises(DeclarationError, match="unexpected directory"):
        load(tmp_path, root)
