"""``medharness data list|pull|verify``: the datasets, fetched and checked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from medharness.cli.common import EXIT_OK, Commands, add_data_dir

if TYPE_CHECKING:
    from medharness.data import DataRoot


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
    for sub, handler in ((listing, list_data), (pulling, pull_data), (verifying, verify_data)):
        add_data_dir(sub)
        sub.set_defaults(handler=handler)


def data_root(args: argparse.Namespace) -> DataRoot:
    from medharness.data import resolve_data_root

    return resolve_data_root(args.data_dir, Path.cwd())


def list_data(args: argparse.Namespace) -> int:
    from medharness.catalog import catalog, problems

    found_root = data_root(args)
    print(f"data root: {found_root.path} ({found_root.origin})")
    root = found_root.path
    for entry in catalog().values():
        found = problems(entry, root / entry.name)
        status = "absent" if found == ["absent"] else "differs" if found else "verified"
        print(
            f"{entry.name:9} {status:9} {entry.bytes / 1e6:6.1f} MB  {entry.license:10} "
            f"{entry.title} ({entry.homepage}); tasks: {', '.join(entry.tasks)}"
        )
    return EXIT_OK


def pull_data(args: argparse.Namespace) -> int:
    from medharness.catalog import catalog, dataset, mirror, pull

    root = data_root(args).path
    for entry in [dataset(name) for name in args.names or catalog()]:
        print(f"{entry.name}: {pull(entry, root, mirror=mirror())}")
    return EXIT_OK


def verify_data(args: argparse.Namespace) -> int:
    from medharness.catalog import catalog, dataset, problems
    from medharness.core.errors import UserError

    found_root = data_root(args)
    root = found_root.path
    names = args.names or [name for name in catalog() if (root / name).is_dir()]
    if not names:
        raise UserError(
            f"nothing to verify: no dataset in {root} (data root from {found_root.origin}); "
            "`medharness data pull` fetches them"
        )
    for entry in [dataset(name) for name in names]:
        found = problems(entry, root / entry.name)
        if found:
            raise UserError(
                f"{root / entry.name}: {found[0]}"
                + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                + f"; `medharness data pull {entry.name}` fetches it again"
            )
        print(f"{entry.name}: verified ({root / entry.name})")
    return EXIT_OK
