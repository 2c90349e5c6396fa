"""The thin command-line interface: parse → validate → call one library function → exit code.

Each sub-command lives in its own module under ``oedal.cli`` and exposes
``register(subparsers)``, which adds its parser with ``set_defaults(func=...)``;
``func(args) -> int`` does the work by calling the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from oedal import __version__
from oedal.errors import OedalError
from oedal.files import DiskFull, full_disk
from oedal.gmnn.kernels import ENV_KERNELS, KERNEL_KINDS, use_backend

# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES = ("data", "model", "oed", "oracle", "cache", "explore", "steps", "report")


def add_min_distance(parser: argparse.ArgumentParser) -> None:
    """``--min-distance``: the distance bound of the checks of the input stores (the importer's flag)."""
    from oedal.data.validate import MIN_DISTANCE

    parser.add_argument("--min-distance", type=float, default=MIN_DISTANCE, metavar="Å",
                        help=f"input stores are checked first (NaN/inf, shapes, elements, labels): atoms closer "
                             f"than this are an error (0 skips; default {MIN_DISTANCE}, as oedal import)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oedal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"oedal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--kernels", choices=KERNEL_KINDS, default=None,
                        help=f"compute kernels: numba (CPU), torch, or auto = numba where installed "
                             f"(default: ${ENV_KERNELS}, else auto)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"oedal.cli.{name}")
        except ModuleNotFoundError as err:  # a module not written yet must not break the others
            if err.name != f"oedal.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. Measured on 2 cores:
    # on a busy node (snakemake running several rules, other torch jobs) spinning made training
    # 1.25× (two busy loops beside it) to 4× (two torch jobs side by side) slower; on an idle node
    # sleeping costs 8–12 %. Export OMP_WAIT_POLICY=ACTIVE for a node of your own.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        use_backend(args.kernels)  # None: $OEDAL_KERNELS, else auto
        return int(args.func(args) or 0)
    except (OedalError, ValueError, FileNotFoundError, FileExistsError) as err:
        if full_disk(err) is None:
            print(f"oedal {args.command}: error: {err}", file=sys.stderr)
            return 2
        _disk_full(args.command, err)
    except Exception as err:
        if full_disk(err) is None:
            raise
        _disk_full(args.command, err)
    return 2


def _disk_full(command: str, err: Exception) -> None:
    """One line for a full disk (a file size limit, a quota), wherever the write was (oedal.files.DiskFull
    names the file; a library's own cache write, numba's, does not), then end the process at once: HDF5 may be
    left half-closed by a failed write, and its teardown at exit can crash."""
    text = str(err) if isinstance(err, DiskFull) else (
        f"a file could not be written ({os.strerror(full_disk(err) or 0)}: {err}); free space (or raise the file "
        "size limit) and run again")
    print(f"oedal {command}: error: {text}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(2)


if __name__ == "__main__":
    sys.exit(main())
