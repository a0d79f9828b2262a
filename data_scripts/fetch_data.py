#!/usr/bin/env python
"""Fetch and verify MedMNIST files: a command-line front over :mod:`pets_lite.data`.

    python data_scripts/fetch_data.py                      # pneumoniamnist and breastmnist
    python data_scripts/fetch_data.py --verify             # verify what is on disk, no download
    python data_scripts/fetch_data.py pathmnist --dest d/  # another flag, into a folder
    python data_scripts/fetch_data.py --size 64            # the MedMNIST+ files at 64 px
    python data_scripts/fetch_data.py --list               # the registry

Exit status 0 when every requested file is present and verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pets_lite import data

DEFAULT_FLAGS = ("pneumoniamnist", "breastmnist")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flags", nargs="*", help="MedMNIST flags (default: %(default)s)",
                        default=list(DEFAULT_FLAGS))
    parser.add_argument("--all", action="store_true", help="every 2D flag in the registry")
    parser.add_argument("--verify", action="store_true",
                        help="only verify files already on disk; never download")
    parser.add_argument("--dest", type=Path, help="download into this folder (default: user cache)")
    parser.add_argument("--size", type=int, default=28, choices=data.IMAGE_SIZES,
                        help="image side of the files (MedMNIST+: 64, 128, 224)")
    parser.add_argument("--list", action="store_true", help="print the registry and exit")
    args = parser.parse_args(argv)
    if args.list:
        for meta in data.REGISTRY.values():
            print(f"{meta.flag:16} {meta.md5_for(args.size)}  {meta.task:26} "
                  f"{meta.url_for(args.size)}")
        return 0
    flags = sorted(data.REGISTRY) if args.all else args.flags
    failures = 0
    for flag in flags:
        try:
            name = data.info(flag).filename_for(args.size)
            if args.dest is not None and args.verify:
                path = data.verify(args.dest / name, flag, args.size)
            elif args.dest is not None:
                path = data.fetch(flag, dest_dir=args.dest, image_size=args.size)
            else:
                path = data.resolve(flag, download=not args.verify, image_size=args.size)
            print(f"ok       {flag:16} {path}")
        except (data.DataError, FileNotFoundError) as exc:
            failures += 1
            print(f"FAILED   {flag:16} {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
