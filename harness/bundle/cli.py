"""The `bundle` command line: ``python run.py bundle ...`` and ``python -m harness.bundle ...``.

``build`` runs here; install, stage, verify and show are the node's own commands (``install.py``).
The build side is imported only when ``build`` runs, so the harness's command line needs neither
``installer`` nor the build code on a node.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Sequence

from harness.bundle.defaults import (DEFAULT_CACHE, DEFAULT_DEPS, DEFAULT_DROP, DEFAULT_PART_SIZE, HARNESS_DEPS,
                                     TARGET_PRESENT)
from harness.bundle.install import add_node_commands, run_main, run_node_command
from harness.errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the bundle subcommands to `p` (also used by the harness's own command line)."""
    sub = p.add_subparsers(dest="bundle_command", required=True)
    b = sub.add_parser("build", help="download, slim and pack a bundle (needs pip and network)")
    b.add_argument("--vllm", required=True, metavar="VERSION", help="version of the package to bundle")
    b.add_argument("--package", default="vllm")
    b.add_argument("--python", default="3.12", help="target Python version (default 3.12)")
    b.add_argument("--out", type=Path, help="bundle directory (default .bundle/<package>-<version>)")
    b.add_argument("--wheel-dir", type=Path, help=f"wheel cache (default {DEFAULT_CACHE})")
    b.add_argument("--delta-against", type=Path, metavar="BUNDLE", help="pack only what differs from this bundle")
    b.add_argument("--part-size-mib", type=float, default=DEFAULT_PART_SIZE / 2**20)
    b.add_argument("--cuda-arch", type=int, metavar="NN", help="compact CUDA fat binaries to sm_NN (90: H100/H200)")
    b.add_argument("--drop", action="append", default=None, metavar="PATTERN",
                   help="file pattern to leave out (repeatable; replaces the default list)")
    b.add_argument("--keep-default-drop", action="store_true", help="with --drop: add to the default list")
    b.add_argument("--deps", nargs="*", metavar="REQ", help="dependency wheels to bundle (default: the built-in list)")
    b.add_argument("--extra", nargs="*", default=list(HARNESS_DEPS), metavar="REQ")
    b.add_argument("--present-file", type=Path, help="distributions present on the target, one a line "
                                                      "(default: the device image's list)")
    b.add_argument("--exclude", nargs="*", default=[], metavar="NAME", help="never bundle these")
    b.add_argument("--xz-preset", type=int, default=9, choices=range(10))
    add_node_commands(sub)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed bundle subcommand. Raises HarnessError on bad input."""
    if args.bundle_command != "build":
        return run_node_command(args)
    from harness.bundle.build import build

    drop = DEFAULT_DROP
    if args.drop is not None:
        drop = (*DEFAULT_DROP, *args.drop) if args.keep_default_drop else tuple(args.drop)
    present: Iterable[str] = TARGET_PRESENT
    if args.present_file:
        try:
            present = [ln.split("#")[0].strip() for ln in args.present_file.read_text().splitlines()]
        except OSError as e:
            raise InputError(f"{args.present_file}: {e}") from None
        present = [p for p in present if p]
    build(args.vllm, args.out or Path(".bundle") / f"{args.package}-{args.vllm}", python_version=args.python,
          wheel_dir=args.wheel_dir, delta_against=args.delta_against,
          part_size=int(args.part_size_mib * 2**20), drop=drop,
          deps=DEFAULT_DEPS if args.deps is None else args.deps, extra=args.extra, present=present,
          exclude=args.exclude, cuda_arch=args.cuda_arch, package=args.package, xz_preset=args.xz_preset)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bundle",
                                description="Offline bundles of vLLM and the wheels it needs, for air-gapped GPU nodes.")
    configure_parser(p)
    return run_main(p, run_command, argv)
