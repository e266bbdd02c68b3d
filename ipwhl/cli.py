"""The `ipwhl` command: argument parsing and one small function per command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import IpwhlError

if TYPE_CHECKING:  # imported lazily at run time, for start-up time
    from .evaluator import Plan
    from .store import Store

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2

EXAMPLES = {
    "eval": "examples:\n  ipwhl eval examples/release.toml\n"
    "  ipwhl eval examples/release.toml --json\n"
    "  ipwhl eval release.toml --on-top-of $PREVIOUS   # what a build would redo, and why",
    "diff": "examples:\n  ipwhl diff $OLD $NEW\n  ipwhl diff $OLD $NEW --json",
    "check": "examples:\n  ipwhl check examples/release.toml",
    "build": "examples:\n  ipwhl build examples/release.toml\n"
    "  ipwhl build release.toml --on-top-of bafy...",
    "get": "examples:\n  ipwhl get $CID -o release/\n"
    "  ipwhl get $CID/simple/index.html -o index.html",
    "ls": "examples:\n  ipwhl ls $CID\n  ipwhl ls $CID/simple/requests",
    "serve": "examples:\n  ipwhl serve\n  ipwhl serve --port 9000\n"
    "  pip install --index-url http://127.0.0.1:8080/ipfs/$CID/simple/ requests",
}


class _ReleaseFileMissing(IpwhlError):
    """The release file named on the command line is not there: one line, not a violation."""

    exit_code = 3


def _load_plan(release: str) -> Plan:
    from .build import load_plan

    path = Path(release)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "no such file"
        raise _ReleaseFileMissing(
            f"cannot read release file {release} ({reason}); "
            "expected a release.toml, such as examples/release.toml"
        )
    return load_plan(path)


def _store(args: argparse.Namespace) -> Store:
    from .store import Store, default_store_path

    return Store(default_store_path(args.store))


def _workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def _print_violations(violations: Sequence[object]) -> None:
    for violation in violations:
        print(violation, file=sys.stderr)
    print(f"ipwhl: {len(violations)} violation(s)", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from .checks import to_violations
    from .derivations import Realiser

    plan = _load_plan(args.release)
    store = _store(args)
    realiser = Realiser(store)
    overlay = None
    on_top_of = args.on_top_of or plan.spec.on_top_of
    if on_top_of is not None:
        from .cid import CID
        from .overlay import load_previous, plan_overlay

        overlay = plan_overlay(plan, load_previous(store, CID.parse(on_top_of)))
    findings = [
        f for project in plan.projects
        if overlay is None or project.project in overlay.recheck
        for f in plan.declared_findings(project)
    ]
    violations = to_violations(findings, plan.by_relpath)
    projects = []
    for project in plan.projects:
        steps = [
            {"builder": d.builder, "label": d.label, "key": d.key,
             "realised": realiser.is_realised(d)}
            for d in project.derivations()
        ]
        entry = {
            "project": project.project,
            "version": project.version,
            "wheels": [w.declaration.filename for w in project.wheels],
            "derivations": steps,
        }
        if overlay is not None:
            entry["overlay"] = {
                "rebuild": project.project in overlay.rebuilt,
                "recheck": project.project in overlay.recheck,
                "reason": overlay.reasons.get(project.project, "unchanged: reused as it was"),
            }
        projects.append(entry)
    removed = sorted(overlay.removed) if overlay is not None else []
    if args.json:
        document = {"release": plan.spec.name, "projects": projects,
                    "violations": [str(v) for v in violations]}
        if overlay is not None:
            document["on_top_of"] = str(overlay.previous.cid)
            document["removed"] = removed
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        total = realised = 0
        for project in projects:
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
        print(f"{len(projects)} projects, {total} derivations, {realised} realised")
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

    plan = _load_plan(args.release)
    store = _store(args).open()
    # sys.stderr as it is now, not as it was at import: callers of main() may redirect it.
    progress = progress_for(sys.stderr, quiet=args.quiet)
    result = check_release(store, plan, progress=progress, workers=_workers())
    if result.violations:
        _print_violations(result.violations)
        return 4
    if not args.quiet:
        print(f"ipwhl: {plan.spec.name}: {len(result.wheels)} wheels of "
              f"{len(plan.projects)} projects pass all four checks", file=sys.stderr)
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_release
    from .errors import CheckFailed
    from .progress import progress_for

    plan = _load_plan(args.release)
    store = _store(args).open()
    progress = progress_for(sys.stderr, quiet=args.quiet)
    try:
        result = build_release(store, plan, on_top_of=args.on_top_of, progress=progress,
                               workers=_workers())
    except CheckFailed as failed:
        _print_violations(failed.violations)
        return failed.exit_code
    print(result.root)
    if not args.quiet:
        ran = sum(result.realiser.ran.values())
        reused = sum(result.realiser.reused.values())
        print(f"ipwhl: built {result.name} #{result.sequence}: {ran} steps run, {reused} reused",
              file=sys.stderr)
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    from .dag import resolve, split_path, write_out

    store = _store(args)
    root, segments = split_path(args.path)
    target = resolve(store, root, segments)
    count = write_out(store, target.cid, Path(args.output))
    if not args.quiet:
        print(f"ipwhl: wrote {count} file(s) to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from .dag import list_dir, node, resolve, split_path

    store = _store(args)
    root, segments = split_path(args.path)
    target = resolve(store, root, segments)
    if not target.is_dir:
        print(f"{target.cid} {target.size} {segments[-1] if segments else ''}")
        return EXIT_OK
    for link in list_dir(store, target.cid):
        suffix = "/" if node(store, link.cid).is_dir else ""
        print(f"{link.cid} {link.tsize} {link.name}{suffix}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .gateway import GatewayConfig, serve

    serve(_store(args).open(), GatewayConfig(host=args.host, port=args.port))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipwhl",
        description="InterPlanetary Wheels: build, check and serve declared wheel releases "
        "on IPFS.",
        epilog="The store is ./store unless --store or IPWHL_STORE says otherwise.",
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
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument("--on-top-of", metavar="CID",
                     help="show what a build on top of this release would redo, and why")

    sub = command("check", cmd_check, "Fetch and verify every wheel and run all four checks.")
    sub.add_argument("release", help="the release file (release.toml)")

    sub = command("build", cmd_build,
                  "Check a release and build its DAG; print the root CID alone on stdout.")
    sub.add_argument("release", help="the release file (release.toml)")
    sub.add_argument("--on-top-of", metavar="CID", help="the previous release of this line")

    sub = command("get", cmd_get, "Write a release, or a part of it, out as plain files.")
    sub.add_argument("path", metavar="CID[/PATH]")
    sub.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="a folder for a directory, a file name for a file")

    sub = command("ls", cmd_ls, "List a directory of a release.")
    sub.add_argument("path", metavar="CID[/PATH]")

    sub = command("diff", cmd_diff,
                  "Compare two releases: projects added, removed, upgraded, downgraded; wheels, "
                  "dependencies and environments.")
    sub.add_argument("old", metavar="OLD", help="the earlier release's CID")
    sub.add_argument("new", metavar="NEW", help="the later release's CID")
    sub.add_argument("--json", action="store_true", help="machine-readable output")

    sub = command(
        "serve", cmd_serve, "Serve the store as a read-only path gateway at /ipfs/<cid>/."
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ipwhl command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    from .errors import DeclarationError

    try:
        return args.run(args)
    except DeclarationError as error:
        _print_violations(error.violations)
        return error.exit_code
    except IpwhlError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"ipwhl: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ipwhl: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"ipwhl: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
