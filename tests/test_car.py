"""CAR export and import: byte for byte against the JavaScript IPFS stack, refusals that leave
the store untouched."""

from __future__ import annotations

import io
import random
import shutil
import string
import subprocess
from pathlib import Path

import pytest

from ipwhl import car, dag, unixfs
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID, DAG_PB, varint_decode, varint_encode
from ipwhl.errors import IntegrityError, StoreError
from ipwhl.store import Store
from tests.conftest import ORACLES
from tests.releasefactory import Project, write_release

needs_node = pytest.mark.skipif(
    shutil.which("node") is None, reason="the CAR oracles need node (not found on PATH)"
)


def big_module(size: int, seed: int = 1) -> str:
    """Text that deflate cannot shrink much, so the wheel spans several 256 KiB chunks."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, CID, Path]:
    """A built release (one wheel of three chunks) in a store, and its tree written out."""
    base = tmp_path_factory.mktemp("release")
    spec = write_release(
        base,
        [
            Project("big", "1.0", modules={"big/__init__.py": big_module(700_000)}),
            Project("small", "2.0", requires_dist=["big>=1"]),
        ],
    )
    store = Store(base / "store").open()
    root = build_release(store, load_plan(spec.path)).root
    wheel = next(p for p in spec.wheels.values() if p.name.startswith("big"))
    assert wheel.stat().st_size > 2 * unixfs.CHUNK_SIZE
    tree = base / "tree"
    dag.write_out(store, root, tree)
    return store, root, tree


def put_tree(store: Store, path: Path) -> unixfs.Link:
    """Add a folder to the store as `ipfs add -r --cid-version=1` would."""
    if path.is_file():
        cid, tsize, blocks = unixfs.encode_file(path.read_bytes())
    else:
        links = [put_tree(store, child) for child in sorted(path.iterdir())]
        cid, tsize, blocks = unixfs.encode_directory(links)
    for block in blocks:
        store.put_block(block.cid, block.data)
    return unixfs.Link(path.name, cid, tsize)


def oracle(tool: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ORACLES / tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def snapshot(store: Store) -> dict[str, bytes]:
    """Every file of the store (tmp/ must be empty), with its contents."""
    assert not any((store.root / "tmp").iterdir()), "an import left files in tmp/"
    return {
        str(p.relative_to(store.root)): p.read_bytes()
        for p in sorted(store.root.rglob("*"))
        if p.is_file()
    }


def sections(data: bytes) -> tuple[bytes, list[bytes]]:
    """A CARv1 split into its header and its sections (each with its length prefix)."""
    length, pos = varint_decode(data, 0)
    header, pos = data[: pos + length], pos + length
    out = []
    while pos < len(data):
        length, body = varint_decode(data, pos)
        out.append(data[pos : body + length])
        pos = body + length
    return header, out


def section_cid(section: bytes) -> CID:
    _, body = varint_decode(section, 0)
    from ipwhl.cid import decode_prefix

    return decode_prefix(section[body:])[0]


# --- export ------------------------------------------------------------------------------------


@needs_node
def test_export_is_what_ipfs_dag_export_writes(release, tmp_path):
    store, root, tree = release
    out = tmp_path / "release.car"
    result = car.export_car(store, root, out)
    assert result.size == out.stat().st_size
    checked = oracle("car-check", out, "--root", root)
    assert checked.returncode == 0, checked.stderr
    made = oracle("make-car", tree, tmp_path / "reference.car", "--cid-version", "1")
    assert made.stdout.strip() == str(root)
    assert out.read_bytes() == (tmp_path / "reference.car").read_bytes()


@needs_node
def test_export_of_a_hamt_directory_matches_the_oracle(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):  # names + CIDs exceed 262144 bytes: kubo shards this directory
        (folder / f"package-with-a-fairly-long-name-number-{i:05d}-py3-none-any.toml").write_text(
            f"n = {i}\n"
        )
    store = Store(tmp_path / "store").open()
    root = put_tree(store, folder).cid
    assert unixfs.node_kind(root, store.get_block) == "hamt"
    out = tmp_path / "hamt.car"
    car.export_car(store, root, out)
    made = oracle("make-car", folder, tmp_path / "reference.car", "--cid-version", "1")
    assert made.stdout.strip() == str(root), made.stderr
    assert out.read_bytes() == (tmp_path / "reference.car").read_bytes()


def test_export_writes_each_block_once_in_depth_first_order(tmp_path):
    store = Store(tmp_path / "store").open()
    folder = tmp_path / "twins"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    same = random.Random(3).randbytes(unixfs.CHUNK_SIZE + 10)
    (folder / "a" / "x.bin").write_bytes(same)
    (folder / "b" / "y.bin").write_bytes(same)
    root = put_tree(store, folder).cid
    data = io.BytesIO()
    car.write_car(store, root, data)
    header, found = sections(data.getvalue())
    assert header == car.encode_header([root])
    cids = [section_cid(s) for s in found]
    assert len(cids) == len(set(cids)) == 6  # root, a, file node, two leaves, b
    assert cids[0] == root
    a = unixfs.lookup(root, "a", store.get_block)
    b = unixfs.lookup(root, "b", store.get_block)
    assert a and b and cids.index(a.cid) < cids.index(b.cid) == len(cids) - 1
    # With dups (a gateway's dups=y), the shared file comes twice.
    twice = [cid for cid, _ in car.walk_dag(store.get_block, root, dups=True)]
    assert len(twice) == 9


def test_export_of_a_path_and_a_corrupt_store(release, tmp_path):
    store, root, _ = release
    simple = dag.resolve(store, root, ["simple"]).cid
    out = tmp_path / "simple.car"
    car.export_car(store, simple, out)
    reader = car.CarReader(io.BytesIO(out.read_bytes()))
    assert reader.roots == [simple]
    assert next(reader.sections())[0] == simple
    # A block that no longer matches its CID stops the export and leaves no file behind.
    broken = Store(tmp_path / "broken")
    shutil.copytree(store.root, broken.root)
    index = dag.resolve(broken, root, ["index.html"]).cid
    path = broken.block_path(index)
    path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(IntegrityError, match="corrupt"):
        car.export_car(broken, root, tmp_path / "broken.car")
    assert not list(tmp_path.glob("*broken.car*"))


def test_header_round_trip_and_carv2(release):
    store, root, _ = release
    data = io.BytesIO()
    car.write_car(store, root, data)
    v1 = data.getvalue()
    # A CARv2: pragma, 40-byte header, some padding, the CARv1 payload, then an index we skip.
    offset = 11 + 40 + 5
    v2 = (
        bytes.fromhex("0aa16776657273696f6e02")
        + bytes(16)
        + offset.to_bytes(8, "little")
        + len(v1).to_bytes(8, "little")
        + (offset + len(v1)).to_bytes(8, "little")
        + bytes(5)
        + v1
        + b"index bytes that are not sections"
    )
    plain = car.CarReader(io.BytesIO(v1))
    wrapped = car.CarReader(io.BytesIO(v2))
    assert plain.roots == wrapped.roots == [root]
    assert [c for c, _, _ in plain.sections()] == [c for c, _, _ in wrapped.sections()]
    assert wrapped.version == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\x01\x01", "not a dag-cbor map"),
        (b"\x05hello", "truncated"),
        (varint_encode(3) + b"\xa1\x61a", "truncated"),
        (car.encode_header([])[:-1] + b"\x02", "version 2"),
        (b"\xff\xff\xff\xff\x0f" + b"x" * 10, "not plausible"),
    ],
)
def test_bad_headers_are_refused(data, message):
    with pytest.raises(car.InvalidCar, match=message):
        car.CarReader(io.BytesIO(data))


# --- import ------------------------------------------------------------------------------------


@pytest.fixture
def exported(release, tmp_path) -> tuple[Path, CID, bytes]:
    store, root, _ = release
    out = tmp_path / "release.car"
    car.export_car(store, root, out)
    return out, root, out.read_bytes()


def test_import_into_an_empty_store_then_pin(release, exported, tmp_path):
    _, root, tree = release
    path, _, _ = exported
    fresh = Store(tmp_path / "fresh").open()
    result = car.import_car(fresh, path, root_name="mirror")
    assert result.roots == (root,)
    assert result.written > 10 and result.present == 0 and result.unreachable == 0
    assert result.pinned == ("mirror", 1)  # the release's own sequence, from release.toml
    assert fresh.roots() == [("mirror", 1, root)]
    dag.write_out(fresh, root, tmp_path / "out")
    for original in tree.rglob("*"):
        copy = tmp_path / "out" / original.relative_to(tree)
        assert original.is_dir() or copy.read_bytes() == original.read_bytes()
    # Importing again writes nothing and pins nothing new.
    again = car.import_car(fresh, path, root_name="mirror")
    assert again.written == 0 and again.present == result.written
    # A DAG without a release.toml takes the next sequence of the line.
    other = put_tree(fresh, tree / "simple").cid
    data = io.BytesIO()
    car.write_car(fresh, other, data)
    assert car.import_car(fresh, io.BytesIO(data.getvalue()), root_name="mirror").pinned == (
        "mirror", 2
    )
    # A different release claiming the same sequence cannot take it.
    impostor = tmp_path / "impostor"
    (impostor / "ipwhl").mkdir(parents=True)
    (impostor / "ipwhl" / "release.toml").write_text('name = "mirror"\nsequence = 1\n')
    data = io.BytesIO()
    car.write_car(fresh, put_tree(fresh, impostor).cid, data)
    with pytest.raises(StoreError, match="already names"):
        car.import_car(fresh, io.BytesIO(data.getvalue()), root_name="mirror")


def test_a_corrupt_block_is_refused_and_nothing_is_written(exported, tmp_path):
    _, _, data = exported
    header, found = sections(data)
    victim = max(range(len(found)), key=lambda i: len(found[i]))  # a 256 KiB leaf
    corrupt = bytearray(data)
    at = len(header) + sum(len(s) for s in found[:victim]) + len(found[victim]) // 2
    corrupt[at] ^= 0x01
    store = Store(tmp_path / "store").open()
    before = snapshot(store)
    with pytest.raises(car.InvalidCar, match="does not hash to its CID"):
        car.import_car(store, io.BytesIO(bytes(corrupt)))
    assert snapshot(store) == before


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.9999])
def test_a_truncated_car_is_refused_and_nothing_is_written(exported, tmp_path, keep):
    path, _, data = exported
    cut = path.with_name("cut.car")
    cut.write_bytes(data[: max(1, int(len(data) * keep))])
    store = Store(tmp_path / "store").open()
    before = snapshot(store)
    with pytest.raises(car.InvalidCar, match=r"truncated|empty|incomplete"):
        car.import_car(store, cut)
    assert snapshot(store) == before


def test_a_car_missing_a_block_is_refused_unless_the_store_has_it(release, exported, tmp_path):
    source, root, _ = release
    _, _, data = exported
    header, found = sections(data)
    # Drop a directory deep in the tree: the blocks under it become unreachable, it is missing.
    victim = next(
        i for i, s in enumerate(found)
        if section_cid(s) == dag.resolve(source, root, ["simple", "big"]).cid
    )
    gap = header + b"".join(found[:victim] + found[victim + 1 :])
    store = Store(tmp_path / "store").open()
    before = snapshot(store)
    with pytest.raises(car.IncompleteCar, match="neither in the CAR nor in the store") as err:
        car.import_car(store, io.BytesIO(gap))
    assert str(section_cid(found[victim])) in str(err.value)
    assert snapshot(store) == before
    # The same CAR completes a store that already holds that block and what is under it.
    missing = section_cid(found[victim])
    for cid, block in car.walk_dag(source.get_block, missing):
        store.put_block(cid, block)
    result = car.import_car(store, io.BytesIO(gap))
    assert result.unreachable == 0
    assert dag.resolve(store, root, ["simple", "big"]).is_dir


def test_a_partial_dag_in_the_store_does_not_count_as_complete(release, exported, tmp_path):
    source, root, _ = release
    _, _, data = exported
    header, found = sections(data)
    simple = dag.resolve(source, root, ["simple"]).cid
    gap = header + b"".join(s for s in found if section_cid(s) != simple)
    store = Store(tmp_path / "store").open()
    store.put_block(simple, source.get_block(simple))  # the node, but nothing under it
    # The CAR lacks `simple` but the store has it; what `simple` links to is still checked.
    only_top = header + b"".join(
        s for s in found if section_cid(s) in {root} or section_cid(s) not in
        {c for c, _ in car.walk_dag(source.get_block, simple)}
    )
    with pytest.raises(car.IncompleteCar):
        car.import_car(store, io.BytesIO(only_top))
    assert car.import_car(store, io.BytesIO(gap)).written > 0


def test_unsupported_codecs_and_bad_sections_are_refused(tmp_path):
    store = Store(tmp_path / "store").open()
    cbor = CID.compute(b"\xa0", 0x71)  # dag-cbor {}
    blob = b"".join(car.car_stream([cbor], [(cbor, b"\xa0")]))
    with pytest.raises(car.InvalidCar, match="dag-cbor is not supported"):
        car.import_car(store, io.BytesIO(blob))
    bad_pb = b"\xff\xff"
    pb = CID.compute(bad_pb, DAG_PB)
    blob = b"".join(car.car_stream([pb], [(pb, bad_pb)]))
    with pytest.raises(car.InvalidCar, match="dag-pb"):
        car.import_car(store, io.BytesIO(blob))
    zero = car.encode_header([pb]) + b"\x00"
    with pytest.raises(car.InvalidCar, match="claims 0 bytes"):
        car.import_car(store, io.BytesIO(zero))
    assert snapshot(store) == {"FORMAT": b"1\n"}


def test_import_from_a_stream_that_cannot_seek(exported, tmp_path):
    _, root, data = exported

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[override]
            chunk = self.inner.read(min(len(buffer), 1000))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    store = Store(tmp_path / "store").open()
    result = car.import_car(store, io.BufferedReader(Pipe()))  # type: ignore[arg-type]
    assert result.roots == (root,)
    assert not any((store.root / "tmp").iterdir())


# --- the commands --------------------------------------------------------------------------------


def test_export_and_import_commands(release, tmp_path, capsys):
    from ipwhl.cli import main

    store, root, _ = release
    out = tmp_path / "simple.car"
    assert main(["export", "--store", str(store.root), f"{root}/simple", "-o", str(out)]) == 0
    simple = dag.resolve(store, root, ["simple"]).cid
    assert car.CarReader(io.BytesIO(out.read_bytes())).roots == [simple]
    fresh = tmp_path / "fresh"
    assert main(["import", "--store", str(fresh), str(out), "--root-name", "simple"]) == 0
    printed = capsys.readouterr()
    assert printed.out == f"{simple}\n"
    assert "rooted as simple #1" in printed.err
    # A broken CAR: exit 6, one line saying why, nothing written.
    broken = tmp_path / "broken.car"
    broken.write_bytes(out.read_bytes()[:-7])
    before = snapshot(Store(fresh))
    assert main(["import", "--store", str(fresh), str(broken)]) == 6
    assert capsys.readouterr().err.startswith(f"ipwhl: error: {broken}: truncated")
    assert snapshot(Store(fresh)) == before
    assert main(["export", "--store", str(fresh), f"{root}", "-o", str(tmp_path / "x.car")]) == 7
    assert not (tmp_path / "x.car").exists()


def test_export_memory_stays_flat(tmp_path):
    import tracemalloc

    store = Store(tmp_path / "store").open()
    data = random.Random(9).randbytes(96 * unixfs.CHUNK_SIZE)  # 24 MiB, 96 leaves
    cid, _, blocks = unixfs.encode_file(data)
    for block in blocks:
        store.put_block(block.cid, block.data)

    class Counting(io.RawIOBase):
        size = 0

        def writable(self) -> bool:
            return True

        def write(self, chunk) -> int:  # type: ignore[override]
            self.size += len(chunk)
            return len(chunk)

    sink = Counting()
    tracemalloc.start()
    result = car.write_car(store, cid, sink)  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sink.size == result.size > len(data)
    assert peak < len(data) / 3  # a window of leaves, not the file


def test_a_section_claiming_a_huge_block_is_refused(tmp_path):
    store = Store(tmp_path / "store").open()
    cid = CID.compute(b"x", 0x55)
    blob = car.encode_header([cid]) + varint_encode(1 << 30) + bytes(cid) + b"x"
    with pytest.raises(car.InvalidCar, match="claims 1073741824 bytes"):
        car.import_car(store, io.BytesIO(blob))


def test_a_link_to_an_identity_cid_holding_a_malformed_node_is_refused(tmp_path):
    # Found by the mutation property test: an identity dag-pb CID carries its node in the CID
    # itself; a malformed one is an invalid CAR, not a crash.
    from ipwhl.cid import IDENTITY

    inline = CID(1, DAG_PB, IDENTITY, b"\x7a\x00")  # field 15, wire type 2: not dag-pb
    root, _, blocks = unixfs.encode_directory([unixfs.Link("x", inline, 2)])
    out = io.BytesIO()
    out.write(car.encode_header([root]))
    for block in blocks:
        binary = bytes(block.cid)
        out.write(varint_encode(len(binary) + len(block.data)) + binary + block.data)
    store = Store(tmp_path / "store").open()
    with pytest.raises(car.InvalidCar, match="unexpected field 15"):
        car.import_car(store, io.BytesIO(out.getvalue()))
    assert list(store.names("blocks")) == []
