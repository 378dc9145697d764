"""Where the datasets are: config value, then $MEDHARNESS_DATA_DIR, then the user cache."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medharness.catalog import catalog, mirror, pull, reachable
from medharness.core.cache import cache_root
from medharness.core.errors import UserError, boundary
from medharness.core.io import resolve_inside
from medharness.tasks import LoadedData, Task

DATA_ENV = "MEDHARNESS_DATA_DIR"
LAYOUT = "medquad/, medqa/, pubmedqa/, medmcqa/, mmlu_medical/, medcalc_bench/"


@dataclass(frozen=True)
class DataRoot:
    path: Path
    origin: str  # how it was chosen, for error messages and the manifest
    fetch_missing: bool = False  # the user cache: a missing dataset is pulled on first use


def resolve_data_root(configured: str | None, relative_to: Path) -> DataRoot:
    if configured:
        return DataRoot(resolve_inside(relative_to, configured), "config data_dir")
    if os.environ.get(DATA_ENV):
        return DataRoot(Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}")
    return DataRoot(
        cache_root() / "data", "user cache (no data_dir, no $MEDHARNESS_DATA_DIR)", True
    )


def load_task_data(task: Task, root: DataRoot) -> LoadedData:
    if task.source:  # a hub copy: the data root does not apply
        with boundary(f"cannot read data for {task.name} from {task.source}"):
            loaded = task.load(root.path)
        refuse_duplicate_ids(task.name, Path(task.source), [s.doc_id for s in loaded.samples])
        return loaded
    folder = task_folder(task, root)
    with boundary(f"cannot read data for {task.name} in {folder}"):
        loaded = task.load(folder)
    verify_checksums(folder, task.data_subdir, loaded.file_hashes)
    refuse_duplicate_ids(task.name, folder, [sample.doc_id for sample in loaded.samples])
    return loaded


def require_data(task: Task, root: DataRoot) -> None:
    """A task's data folder is there (pulled into the user cache first where it can be):
    checked before the heavy imports of a run, so missing data is refused at once."""
    if not task.source:
        task_folder(task, root)


def task_folder(task: Task, root: DataRoot) -> Path:
    """The folder a task reads in the data root, refused in one line where it is absent."""
    if root.path.exists() and not root.path.is_dir():
        raise UserError(f"the data root {root.path} (from {root.origin}) is a file, not a folder")
    folder = root.path / task.data_subdir
    if not folder.is_dir() and root.fetch_missing and task.data_subdir in catalog():
        pull_when_reachable(task, root)
    if not folder.is_dir():
        pullable = task.data_subdir in catalog()
        raise UserError(
            f"data for {task.name} not found: {folder} does not exist (data root from "
            f"{root.origin}). "
            + (
                f"`medharness data pull {task.data_subdir}` fetches it, or point {DATA_ENV} "
                f"or data_dir at a folder holding {LAYOUT}."
                if pullable
                else f"Point {DATA_ENV} or data_dir at a folder holding {LAYOUT}. "
                f"{task.obtain_hint}"
            )
        )
    return folder


def pull_when_reachable(task: Task, root: DataRoot) -> None:
    """Fetch a task's missing dataset into the user cache, from the mirror when one is set,
    else from its public source when that answers; offline, leave it to the caller's error."""
    entry = catalog()[task.data_subdir]
    source = mirror() or entry.sources[0]["url"]
    if reachable(source):
        print(f"{task.name}: {entry.name} is not in {root.path}; pulling it", file=sys.stderr)
        pull(entry, root.path, mirror=mirror())


def refuse_duplicate_ids(task: str, folder: Path, ids: list[str]) -> None:
    """Two samples with one id would share a sample-log line while both count in n."""
    repeated = sorted(doc for doc, count in Counter(ids).items() if count > 1)
    if repeated:
        shown = ", ".join(repeated[:3]) + (" ..." if len(repeated) > 3 else "")
        raise UserError(
            f"data for {task} in {folder}: {len(repeated)} sample id(s) appear more than once "
            f"({shown}); every sample needs its own id"
        )


CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # sha256sum: text or binary mode
BSD_CHECKSUM_LINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")  # sha256sum --tag


def expected_checksums(folder: Path) -> dict[str, str]:
    """The dataset folder's own SHA256SUMS, if it ships one: every line in one of the formats
    sha256sum writes (``<sha256>  <path>``, ``<sha256> *<path>``, ``SHA256 (<path>) = <sha256>``);
    any other line is an error rather than a file left unchecked."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{sums}: not UTF-8 text") from None
    expected = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if match := CHECKSUM_LINE.match(line.rstrip("\r")):
            digest, name = match.groups()
        elif match := BSD_CHECKSUM_LINE.match(line.rstrip("\r")):
            name, digest = match.groups()
        else:
            raise UserError(f"{sums}:{number}: not a sha256sum line: {line[:80]!r}")
        expected[name.removeprefix("./")] = digest.lower()
    return expected


def verify_checksums(folder: Path, subdir: str, read: dict[str, str]) -> None:
    """Refuse data that differs from the sha256 its folder's SHA256SUMS promises.

    Single files are compared directly; a MedQuAD folder digest is compared with the digest
    of that folder's SHA256SUMS lines in the same layout."""
    expected = expected_checksums(folder)
    if not expected:
        return
    for key, digest in read.items():
        relative = key.removeprefix(f"{subdir}/")
        if relative.endswith(" files)"):  # "<folder>/ (N files)": a folder digest
            name = relative.split("/", 1)[0]
            lines = sorted(
                (path, sha) for path, sha in expected.items() if path.startswith(f"{name}/")
            )
            if not lines:
                continue
            want = hashlib.sha256(
                "".join(f"{sha}  ./{path}\n" for path, sha in lines).encode()
            ).hexdigest()
            if want != digest:
                raise UserError(
                    f"{folder / name}: files differ from {folder / 'SHA256SUMS'} "
                    "(check with: sha256sum -c SHA256SUMS)"
                )
        elif relative in expected and expected[relative] != digest:
            raise UserError(
                f"{folder / relative}: sha256 {digest[:12]}... differs from "
                f"{expected[relative][:12]}... in {folder / 'SHA256SUMS'}"
            )
