"""``medharness data list|pull|verify``: the datasets, fetched and checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands, add_data_dir


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "data",
        help="list, download (pull) and check (verify) the datasets the tasks read",
        description="The datasets medharness's tasks read, each pinned to a public source and "
        "checked file by file against the sha256 medharness ships. They live under the data "
        "root: --data-dir, else $MEDHARNESS_DATA_DIR, else ~/.cache/medharness/data. Set "
        "MEDHARNESS_DATA_MIRROR to a base URL serving <name>.tar.gz to pull from a mirror.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every dataset: source, license, size, status")
    pulling = actions.add_parser("pull", help="download, check and unpack datasets")
    pulling.add_argument("names", nargs="*", metavar="NAME", help="default: every dataset")
    verifying = actions.add_parser("verify", help="check present datasets against the catalog")
    verifying.add_argument("names", nargs="*", metavar="NAME", help="default: every present one")
    for sub in (listing, pulling, verifying):
        add_data_dir(sub)
        sub.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.catalog import catalog, dataset, mirror, problems, pull
    from medharness.core.errors import UserError
    from medharness.data import resolve_data_root

    root = resolve_data_root(args.data_dir, Path.cwd())
    if args.action == "list":
        print(f"data root: {root.path} ({root.origin})")
        for entry in catalog().values():
            found = problems(entry, root.path / entry.name)
            status = "verified" if not found else found[0] if found == ["absent"] else "differs"
            print(
                f"{entry.name:9} {status:9} {entry.bytes / 1e6:6.1f} MB  {entry.license:10} "
                f"{entry.title} ({entry.homepage}); tasks: {', '.join(entry.tasks)}"
            )
        return EXIT_OK
    names = args.names or [
        name for name in catalog() if args.action == "pull" or (root.path / name).is_dir()
    ]
    entries = [dataset(name) for name in names]
    if args.action == "pull":
        for entry in entries:
            print(f"{entry.name}: {pull(entry, root.path, mirror=mirror())}")
        return EXIT_OK
    for entry in entries:
        found = problems(entry, root.path / entry.name)
        if found:
            raise UserError(
                f"{root.path / entry.name}: {found[0]}"
                + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                + f"; `medharness data pull {entry.name}` fetches it again"
            )
        print(f"{entry.name}: verified ({root.path / entry.name})")
    return EXIT_OK
