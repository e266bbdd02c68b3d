"""The `ipwhl` command: argument parsing and one small function per command."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .completion import SHELLS
from .errors import IpwhlError, NotFound
from .terminal import error_text, palette_for, violation_text

if TYPE_CHECKING:  # imported lazily at run time, for start-up time
    from datetime import datetime, timedelta

    from .cid import CID
    from .evaluator import Plan
    from .importcheck import ImportOutcome
    from .progress import Bar
    from .releasefile import ReleaseSpec
    from .signing import SecretKey
    from .store import Store
    from .trust import ReleaseRecord, Verified

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in ipwhl, not a problem with the input

JSON_HELP = "print a JSON document on stdout instead (keys: see docs/reference/)"
DEFAULT_EXPIRY = "30d"  # of a signed release record
NO_JSON = {"serve", "completion"}  # commands with nothing to report
# Keys of `gc --json` and `store verify --json`, always all present (documented).
GC_KINDS = ("tmp", "objects", "sources", "blocks", "layouts", "records", "keys")
VERIFIED_KINDS = ("objects", "blocks", "layouts", "records", "sources", "roots")

EXAMPLES = {
    "eval": "examples:\n  ipwhl eval examples/release.toml\n"
    "  ipwhl eval examples/release.toml --json\n"
    "  ipwhl eval release.toml --on-top-of $PREVIOUS   # what a build would redo, and why",
    "diff": "examples:\n  ipwhl diff $OLD $NEW\n  ipwhl diff $OLD $NEW --json",
    "check": "examples:\n  ipwhl check examples/release.toml\n"
    "  ipwhl check examples/release.toml --import --jobs 4   # install and import each wheel\n"
    "  ipwhl check release.toml --json | jq -r '.violations[]'",
    "roots": "examples:\n  ipwhl roots\n  ipwhl roots add mirror bafy...\n"
    "  ipwhl roots rm example@3\n  ipwhl roots rm example\n"
    "  ipwhl roots --json | jq -r '.roots[].cid'",
    "gc": "examples:\n  ipwhl gc --dry-run\n  ipwhl gc\n"
    "  ipwhl gc --older-than 7d --max-freed 10G\n  ipwhl gc --dry-run --json",
    "store": "examples:\n  ipwhl store verify\n  ipwhl store verify --repair\n"
    "  ipwhl store verify --json",
    "build": "examples:\n  ipwhl build examples/release.toml\n"
    "  ipwhl build release.toml --sign release.key --keep 3\n"
    "  ipwhl build release.toml --json | jq -r .root\n"
    "  ipwhl build release.toml --on-top-of bafy...\n"
    "  ipwhl build release.toml --on-top-of bafy... --from https://ipfs.io",
    "get": "examples:\n  ipwhl get $CID -o release/\n"
    "  ipwhl get $CID/simple/index.html -o index.html",
    "ls": "examples:\n  ipwhl ls $CID\n  ipwhl ls $CID/simple/requests\n"
    "  ipwhl ls $CID/simple --json | jq -r '.entries[].name'",
    "export": "examples:\n  ipwhl export $CID -o release.car && ipfs dag import release.car\n"
    "  ipwhl export $CID/simple -o simple.car",
    "import": "examples:\n  ipwhl import release.car\n"
    "  ipwhl import release.car --root-name mirror\n"
    "  curl -s 'https://ipfs.io/ipfs/'$CID'?format=car' | ipwhl import -",
    "fetch": "examples:\n  ipwhl fetch $CID --from https://ipfs.io\n"
    "  ipwhl fetch $CID --from http://mirror.example:8080 --from https://dweb.link "
    "--root-name mirror\n  IPWHL_GATEWAYS=https://ipfs.io,https://dweb.link ipwhl fetch $CID",
    "publish": "examples:\n  ipwhl publish $CID --to http://127.0.0.1:5001\n"
    "  ipwhl publish $CID --to /ip4/10.0.0.2/tcp/5001 --rpc-auth bearer:$SECRET\n"
    "  ipwhl publish $CID --pinning-service https://api.pinata.cloud/psa --token $JWT "
    "--origin /ip4/203.0.113.5/tcp/4001/p2p/12D3Koo... --wait 600",
    "serve": "examples:\n  ipwhl serve\n  ipwhl serve --port 9000\n"
    "  pip install --index-url http://127.0.0.1:8080/ipfs/$CID/simple/ requests",
    "keygen": "examples:\n  ipwhl keygen --public release.pub --secret release.key\n"
    "  IPWHL_KEY_PASSPHRASE=... ipwhl keygen --public release.pub --secret release.key",
    "sign": "examples:\n  ipwhl sign $CID --key release.key -o example.record\n"
    "  ipwhl sign $CID --key release.key -o example.record --expires 90d",
    "verify": "examples:\n  ipwhl verify example.record --pubkey release.pub\n"
    "  CID=$(ipwhl verify example.record --pubkey release.pub --state trust.json)\n"
    "  ipwhl verify example.record --pubkey release.pub --from https://ipfs.io --json",
    "use": "examples:\n"
    "  ipwhl use example.record --gateway http://127.0.0.1:8080 --pubkey release.pub\n"
    "  ipwhl use example.record --gateway https://gw.example --print --scope user",
    "declare": "examples:\n  ipwhl declare requests --release release.toml --with-deps\n"
    "  ipwhl declare requests --release release.toml --with-deps --json | jq '.declared'\n"
    "  ipwhl declare 'pyyaml==6.0.2' -d pkgs --supported 'cp312 manylinux_2_17_x86_64' "
    "--supported 'cp312 win_amd64'\n"
    "  ipwhl declare dist/example-1.0-py3-none-any.whl -d pkgs --release release.toml\n"
    "  ipwhl declare numpy --release release.toml --index-url https://mirror.example/simple/",
    "update": "examples:\n  ipwhl update --release release.toml --dry-run > plan.diff\n"
    "  ipwhl update requests urllib3 --release release.toml\n"
    "  ipwhl update --release release.toml --index-url https://mirror.example/simple/\n"
    "  ipwhl update --release release.toml --dry-run --json | jq '.changes'",
    "roots add": "examples:\n  ipwhl roots add mirror $CID\n"
    "  ipwhl roots add example bafy... --json",
    "roots rm": "examples:\n  ipwhl roots rm example@3   # one release of the line\n"
    "  ipwhl roots rm example     # every release of the line",
    "store verify": "examples:\n  ipwhl store verify\n  ipwhl store verify --repair\n"
    "  ipwhl store verify --json | jq '.damage'",
    "completion": "examples:\n  eval \"$(ipwhl completion bash)\"          # in ~/.bashrc\n"
    "  ipwhl completion zsh > ~/.zfunc/_ipwhl    # a directory of your $fpath\n"
    "  ipwhl completion fish > ~/.config/fish/completions/ipwhl.fish",
}


class _ReleaseFileMissing(IpwhlError):
    """The release file named on the command line is not there: one line, not a violation."""

    exit_code = 3


def _load_plan(release: str, store: Store | None = None, *, create: bool = False) -> Plan:
    """The release's plan; declarations unchanged since a run in `store` are not read again
    (`create`: open the store first, as a build will)."""
    from .build import load_plan

    path = Path(release)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise _ReleaseFileMissing(
            f"cannot read release file {release} ({reason}); "
            "expected a release.toml, such as examples/release.toml"
        )
    if store is not None and create:
        store.open()
    return load_plan(path, store)


def _store(args: argparse.Namespace) -> Store:
    from .store import Store, default_store_path

    return Store(default_store_path(args.store))


def _workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def _print_violations(violations: Sequence[object]) -> None:
    palette = palette_for(sys.stderr)
    for violation in violations:
        print(violation_text(str(violation), palette), file=sys.stderr)
    print(f"ipwhl: {len(violations)} violation(s)", file=sys.stderr)


def _emit(document: object) -> None:
    """A --json document on stdout: one JSON value, indented, keys as documented."""
    json.dump(document, sys.stdout, indent=2)
    print()


def _say(args: argparse.Namespace, text: str) -> None:
    """A line for people on stderr, unless -q."""
    if not args.quiet:
        print(text, file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from .checks import to_violations
    from .derivations import Realiser

    store = _store(args)
    plan = _load_plan(args.release, store)
    realiser = Realiser(store)
    overlay = None
    on_top_of = args.on_top_of or plan.spec.on_top_of
    if on_top_of is not None:
        from .cid import CID
        from .overlay import load_previous, plan_overlay

        overlay = plan_overlay(plan, load_previous(store, CID.parse(on_top_of)))
    findings = plan.all_declared_findings(store, None if overlay is None else overlay.recheck)
    violations = to_violations(findings, plan.by_relpath)

    def entries() -> Iterator[dict[str, Any]]:  # one at a time: a release may be huge
        for project in plan.projects:
            steps = [
                {"builder": d.builder, "label": d.label, "key": d.key,
                 "realised": realiser.is_realised(d)}
                for d in project.derivations()
            ]
            entry = {
                "project": project.project,
                "version": project.version,
                "wheels": [w.summary.filename for w in project.wheels],
                "derivations": steps,
            }
            if overlay is not None:
                entry["overlay"] = {
                    "rebuild": project.project in overlay.rebuilt,
                    "recheck": project.project in overlay.recheck,
                    "reason": overlay.reasons.get(project.project, "unchanged: reused as it was"),
                }
            yield entry

    removed = sorted(overlay.removed) if overlay is not None else []
    if args.json:
        document = {"release": plan.spec.name, "projects": list(entries()),
                    "violations": [str(v) for v in violations]}
        if overlay is not None:
            document["on_top_of"] = str(overlay.previous.cid)
            document["removed"] = removed
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        total = realised = count = 0
        for project in entries():
            count += 1
            reason = f"  [{project['overlay']['reason']}]" if "overlay" in project else ""
            print(f"{project['project']} {project['version']}{reason}")
            for wheel in project["wheels"]:
                print(f"  {wheel}")
            for step in project["derivations"]:
                total += 1
                realised += step["realised"]
                state = "realised" if step["realised"] else "to build"
                print(f"    {step['builder']:<15} {step['key'][:16]}  {state}")
        for project in removed:
            print(f"{project}  [removed]")
        print(f"{count} projects, {total} derivations, {realised} realised")
        if overlay is not None:
            print(f"on top of {overlay.previous.cid} (#{overlay.previous.sequence}): "
                  f"{len(overlay.rebuilt)} projects to rebuild, {len(overlay.recheck)} to recheck, "
                  f"{len(overlay.removed)} removed, "
                  f"{len(plan.projects) - len(overlay.rebuilt)} reused")
    if violations:
        _print_violations(violations)
        return 4
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from .cid import CID
    from .diff import diff_releases

    result = diff_releases(_store(args), CID.parse(args.old), CID.parse(args.new))
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(f"{result.old} (#{result.old_sequence}) -> {result.new} (#{result.new_sequence})")
    for line in result.environments_gained:
        print(f"  + environment {line}")
    for line in result.environments_lost:
        print(f"  - environment {line}")
    if not result.changes:
        print("  no project changed")
    for change in result.changes:
        versions = {
            "added": f"{change.new_version}",
            "removed": f"{change.old_version}",
        }.get(change.kind, f"{change.old_version} -> {change.new_version}")
        print(f"  {change.kind:<10} {change.project} {versions}")
        for wheel in change.wheels_added:
            print(f"      + {wheel}")
        for wheel in change.wheels_removed:
            print(f"      - {wheel}")
        if change.kind not in {"added", "removed"}:
            for dependency in change.dependencies_added:
                print(f"      + requires {dependency}")
            for dependency in change.dependencies_removed:
                print(f"      - requires {dependency}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .build import check_release
    from .progress import progress_for

    store = _store(args)
    plan = _load_plan(args.release, store, create=True)
    # sys.stderr as it is now, not as it was at import: callers of main() may redirect it.
    progress = progress_for(sys.stderr, quiet=args.quiet)
    with store.lock():  # beside builds, never during a gc
        with store.batch():  # records and blocks made durable together (see Store.batch)
            result = check_release(store, plan, progress=progress, workers=_workers(),
                                   need_wheels=args.imports)
        document = {
            "release": plan.spec.name,
            "wheels": len(plan.declarations.declarations),
            "projects": len(plan.projects),
            "ok": not result.violations,
            "violations": [str(v) for v in result.violations],
            "imports": None,
        }
        if result.violations:
            _print_violations(result.violations)
            if args.imports:
                _say(args, "ipwhl: import checks not run: the release must pass the four "
                     "checks first")
            if args.json:
                _emit(document)
            return 4
        _say(args, f"ipwhl: {plan.spec.name}: {len(plan.declarations.declarations)} wheels of "
             f"{len(plan.projects)} projects pass all four checks")
        code = EXIT_OK
        if args.imports:
            code, document["imports"] = _check_imports(args, store, plan, result)
            document["ok"] = code == EXIT_OK
            document["violations"] = document["imports"]["violations"]
    if args.json:
        _emit(document)
    return code


def _check_imports(
    args: argparse.Namespace, store: Store, plan: Plan, checked: object
) -> tuple[int, dict[str, object]]:
    from .importcheck import check_imports
    from .progress import ImportChecksProgress

    progress = ImportChecksProgress(sys.stderr, quiet=args.quiet)
    report = check_imports(store, plan, checked, jobs=args.jobs,  # type: ignore[arg-type]
                           progress=progress)
    palette = palette_for(sys.stderr)
    for note in report.notes:
        _say(args, f"ipwhl: {palette.paint('note:', 'note')} {note}")
    violations = report.violations
    document: dict[str, object] = {
        "environments": [e.line for e in report.environments],
        "checks": [_import_outcome(outcome) for outcome in report.outcomes],
        "notes": list(report.notes),
        "violations": [str(v) for v in violations],
    }
    if violations:
        _print_violations(violations)
        if args.verbose:
            for outcome in report.outcomes:
                for failure in outcome.failures:
                    print(f"{outcome.check.label}: {failure.module}:", file=sys.stderr)
                    print("\n".join(f"    {line}" for line in failure.traceback),
                          file=sys.stderr)
        return 4, document
    if report.outcomes:
        _say(args, f"ipwhl: {len(report.outcomes)} import checks pass on "
             f"{'; '.join(e.line for e in report.environments)}")
    return EXIT_OK, document


def _import_outcome(outcome: ImportOutcome) -> dict[str, object]:
    check = outcome.check
    return {
        "project": check.declaration.project,
        "version": str(check.declaration.version),
        "wheel": check.declaration.filename,
        "extra": check.extra,
        "environment": check.environment.line,
        "modules": list(check.top_level),
        "ok": outcome.ok,
        "reused": outcome.reused,
        "install_error": outcome.install_error,
        "failures": [
            {"module": f.module, "error": f.error,
             "where": list(f.where) if f.where else None, "traceback": list(f.traceback)}
            for f in outcome.failures
        ],
    }


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_release
    from .errors import CheckFailed
    from .progress import progress_for

    store = _store(args)
    plan = _load_plan(args.release, store, create=True)
    # The key (and its passphrase) before a long build, not after it.
    signing = (_read_key(args.sign), _record_times(args)) if args.sign else None
    progress = progress_for(sys.stderr, quiet=args.quiet)
    previous = args.on_top_of or plan.spec.on_top_of
    if previous is not None:
        _ensure_whole(args, store, previous, args.gateways)
    try:
        result = build_release(store, plan, on_top_of=args.on_top_of, progress=progress,
                               workers=_workers())
    except CheckFailed as failed:
        _print_violations(failed.violations)
        if args.json:
            _emit({"root": None, "name": plan.spec.name, "violations":
                   [str(v) for v in failed.violations]})
        return failed.exit_code
    if not args.json:
        print(result.root)
    dropped: list[int] = []
    if args.keep:
        from .gc import prune_roots

        dropped = prune_roots(store, result.name, args.keep)
        if dropped:
            _say(args, f"ipwhl: unrooted {result.name} #{', #'.join(map(str, dropped))} "
                 f"(--keep {args.keep}); `ipwhl gc` frees their space")
    ran = sum(result.realiser.ran.values())
    reused = sum(result.realiser.reused.values())
    _say(args, f"ipwhl: built {result.name} #{result.sequence}: {ran} steps run, {reused} reused")
    signed = None
    if signing is not None:
        record = Path(args.record or f"{result.name}-{result.sequence}.record")
        signed = _sign_release(args, store, str(result.root), *signing, record)
    if args.json:
        _emit({"root": str(result.root), "name": result.name, "sequence": result.sequence,
               "previous": result.previous, "steps_run": ran, "steps_reused": reused,
               "unrooted": dropped, "signed": signed, "violations": []})
    return EXIT_OK


def _say_waiting(what: str, shown: Bar | None = None) -> Callable[[], None]:
    text = f"ipwhl: waiting for {what} to finish…"
    if shown is not None:  # a progress bar on screen: the line goes above it
        return lambda: shown.message(text)
    return lambda: print(text, file=sys.stderr)


def cmd_roots(args: argparse.Namespace) -> int:
    from .gc import describe_roots, list_roots
    from .progress import Activity

    with Activity("roots: sizing closures", stream=sys.stderr, quiet=args.quiet):
        roots = list_roots(_store(args).open())
    if args.json:
        _emit({"roots": [
            {"name": root.name, "sequence": root.sequence, "cid": str(root.cid),
             "date": root.date.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "closure_bytes": root.closure_bytes, "missing": root.missing,
             "built": root.built}
            for root in roots
        ]})
        return EXIT_OK
    for line in describe_roots(roots):
        print(line)
    return EXIT_OK


def cmd_roots_add(args: argparse.Namespace) -> int:
    from .cid import CID
    from .gc import pin

    cid = CID.parse(args.cid)
    sequence, missing = pin(_store(args).open(), args.name, cid)
    _say(args, f"ipwhl: pinned {cid} as {args.name} #{sequence}")
    if missing:
        _say(args, f"ipwhl: {missing} blocks of it are not in the store yet")
    if args.json:
        _emit({"name": args.name, "sequence": sequence, "cid": str(cid), "missing": missing})
    return EXIT_OK


def cmd_roots_rm(args: argparse.Namespace) -> int:
    from .gc import unpin

    name, _, sequence = args.root.partition("@")
    if sequence and not sequence.isdigit():
        raise _BadArgument(f"{args.root!r}: expected NAME or NAME@SEQUENCE, such as example@3")
    dropped = unpin(_store(args).open(), name, int(sequence) if sequence else None)
    _say(args, f"ipwhl: unrooted {name} #{', #'.join(map(str, dropped))}; "
         "`ipwhl gc` frees their space")
    if args.json:
        _emit({"name": name, "unrooted": dropped})
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from .gc import collect_garbage
    from .progress import Activity

    store = _store(args).open()
    with Activity("gc: marking and sweeping", stream=sys.stderr, quiet=args.quiet) as shown:
        report = collect_garbage(
            store, dry_run=args.dry_run, max_freed=args.max_freed,
            older_than=args.older_than, on_wait=_say_waiting("running builds", shown),
        )
    if args.json:
        _emit({
            "dry_run": report.dry_run,
            "deleted": {kind: {"files": report.files[kind], "bytes": report.freed[kind]}
                        for kind in GC_KINDS},
            "freed_bytes": report.total_freed,
            "kept": report.kept,
            "files_read": report.files_read,
            "bytes_read": report.bytes_read,
            "stopped_early": report.stopped_early,
        })
        return EXIT_OK
    print(f"ipwhl: {report}")
    return EXIT_OK


def cmd_store_verify(args: argparse.Namespace) -> int:
    from .progress import Steps
    from .verify import verify_store

    steps = Steps({"hash": "store verify: hashing objects"}, unit="B", stream=sys.stderr,
                  quiet=args.quiet)
    try:
        report = verify_store(_store(args).open(), repair=args.repair,
                              on_wait=_say_waiting("running builds"), progress=steps)
    finally:
        steps.close()
    if args.json:
        _emit({
            "repair": report.repair,
            "checked": {kind: report.checked[kind] for kind in VERIFIED_KINDS},
            "bytes_hashed": report.bytes_hashed,
            "damage": [{"kind": d.kind, "name": d.name, "problem": d.problem,
                        "action": d.action or None} for d in report.damage],
            "missing": [{"root": root, "what": what} for root, what in report.missing],
            "notes": list(report.notes),
            "exit_code": report.exit_code,
        })
        return report.exit_code
    lines = report.lines()
    for line in lines[:-1]:
        print(line)
    if not args.quiet or report.exit_code:
        print(f"ipwhl: {lines[-1]}", file=sys.stderr)
    return report.exit_code


class _BadArgument(IpwhlError):
    exit_code = EXIT_USAGE


def _amount(parse: str | Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type from a parser, or from `ipwhl.gc`'s parser of that name (imported only
    when an option needs it, to keep it off every command's start-up)."""

    def convert(text: str) -> float:
        if isinstance(parse, str):
            from . import gc

            function = getattr(gc, parse)
        else:
            function = parse
        try:
            return function(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cmd_get(args: argparse.Namespace) -> int:
    from .dag import resolve, split_path, write_out
    from .progress import Activity

    store = _store(args)
    root, segments = split_path(args.path)
    target = resolve(store, root, segments)
    with Activity(f"get: writing {args.output}", stream=sys.stderr, quiet=args.quiet):
        count = write_out(store, target.cid, Path(args.output))
    _say(args, f"ipwhl: wrote {count} file(s) to {args.output}")
    if args.json:
        _emit({"cid": str(target.cid), "output": args.output, "files": count})
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from .dag import list_dir, node, resolve, split_path

    store = _store(args)
    root, segments = split_path(args.path)
    target = resolve(store, root, segments)
    if not target.is_dir:
        if args.json:
            _emit({"cid": str(target.cid), "type": "file", "size": target.size,
                   "name": segments[-1] if segments else None})
            return EXIT_OK
        print(f"{target.cid} {target.size} {segments[-1] if segments else ''}")
        return EXIT_OK
    entries = [(link, node(store, link.cid).is_dir) for link in list_dir(store, target.cid)]
    if args.json:
        _emit({"cid": str(target.cid), "type": "directory", "entries": [
            {"name": link.name, "cid": str(link.cid), "size": link.tsize,
             "type": "directory" if is_dir else "file"}
            for link, is_dir in entries
        ]})
        return EXIT_OK
    for link, is_dir in entries:
        print(f"{link.cid} {link.tsize} {link.name}{'/' if is_dir else ''}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .gateway import GatewayConfig, serve

    serve(_store(args).open(), GatewayConfig(host=args.host, port=args.port))
    return EXIT_OK


def _ensure_whole(
    args: argparse.Namespace, store: Store, cid_text: str, gateways: Sequence[str] | None
) -> None:
    """The DAG under `cid_text` in the store, fetched from the gateways first if needed."""
    from .cid import CID
    from .progress import GatewayProgress
    from .remote import configured_gateways, ensure_dag

    progress = GatewayProgress(sys.stderr, quiet=args.quiet, label=f"fetch {cid_text[:16]}…")
    try:
        stats = ensure_dag(store, CID.parse(cid_text), configured_gateways(gateways or ()),
                           progress=progress)
    finally:
        progress.close()
    if stats is not None:
        _say(args, f"ipwhl: {cid_text}: {progress.summary()}")


def cmd_export(args: argparse.Namespace) -> int:
    from .car import export_car
    from .dag import resolve, split_path
    from .progress import Bar

    store = _store(args)
    root, segments = split_path(args.path)
    if args.json and args.output == "-":
        raise _Usage("--json writes to stdout, and so does -o -: write the CAR to a file")
    target = resolve(store, root, segments)
    bar = Bar("export", total=_dag_size(store, target.cid), unit="B", stream=sys.stderr,
              quiet=args.quiet)
    with bar:
        result = export_car(store, target.cid, args.output,
                            progress=lambda _step, done, _total: bar.update(done))
    _say(args, f"ipwhl: wrote {target.cid} to {args.output}: {result.blocks} blocks, "
         f"{result.size:,} bytes")
    if args.json:
        _emit({"root": str(target.cid), "output": args.output, "blocks": result.blocks,
               "size": result.size})
    return EXIT_OK


def _dag_size(store: Store, cid: CID) -> int:
    """About what a CAR of `cid` holds: its block and its links' cumulative sizes (0 when
    unknown); enough for a progress bar."""
    from .cid import RAW
    from .unixfs import decode_pbnode

    try:
        data = store.get_block(cid)
        if cid.codec == RAW:
            return len(data)
        return len(data) + sum(link.tsize or 0 for link in decode_pbnode(data).links)
    except (IpwhlError, ValueError):
        return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .car import import_car
    from .progress import Steps

    store = _store(args).open()
    steps = Steps({"check": "import: checking", "write": "import: writing"}, unit="B",
                  stream=sys.stderr, quiet=args.quiet)
    try:
        result = import_car(store, args.car, root_name=args.root_name, progress=steps)
    finally:
        steps.close()
    if args.json:
        _emit({"roots": [str(root) for root in result.roots], "written": result.written,
               "present": result.present, "replaced": result.replaced, "size": result.size,
               "unreachable": result.unreachable,
               "pinned": {"name": result.pinned[0], "sequence": result.pinned[1]}
               if result.pinned else None})
    else:
        for root in result.roots:
            print(root)
    said = (f"ipwhl: imported {result.written} blocks ({result.size / 1e6:,.1f} MB), "
            f"{result.present} already here")
    if result.replaced:
        said += f"; {result.replaced} of the store's copies were corrupt and are replaced"
    if result.unreachable:
        said += f"; left out {result.unreachable} blocks no root reaches"
    if result.pinned:
        said += f"; rooted as {result.pinned[0]} #{result.pinned[1]}"
    _say(args, said)
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    from .car import pin_root
    from .dag import InvalidPath, split_path
    from .progress import GatewayProgress
    from .remote import configured_gateways, fetch_dag

    root, segments = split_path(args.cid)
    if segments:
        raise InvalidPath(f"fetch takes a release CID, not a path: {args.cid}")
    store = _store(args).open()
    progress = GatewayProgress(sys.stderr, quiet=args.quiet)
    try:
        stats = fetch_dag(store, root, configured_gateways(args.gateways or ()),
                          progress=progress, workers=args.jobs)
    finally:
        progress.close()
    sequence = pin_root(store, root, args.root_name) if args.root_name else None
    pinned = f"; rooted as {args.root_name} #{sequence}" if args.root_name else ""
    _say(args, f"ipwhl: {root}: {progress.summary()}{pinned}")
    if args.json:
        _emit({"cid": str(root), "fetched": stats.fetched, "bytes": stats.nbytes,
               "present": stats.present,
               "pinned": {"name": args.root_name, "sequence": sequence}
               if args.root_name else None})
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from .dag import InvalidPath, split_path
    from .errors import NotFound
    from .publish import pin_remotely, publish_to_kubo
    from .remote import missing_blocks

    if not args.to and not args.pinning_service:
        raise _Usage("say where to publish: --to URL (a kubo node's RPC) and/or "
                     "--pinning-service URL")
    root, segments = split_path(args.cid)
    if segments:
        raise InvalidPath(f"publish takes a release CID, not a path: {args.cid}")
    store = _store(args)
    if args.to and missing_blocks(store, root):
        raise NotFound(f"{root} is not wholly in the store {store.root}; `ipwhl fetch` it first")
    from .progress import Activity

    kubo: list[dict[str, object]] = []
    document: dict[str, object] = {"cid": str(root), "kubo": kubo, "pinning_service": None}
    for url in args.to or ():
        with Activity(f"publish: {url}", stream=sys.stderr, quiet=args.quiet):
            done = publish_to_kubo(store, root, url, auth=args.rpc_auth or
                                   os.environ.get("IPWHL_RPC_AUTH"))
        _say(args, f"ipwhl: {url}: imported and pinned {root} ({done.car_size:,} bytes of CAR)")
        kubo.append({"url": url, "car_size": done.car_size})
    if args.pinning_service:
        name = args.name or _release_label(store, root)
        with Activity(f"publish: {args.pinning_service}", stream=sys.stderr, quiet=args.quiet):
            status = pin_remotely(
                args.pinning_service, args.token or os.environ.get("IPWHL_PINNING_TOKEN", ""),
                root, name=name, origins=args.origin or (), wait=args.wait,
            )
        _say(args, f"ipwhl: {args.pinning_service}: {root} is {status.status} "
             f"(request {status.requestid})")
        if status.status != "pinned" and status.delegates:
            _say(args, "ipwhl: to hand it the blocks sooner: ipfs swarm connect "
                 + " ".join(status.delegates))
        document["pinning_service"] = {
            "url": args.pinning_service, "name": name, "status": status.status,
            "requestid": status.requestid, "delegates": list(status.delegates),
        }
    if args.json:
        _emit(document)
    return EXIT_OK


def _release_label(store: Store, root: object) -> str | None:
    from .build import read_release_info

    try:
        info = read_release_info(store, root)  # type: ignore[arg-type]
        return f"{info['name']} #{info['sequence']}"
    except (IpwhlError, KeyError, ValueError):
        return None


class _Usage(IpwhlError):
    exit_code = EXIT_USAGE


def _passphrase(*, new: bool = False) -> Callable[[], str]:
    """The secret key's passphrase, asked for only when needed: $IPWHL_KEY_PASSPHRASE, else the
    terminal (twice for a new key)."""

    def ask() -> str:
        import getpass

        from .signing import InvalidKey

        given = os.environ.get("IPWHL_KEY_PASSPHRASE")
        if given:
            return given
        try:
            first = getpass.getpass("ipwhl: passphrase for the secret key: ")
            if new and getpass.getpass("ipwhl: the same passphrase again: ") != first:
                raise InvalidKey("the two passphrases differ")
        except EOFError:
            raise InvalidKey(
                "no passphrase: set IPWHL_KEY_PASSPHRASE or run in a terminal"
            ) from None
        if new and not first:
            raise InvalidKey("an empty passphrase would leave the secret key unprotected")
        return first

    return ask


def _when(text: str) -> timedelta | datetime:
    """--expires: a duration after creation (30d, 12h, 2w) or an RFC 3339 date-time."""
    from .trust import parse_duration, parse_time

    for parse in (parse_duration, parse_time):
        try:
            return parse(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r} is neither a duration (30d, 12h, 2w) nor a "
                                     "date-time (2026-12-31T00:00:00Z)")


def _time(text: str) -> datetime:
    from .trust import parse_time

    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _record_times(args: argparse.Namespace) -> tuple[datetime, datetime]:
    from .trust import record_times

    try:
        expires = _when(DEFAULT_EXPIRY) if args.expires is None else args.expires
        return record_times(getattr(args, "created", None), expires)
    except ValueError as error:
        raise _Usage(str(error)) from None


def _sign_release(args: argparse.Namespace, store: Store, cid: str, key: SecretKey,
                  times: tuple[datetime, datetime], output: Path) -> dict[str, object]:
    """Sign `cid`, write RECORD and RECORD.minisig; returns the --json description."""
    from .trust import format_time, make_record, save_in_store, sign_record, write_signed

    created, expires = times
    record = make_record(store, cid, created=created, expires=expires)
    data, signature = sign_record(record, key)
    write_signed(output, data, signature)
    save_in_store(store, data, signature)
    key_id = key.public_key().key_id_text
    _say(args, f"ipwhl: signed {record.name} #{record.sequence} ({record.cid}) with key "
         f"{key_id}, valid until {format_time(record.expires)}: wrote {output} and "
         f"{output}.minisig")
    return {**_record_json(record), "key_id": key_id, "record": str(output),
            "signature": f"{output}.minisig"}


def _record_json(record: ReleaseRecord) -> dict[str, object]:
    """A release record's fields for --json (times as RFC 3339, UTC)."""
    from .trust import format_time

    return {"name": record.name, "sequence": record.sequence, "cid": record.cid,
            "previous": record.previous, "created": format_time(record.created),
            "expires": format_time(record.expires)}


def cmd_keygen(args: argparse.Namespace) -> int:
    from .signing import generate, write_key_pair

    key = generate()
    write_key_pair(key, Path(args.public), Path(args.secret), _passphrase(new=True)(),
                   force=args.force)
    public = key.public_key()
    if args.json:
        _emit({"public_key": public.to_base64(), "key_id": public.key_id_text,
               "public": args.public, "secret": args.secret})
    else:
        print(public.to_base64())
    _say(args, f"ipwhl: wrote key {public.key_id_text}: public {args.public}, "
         f"secret {args.secret} (encrypted; keep it secret)")
    return EXIT_OK


def _read_key(path: str) -> SecretKey:
    from .signing import read_secret_key

    return read_secret_key(path, _passphrase())


def cmd_sign(args: argparse.Namespace) -> int:
    store = _store(args).open()
    times = _record_times(args)
    key = _read_key(args.key)
    signed = _sign_release(args, store, args.cid, key, times, Path(args.output))
    if args.json:
        _emit(signed)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> Verified:
    from .signing import BadSignature, read_public_keys
    from .trust import default_state_path, signature_path, verify_release

    path = Path(args.record)
    data = path.read_bytes()
    try:
        signature = signature_path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError) as error:
        reason = "missing" if isinstance(error, FileNotFoundError) else "not text"
        raise BadSignature(f"{path} is not signed: {signature_path(path)} is {reason}",
                           "format") from None
    pubkeys = [key for pub in args.pubkey or () for key in read_public_keys(pub)]
    state = Path(args.state) if args.state else default_state_path()
    store = _store(args)
    fetch = _release_fetcher(store, args.gateways or (), quiet=args.quiet)
    return verify_release(store, data, signature, pubkeys=pubkeys, state_path=state,
                          record_label=str(path), fetch=fetch)


def _release_fetcher(
    store: Store, gateways: Sequence[str], *, quiet: bool = False
) -> Callable[[str], None] | None:
    """With gateways (--from, else $IPWHL_GATEWAYS): fetch what the store lacks of a release."""
    from .cid import CID
    from .progress import GatewayProgress
    from .remote import configured_gateways, ensure_dag

    urls = configured_gateways(gateways)
    if not urls:
        return None

    def fetch(cid: str) -> None:
        progress = GatewayProgress(sys.stderr, quiet=quiet, label=f"fetch {cid[:16]}…")
        try:
            stats = ensure_dag(store.open(), CID.parse(cid), urls, progress=progress)
        finally:
            progress.close()
        if stats is not None and not quiet:
            print(f"ipwhl: {cid}: {progress.summary()}", file=sys.stderr)

    return fetch


def cmd_verify(args: argparse.Namespace) -> int:
    from .trust import format_time

    verified = _verify(args)
    record = verified.record
    if args.json:
        _emit({**_record_json(record), "key_id": verified.signer.key_id_text,
               "status": verified.status, "record": args.record})
    else:
        print(record.cid)
    _say(args, f"ipwhl: {args.record}: {record.name} #{record.sequence} signed by key "
         f"{verified.signer.key_id_text}, valid until {format_time(record.expires)} "
         f"({verified.status})")
    return EXIT_OK


def _active_python() -> str:
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        for candidate in (Path(venv) / "bin" / "python", Path(venv) / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
    return sys.executable


def cmd_use(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from .trust import index_url, pip_config_command

    verified = _verify(args)
    url = index_url(args.gateway, verified.record.cid)
    document = {**_record_json(verified.record), "status": verified.status, "index_url": url,
                "scope": args.scope, "configured": False, "python": None,
                "pip": shlex.join(pip_config_command(args.scope, url)),
                "uv": f"export UV_INDEX_URL={shlex.quote(url)}"}
    if args.print:
        if args.json:
            _emit(document)
            return EXIT_OK
        print(document["pip"])
        print(document["uv"])
        return EXIT_OK
    python = args.python or _active_python()
    command = pip_config_command(args.scope, url, python)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise IpwhlError(f"{shlex.join(command)} failed: {done.stderr.strip() or done.stdout}")
    if args.json:
        _emit({**document, "configured": True, "python": python, "pip": shlex.join(command)})
        return EXIT_OK
    print(f"pip: global.index-url = {url} ({args.scope} config of {python})")
    print(f"uv: export UV_INDEX_URL={shlex.quote(url)}  "
          f"(or: uv pip install --index-url {shlex.quote(url)} PACKAGE)")
    return EXIT_OK


def _release_spec(release: str) -> ReleaseSpec:
    from .releasefile import load_release

    path = Path(release)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise _ReleaseFileMissing(f"cannot read release file {release} ({reason}); "
                                  "expected a release.toml, such as examples/release.toml")
    return load_release(path)


def _index_url(args: argparse.Namespace) -> str:
    from .pypi import DEFAULT_INDEX_URL

    return args.index_url or os.environ.get("IPWHL_INDEX_URL") or DEFAULT_INDEX_URL


def cmd_declare(args: argparse.Namespace) -> int:
    from .declare import declare, remember_fetches
    from .environments import parse_supported
    from .progress import progress_for
    from .pypi import SimpleIndex

    release = _release_spec(args.release) if args.release else None
    if release is not None:
        environments = release.supported
    elif args.supported:
        environments = parse_supported(args.supported)
    else:
        raise _Usage("say which environments to declare for: --release RELEASE.toml, or "
                     "--supported 'cp312 manylinux_2_17_x86_64' (repeatable)")
    if args.declarations:
        root = Path(args.declarations)
    elif release is not None:
        root = release.declarations_dir
    else:
        raise _Usage("say where the declarations go: -d DIR (or --release RELEASE.toml)")
    store = _store(args).open()
    with store.lock():  # beside builds, never during a gc
        result = declare(
            args.specs, root, environments, store=store, index=SimpleIndex(_index_url(args)),
            with_deps=args.with_deps, prefix_layout=args.prefix_layout, workers=_workers(),
            progress=progress_for(sys.stderr, quiet=args.quiet),
        )
        if release is not None and root.resolve() == release.declarations_dir.resolve():
            remember_fetches(store, release.path, result.fetched)
    if args.json:
        problems = [*result.unsatisfied, *(str(v) for v in result.violations)]
        _emit({
            "written": [str(path) for path in result.written],
            "removed": [str(path) for path in result.removed],
            "declared": [{"project": pick.project, "version": str(pick.version),
                          "wheels": [wheel.filename for wheel in pick.wheels],
                          "missing": [str(e) for e in pick.missing]}
                         for pick in result.declared],
            "missing": list(result.missing),
            "unsatisfied": list(result.unsatisfied),
            "violations": [str(v) for v in result.violations],
            "undeclared": list(result.undeclared),
            "ok": not problems and (args.allow_missing or not result.missing),
        })
    else:
        for path in result.written:
            print(path)
    note = palette_for(sys.stderr).paint("note:", "note")
    for pick in result.declared:
        _say(args, f"ipwhl: declared {pick.project} {pick.version}: {len(pick.wheels)} wheel(s)")
    for path in result.removed:
        _say(args, f"ipwhl: removed {path}")
    if args.allow_missing:
        for message in result.missing:
            _say(args, f"ipwhl: {note} {message}")
    if result.undeclared:
        _say(args, f"ipwhl: {note} not declared yet, but depended on: "
             f"{', '.join(result.undeclared)} (declare them, or use --with-deps)")
    try:
        result.raise_for_problems(allow_missing=args.allow_missing)
    except IpwhlError as error:
        if not args.json:
            raise
        # The JSON document above says it all; one document on stdout, the line on stderr.
        print(error_text(str(error), None, palette_for(sys.stderr)), file=sys.stderr)
        return error.exit_code
    return EXIT_OK


def cmd_update(args: argparse.Namespace) -> int:
    import contextlib

    from .declare import remember_fetches
    from .progress import Activity
    from .pypi import SimpleIndex
    from .update import apply_update, plan_update

    release = _release_spec(args.release)
    store = None if args.dry_run else _store(args).open()
    with store.lock() if store is not None else contextlib.nullcontext():
        with Activity("update: weighing newer versions", stream=sys.stderr, quiet=args.quiet):
            plan = plan_update(release, SimpleIndex(_index_url(args)), projects=args.projects,
                               store=store, workers=_workers())
        if store is not None:
            apply_update(plan)
            remember_fetches(store, release.path, plan.fetched)
    if args.json:
        _emit({
            "dry_run": args.dry_run,
            "proposals": [
                {"project": p.project, "current": str(p.current),
                 "version": str(p.version) if p.version is not None else None,
                 "wheels": [wheel.filename for wheel in p.wheels],
                 "held_back": [{"version": str(v), "reason": why} for v, why in p.held_back],
                 "note": p.note}
                for p in plan.proposals
            ],
            "changes": [{"project": p.project, "from": str(p.current), "to": str(p.version)}
                        for p in plan.changes],
            "written": [str(path) for path in sorted(plan.added)],
            "removed": [str(path) for path in sorted(plan.removed)],
            "diff": plan.diff(),
        })
        return EXIT_OK
    if args.dry_run:
        sys.stdout.write(plan.diff())
        if not args.quiet:
            for line in plan.summary():
                print(line, file=sys.stderr)
        return EXIT_OK
    for line in plan.summary():
        print(line)
    if not args.quiet:
        print(f"ipwhl: updated {len(plan.changes)} project(s): wrote {len(plan.added)} and "
              f"removed {len(plan.removed)} declaration file(s)", file=sys.stderr)
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    sys.stdout.write(script(_parser(), args.shell))
    return EXIT_OK


def _expiry(sub: argparse.ArgumentParser) -> None:
    # No default here: argparse would convert it on every run, importing the signing code.
    sub.add_argument("--expires", type=_when, metavar="WHEN",
                     help="when the record stops vouching: a duration after its creation "
                     "(30d, 12h, 2w) or a date-time (default 30d)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipwhl",
        description="InterPlanetary Wheels: build, check and serve declared wheel releases "
        "on IPFS.",
        epilog="The store is ./store unless --store or IPWHL_STORE says otherwise.\n\n"
        "examples:\n  ipwhl declare requests --release release.toml --with-deps\n"
        "  ipwhl check release.toml\n  CID=$(ipwhl build release.toml)\n"
        "  ipwhl serve &   # pip install --index-url http://127.0.0.1:8080/ipfs/$CID/simple/ …\n"
        "  ipwhl COMMAND --help   # options, examples; docs/tutorial.md, docs/reference/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ipwhl {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", metavar="DIR", help="the store (default: $IPWHL_STORE or ./store)"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print only results")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[common], help=summary, description=summary,
            epilog=EXAMPLES.get(name), formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    sub = command("eval", cmd_eval,
                  "Evaluate a release without fetching: checks 1 and 4 on the declared metadata, "
                  "and which derivations are already realised.")
    sub.add_argument("release", help="the release file (release.toml)")
    sub.add_argument("--json", action="store_true", help=JSON_HELP)
    sub.add_argument("--on-top-of", metavar="CID",
                     help="show what a build on top of this release would redo, and why")

    sub = command("check", cmd_check, "Fetch and verify every wheel and run all four checks.")
    sub.add_argument("release", help="the release file (release.toml)")
    sub.add_argument("--import", dest="imports", action="store_true",
                     help="also install each wheel's closure from the release into a fresh venv "
                     "and import its top-level modules, on every supported environment this "
                     "Python can run (results are kept in the store)")
    sub.add_argument("-j", "--jobs", type=_positive, default=2, metavar="N",
                     help="import checks run at once (default 2)")

    sub = command("build", cmd_build,
                  "Check a release and build its DAG; print the root CID alone on stdout.")
    sub.add_argument("release", help="the release file (release.toml)")
    sub.add_argument("--on-top-of", metavar="CID", help="the previous release of this line")
    sub.add_argument("--from", dest="gateways", action="append", metavar="URL",
                     help="a trustless gateway to fetch the previous release from when the store "
                     "lacks it (repeatable, tried in order; default: $IPWHL_GATEWAYS)")
    sub.add_argument("--keep", type=_amount(_positive), metavar="N",
                     help="keep only the N newest releases of this line as GC roots "
                     "(default: all)")
    sub.add_argument("--sign", metavar="KEY",
                     help="sign the release with this minisign secret key (see ipwhl sign)")
    sub.add_argument("--record", metavar="RECORD",
                     help="where --sign writes the record (default: NAME-SEQUENCE.record)")
    _expiry(sub)

    sub = command("get", cmd_get, "Write a release, or a part of it, out as plain files.")
    sub.add_argument("path", metavar="CID[/PATH]", help="a release's CID, or a path inside it")
    sub.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="a folder for a directory, a file name for a file")

    sub = command("ls", cmd_ls, "List a directory of a release.")
    sub.add_argument("path", metavar="CID[/PATH]", help="a release's CID, or a path inside it")

    sub = command("diff", cmd_diff,
                  "Compare two releases: projects added, removed, upgraded, downgraded; wheels, "
                  "dependencies and environments.")
    sub.add_argument("old", metavar="OLD", help="the earlier release's CID")
    sub.add_argument("new", metavar="NEW", help="the later release's CID")
    sub.add_argument("--json", action="store_true", help=JSON_HELP)

    sub = command(
        "serve", cmd_serve, "Serve the store as a read-only path gateway at /ipfs/<cid>/."
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")

    sub = command("export", cmd_export,
                  "Write a release, or a part of it, as a CAR file, as `ipfs dag export` does.")
    sub.add_argument("path", metavar="CID[/PATH]", help="a release's CID, or a path inside it")
    sub.add_argument("-o", "--output", required=True, metavar="FILE.car",
                     help="the CAR file to write ('-' for stdout)")

    sub = command("import", cmd_import,
                  "Add a CAR file's blocks to the store once every block and the DAG's "
                  "completeness are checked; print its root.")
    sub.add_argument("car", metavar="FILE.car", help="the CAR file ('-' for stdin)")
    sub.add_argument("--root-name", metavar="NAME",
                     help="pin the root as a GC root of this release line")

    sub = command("fetch", cmd_fetch,
                  "Fetch a release from trustless IPFS gateways, verifying every block; "
                  "run again to resume.")
    sub.add_argument("cid", metavar="CID", help="the release's root CID")
    sub.add_argument("--from", dest="gateways", action="append", metavar="URL",
                     help="a gateway such as https://ipfs.io (repeatable, tried in order; "
                     "default: $IPWHL_GATEWAYS, comma-separated)")
    sub.add_argument("--root-name", metavar="NAME",
                     help="pin the release as a GC root of this release line")
    sub.add_argument("-j", "--jobs", type=_positive, default=8, metavar="N",
                     help="blocks requested at once (default 8)")

    sub = command("publish", cmd_publish,
                  "Put a release onto IPFS: import and pin it on a kubo node, and/or ask a "
                  "pinning service to pin it.")
    sub.add_argument("cid", metavar="CID", help="the release's root CID")
    sub.add_argument("--to", action="append", metavar="URL",
                     help="a kubo node's RPC API, http://127.0.0.1:5001 or /ip4/…/tcp/5001 "
                     "(repeatable)")
    sub.add_argument("--rpc-auth", metavar="SECRET",
                     help="kubo API.Authorizations secret, bearer:TOKEN or basic:USER:PASSWORD "
                     "(default: $IPWHL_RPC_AUTH)")
    sub.add_argument("--pinning-service", metavar="URL",
                     help="an IPFS Pinning Service API endpoint")
    sub.add_argument("--token", help="its access token (default: $IPWHL_PINNING_TOKEN)")
    sub.add_argument("--name", help="the pin's name (default: the release's name and sequence)")
    sub.add_argument("--origin", action="append", metavar="MULTIADDR",
                     help="a node that has the blocks, such as your kubo node (repeatable)")
    sub.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait up to this long for the service to finish pinning")

    # Options of nested commands default to "unset", so `roots --store X add` keeps X.
    nested = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    nested.add_argument("--store", metavar="DIR", help="the store")
    nested.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    nested.add_argument("-q", "--quiet", action="store_true", help="print only results")
    nested.add_argument("--json", action="store_true", help=JSON_HELP)

    def subcommand(
        group: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
        summary: str,
    ) -> argparse.ArgumentParser:
        parent = group._prog_prefix.split()[-1]  # "ipwhl roots" -> roots
        sub = group.add_parser(
            name, parents=[nested], help=summary, description=summary,
            epilog=EXAMPLES.get(f"{parent} {name}"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    sub = command("roots", cmd_roots,
                  "List the GC roots (name, sequence, CID, date, closure size); add or remove "
                  "them by hand.")
    roots = sub.add_subparsers(dest="roots_command", metavar="ACTION")
    pin = subcommand(roots, "add", cmd_roots_add, "Pin a release (a GC root) by hand.")
    pin.add_argument("name", metavar="NAME", help="the line of releases to root it under")
    pin.add_argument("cid", metavar="CID", help="the release's root CID")
    unpin = subcommand(roots, "rm", cmd_roots_rm,
                       "Unpin one release of a line (NAME@SEQ) or all of them (NAME).")
    unpin.add_argument("root", metavar="NAME[@SEQ]",
                       help="a release line (all its releases) or one release of it")

    sub = command("gc", cmd_gc,
                  "Delete every object, block and record no GC root reaches, and print what was "
                  "freed; waits for running builds.")
    sub.add_argument("--dry-run", action="store_true",
                     help="say what would be deleted and how many bytes, delete nothing")
    sub.add_argument("--max-freed", type=_amount("parse_bytes"), metavar="BYTES",
                     help="stop once this much is freed (500M, 2G, …)")
    sub.add_argument("--older-than", type=_amount("parse_duration"), metavar="DURATION",
                     help="keep unrooted records younger than this (12h, 7d, …), with what they "
                     "name; default: delete them all")

    sub = command("store", cmd_store_verify, "Look after the store: `ipwhl store verify`.")
    store_commands = sub.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    sub = subcommand(store_commands, "verify", cmd_store_verify,
                     "Rehash every object, block and layout against its key, parse every record "
                     "and root, and look for missing blocks of rooted DAGs. Exit 9: corrupt, "
                     "15: missing.")
    sub.add_argument("--repair", action="store_true",
                     help="refetch corrupt objects from their sources, rebuild layouts and "
                     "interior blocks from objects, remove what cannot be repaired")

    sub = command("keygen", cmd_keygen,
                  "Make a minisign key pair for signing releases (the secret key encrypted with "
                  "a passphrase: asked for, or $IPWHL_KEY_PASSPHRASE).")
    sub.add_argument("--public", required=True, metavar="PUB", help="public key file to write")
    sub.add_argument("--secret", required=True, metavar="KEY", help="secret key file to write")
    sub.add_argument("--force", action="store_true", help="replace existing key files")

    sub = command("sign", cmd_sign,
                  "Sign a release in the store: write a release record RECORD and its minisign "
                  "signature RECORD.minisig.")
    sub.add_argument("cid", metavar="CID", help="the release's root CID")
    sub.add_argument("--key", required=True, metavar="KEY", help="the minisign secret key")
    sub.add_argument("-o", "--output", required=True, metavar="RECORD",
                     help="the record file to write (its signature goes to RECORD.minisig)")
    _expiry(sub)
    sub.add_argument("--created", type=_time, metavar="TIME",
                     help="the record's creation time (default: $SOURCE_DATE_EPOCH, else now)")

    def client(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("record", metavar="RECORD",
                         help="a release record (its signature is RECORD.minisig)")
        sub.add_argument("--pubkey", action="append", metavar="PUB",
                         help="a trusted public key file (repeatable); without one, the keys "
                         "the last accepted release of the line allows")
        sub.add_argument("--state", metavar="FILE",
                         help="the accepted releases (default: $IPWHL_STATE, else "
                         "~/.local/state/ipwhl/trust.json)")
        sub.add_argument("--from", dest="gateways", action="append", metavar="URL",
                         help="a trustless gateway to fetch the release from when the store "
                         "lacks it, once the record checks out (repeatable; default: "
                         "$IPWHL_GATEWAYS)")

    sub = command("verify", cmd_verify,
                  "Verify a signed release record: signature, release in the store, no rollback, "
                  "fork or expiry; remember it and print its CID.")
    client(sub)

    sub = command("use", cmd_use,
                  "Verify a release record, then point pip at the release through a gateway.")
    client(sub)
    sub.add_argument("--gateway", required=True, metavar="URL",
                     help="the IPFS path gateway, such as http://127.0.0.1:8080")
    sub.add_argument("--scope", choices=("site", "user", "global"), default="site",
                     help="which pip config to set (default site: the active venv's)")
    sub.add_argument("--print", action="store_true",
                     help="print the pip and uv settings instead of running pip")
    sub.add_argument("--python", metavar="PY",
                     help="the interpreter whose pip to configure (default: $VIRTUAL_ENV's, "
                     "else this one)")

    def index_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--index-url", metavar="URL",
                         help="a PEP 503/691 simple index (default: $IPWHL_INDEX_URL, else "
                         "https://pypi.org/simple/)")

    sub = command("declare", cmd_declare,
                  "Choose wheels covering the supported environments (one per environment, the "
                  "most general first), fetch them and write their declarations.")
    sub.add_argument("specs", nargs="+", metavar="SPEC",
                     help="a wheel file, a wheel URL, NAME==VERSION, NAME (the newest final "
                     "version with wheels for the environments) or a requirement")
    sub.add_argument("-d", "--declarations", metavar="DIR",
                     help="the declarations directory (default: the release file's)")
    sub.add_argument("--release", metavar="RELEASE.toml",
                     help="declare for this release's supported environments")
    sub.add_argument("--supported", action="append", metavar="LINE",
                     help="an '<interpreter> <platform>' environment, instead of --release "
                     "(repeatable)")
    index_option(sub)
    sub.add_argument("--with-deps", action="store_true",
                     help="also declare what they depend on (for every declared extra), until "
                     "the release is closed")
    sub.add_argument("--prefix-layout", action="store_true",
                     help="write <prefix>/<project>/ directories, as IPWHL shards them (the "
                     "default when the directory already does)")
    sub.add_argument("--allow-missing", action="store_true",
                     help="succeed when a project has no wheel for some environment")

    sub = command("update", cmd_update,
                  "Propose newer versions from the index where every dependent's specifier "
                  "still holds in every environment, and rewrite the declarations.")
    sub.add_argument("projects", nargs="*", metavar="PROJECT",
                     help="the projects to update (default: all)")
    sub.add_argument("--release", required=True, metavar="RELEASE.toml",
                     help="the release file")
    index_option(sub)
    sub.add_argument("--dry-run", action="store_true",
                     help="print the plan as a unified diff of the declarations, change nothing")

    sub = command("completion", cmd_completion,
                  "Print a completion script for a shell, generated from ipwhl's own commands "
                  "and options.")
    sub.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")

    for name, sub in commands.choices.items():
        # Every command that reports can say it as JSON; eval and diff define their own.
        if name not in NO_JSON and not any("--json" in a.option_strings for a in sub._actions):
            sub.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


_CID_TEXT = re.compile(r"\b(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,})\b")


def _hint(error: BaseException, args: argparse.Namespace) -> str | None:
    """The next step after `error`, when there is one: an error may carry its own `hint`."""
    from .store import default_store_path
    from .trust import Unavailable

    given = getattr(error, "hint", None)
    if isinstance(given, str) and given:
        return given
    message = str(error)
    if isinstance(error, Unavailable):
        return ("pass --from URL (a trustless gateway, such as the publisher's) to fetch the "
                "release once its record checks out")
    if isinstance(error, NotFound) and error.exit_code == NotFound.exit_code:
        store = default_store_path(getattr(args, "store", None))
        found = _CID_TEXT.search(message)
        if not (store / "FORMAT").exists() and found:
            shown = store if store.is_absolute() else f"./{store}"
            return (f"there is no store at {shown}: run `ipwhl build RELEASE.toml` first, or "
                    "pass --store DIR (or set IPWHL_STORE)")
        if found:
            return (f"`ipwhl fetch {found[1]} --from URL` fetches it from a gateway (such as "
                    "https://ipfs.io), or build it with `ipwhl build`")
    if type(error).__name__ == "InvalidKey" and "cannot read" in message:
        return "`ipwhl keygen --public release.pub --secret release.key` makes a key pair"
    return None


def _report(args: argparse.Namespace, error: BaseException, message: str, code: int,
            hint: str | None, violations: Sequence[object] = ()) -> int:
    """Print an error as `ipwhl: error: …` (+ `hint: …`), and as JSON too under --json."""
    if getattr(args, "verbose", False):
        traceback.print_exception(error)
    if violations:
        _print_violations(violations)
    else:
        print(error_text(message, hint, palette_for(sys.stderr)), file=sys.stderr)
    if getattr(args, "json", False):
        _emit({"error": message, "exit_code": code, "hint": hint,
               "violations": [str(v) for v in violations]})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ipwhl command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    from .errors import DeclarationError

    try:
        return args.run(args)
    except DeclarationError as error:
        return _report(args, error, f"{len(error.violations)} violation(s)", error.exit_code,
                       None, error.violations)
    except IpwhlError as error:
        return _report(args, error, str(error), error.exit_code, _hint(error, args))
    except KeyboardInterrupt:
        print("ipwhl: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        message = f"{where}{error.strerror or error}"
        return _report(args, error, message, 1, None)
    except Exception as error:  # a bug: still one line, the traceback with -v
        return _report(args, error, f"internal error: {type(error).__name__}: {error}",
                       EXIT_INTERNAL, "this is a bug in ipwhl: run the command again with -v "
                       "for the traceback, and report it")


if __name__ == "__main__":
    sys.exit(main())
