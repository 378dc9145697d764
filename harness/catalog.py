"""The datasets medharness reads: where each comes from, its license, and the sha256 of every
file, so that one fetched on first use is known to be the one the tasks were written for.

``catalog.json`` pins each source to a commit: the files are byte-for-byte the public git
blobs (MedQuAD from its own repository's archive). A pull downloads into a hidden staging
folder, resuming a cut download, checks every file against the catalog, and only then renames
the dataset folder into place, with a ``SHA256SUMS`` that every later load checks again.
Air-gapped sites set ``MEDHARNESS_DATA_MIRROR`` to a base URL serving ``<name>.tar.gz`` per
dataset, a tarball of the dataset folder (``tar czf medquad.tar.gz medquad``).

A file whose publisher gives no digest (MedCalc-Bench's CSV, HealthBench's files) is pinned
``trust-on-first-use``: the first pull accepts it and records its sha256 in the folder's
``SHA256SUMS``, which every later pull and load checks it against.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from functools import cache
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from medharness.core.errors import UserError
from medharness.core.folders import exclusive, make_owned_folder
from medharness.core.http import HttpFailure, HttpStatus, send
from medharness.core.io import sha256_file, write_text_atomic
from medharness.core.rundir import staging_path

MIRROR_ENV = "MEDHARNESS_DATA_MIRROR"
CHUNK = 1 << 16
TRUST_ON_FIRST_USE = "trust-on-first-use"  # a file's digest in catalog.json: none published


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    license: str
    homepage: str
    tasks: list[str]
    bytes: int
    sources: list[dict[str, str]]  # {url, path} files, or {url, archive, strip}
    files: dict[str, str]  # path -> sha256, or TRUST_ON_FIRST_USE
    folders: dict[str, dict[str, Any]]  # folder -> {files, sha256 of its sha256sum lines}


@cache
def catalog() -> dict[str, Dataset]:
    data = json.loads(Path(__file__).with_name("catalog.json").read_text(encoding="utf-8"))
    return {name: Dataset(name=name, **entry) for name, entry in data.items()}


def dataset(name: str) -> Dataset:
    found = catalog().get(name)
    if found is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(catalog())}")
    return found


def file_sums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but its SHA256SUMS, by relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "SHA256SUMS"
    }


def problems(entry: Dataset, folder: Path) -> list[str]:
    """How a dataset folder differs from the catalog; empty when every file matches."""
    if not folder.is_dir():
        return ["absent"]
    found = file_sums(folder)
    recorded = recorded_sums(folder)
    issues = []
    for path, pinned in entry.files.items():
        if path not in found:
            issues.append(f"{path} missing")
            continue
        # a file trusted on first use: the digest its first pull recorded, none before it
        digest = recorded.get(path, found[path]) if pinned == TRUST_ON_FIRST_USE else pinned
        if found[path] != digest:
            issues.append(f"{path} sha256 {found[path][:12]}... expected {digest[:12]}...")
    for name, expected in entry.folders.items():
        lines = sorted((p, d) for p, d in found.items() if p.startswith(f"{name}/"))
        digest = hashlib.sha256("".join(f"{d}  ./{p}\n" for p, d in lines).encode()).hexdigest()
        if len(lines) != expected["files"] or digest != expected["sha256"]:
            issues.append(f"{name}/ ({len(lines)} files) differs from its {expected['files']}")
    issues += [
        f"{path}: no checksum of the catalog covers it"
        for path in found
        if not covered(entry, path)
    ]
    return issues


def recorded_sums(folder: Path) -> dict[str, str]:
    """The sha256 a pull recorded for each file of a dataset folder (its SHA256SUMS)."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    lines = sums.read_text(encoding="utf-8", errors="replace").splitlines()
    return {
        path.removeprefix("./"): digest
        for digest, _, path in (line.partition("  ") for line in lines)
        if path
    }


def covered(entry: Dataset, relative: str) -> bool:
    """Whether a file of a dataset folder is one the catalog pins: a listed file, or one in a
    listed folder (whose digest covers its files)."""
    return relative in entry.files or relative.split("/", 1)[0] in entry.folders


def pull(entry: Dataset, root: Path, *, mirror: str | None = None) -> Path:
    """The dataset in ``root/<name>``, downloaded and checked first if it is not there."""
    target = root / entry.name
    if target.is_dir() and not problems(entry, target):
        return target
    refuse_foreign_dataset(target)
    staging = staging_path(target)
    # a planted link, or a folder of that name not medharness's, is refused untouched
    make_owned_folder(
        staging, f"cannot write the data folder {root}: {{reason}}; point {DATA_HINT}"
    )
    with exclusive(staging):
        unpacked = staging / entry.name
        shutil.rmtree(unpacked, ignore_errors=True)
        for source in sources_of(entry, mirror):
            download = staging / "downloads" / Path(source["url"]).name
            fetch(source["url"], download, f"{entry.name} {download.name}", download_cap(entry))
            try:
                unpack(entry, source, download, unpacked)
            except UserError:
                download.unlink(missing_ok=True)  # refused: the next pull downloads afresh
                shutil.rmtree(unpacked, ignore_errors=True)
                raise
        found = problems(entry, unpacked)
        if found:
            shutil.rmtree(staging, ignore_errors=True)
            raise UserError(
                f"{entry.name}: the download does not match the checksums medharness ships "
                f"({found[0]}{' ...' if len(found) > 1 else ''}); nothing was kept"
            )
        sums = "".join(f"{d}  ./{p}\n" for p, d in file_sums(unpacked).items())
        write_text_atomic(unpacked / "SHA256SUMS", sums)
        if target.exists():
            shutil.rmtree(target)  # a dataset that failed its check, replaced whole
        unpacked.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def refuse_foreign_dataset(target: Path) -> None:
    """A folder at a dataset's path that fails its check is replaced only where a pull made
    it (its SHA256SUMS says so), never through a symbolic link: it may be the user's."""
    if target.is_symlink() or (target.exists() and not (target / "SHA256SUMS").is_file()):
        what = "a symbolic link" if target.is_symlink() else "not a folder medharness pulled"
        raise UserError(
            f"{target} does not match the catalog and is {what}; nothing was changed (move "
            "it away, or fix it and run `medharness data verify`)"
        )


DATA_HINT = "MEDHARNESS_DATA_DIR (or data_dir) at a folder you can write"
OFFLINE = (  # what to do where the source cannot be reached at all
    f"without a network, set {MIRROR_ENV} to a mirror serving <name>.tar.gz, or point "
    "MEDHARNESS_DATA_DIR at a folder that holds the datasets"
)


def sources_of(entry: Dataset, mirror: str | None) -> list[dict[str, str]]:
    if mirror:
        url = f"{mirror.rstrip('/')}/{entry.name}.tar.gz"
        return [{"url": url, "archive": "tar", "strip": f"{entry.name}/"}]
    return entry.sources


DOWNLOAD_DEADLINE_S = 1800.0  # one download, whole: a server trickling bytes cannot hold a pull
STALL_S = 60.0  # no connection, or no next byte, for this long: the download has stopped


def download_cap(entry: Dataset) -> int:
    """The most bytes one download of ``entry`` may have: an archive or file of the dataset
    is no larger than twice the dataset (a server sending more is refused as it sends)."""
    return 2 * entry.bytes + SUMS_ALLOWANCE


def fetch(url: str, destination: Path, label: str, max_bytes: int) -> None:
    """Download ``url`` to ``destination`` through medharness's HTTP client (its redirect,
    deadline and size rules); a ``.part`` left by a cut download is resumed where the server
    allows ranges, else restarted. One that grows past ``max_bytes`` is removed."""
    if destination.is_file():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    expected: list[int] = []  # the whole size, where the server declares it
    with contextlib.ExitStack() as stack:

        def sink(status: int, headers: Message) -> Callable[[bytes], None]:
            nonlocal have
            if have and status != 206:
                have = 0  # the server sends the whole file again
            declared = (headers.get("Content-Length") or "").strip()
            if declared.isdigit():
                expected.append(have + int(declared))
            handle = stack.enter_context(part.open("ab" if have else "wb"))
            bar = stack.enter_context(
                tqdm(
                    total=expected[0] if expected else None, initial=have, desc=label,
                    unit="B", unit_scale=True, leave=False,
                )
            )  # fmt: skip

            def write(chunk: bytes) -> None:
                handle.write(chunk)
                bar.update(len(chunk))

            return write

        try:
            send(
                url,
                headers={"Range": f"bytes={have}-"} if have else {},
                deadline_s=DOWNLOAD_DEADLINE_S,
                max_bytes=max_bytes - have,
                sink=sink,
                stall_s=STALL_S,
            )
        except HttpStatus as refused:
            if refused.status != 416:  # 416: nothing left to send, the part is whole
                raise UserError(
                    f"cannot download {url}: HTTP {refused.status} {refused.reason}"
                ) from None
        except HttpFailure as failure:
            stack.close()
            raise download_failure(url, part, failure) from None
    if expected and part.stat().st_size != expected[0]:
        raise UserError(
            f"cannot download {url}: the connection closed early; what arrived is kept, run "
            "the command again to resume"
        )
    part.rename(destination)


def download_failure(url: str, part: Path, failure: HttpFailure) -> UserError:
    """One line for a download that did not arrive whole: one too large is removed (the next
    pull starts afresh), one cut or too slow is kept to resume."""
    if failure.kind == "size":
        part.unlink(missing_ok=True)
        return UserError(f"cannot download {url}: {failure}; nothing was kept")
    arrived = part.is_file() and part.stat().st_size > 0
    return UserError(
        f"cannot download {url}: {failure}; "
        + ("what arrived is kept, run the command again to resume" if arrived else OFFLINE)
    )


SUMS_ALLOWANCE = 4 << 20  # a mirror's tarball of a pulled folder carries its SHA256SUMS


@dataclass
class Unpacking:
    """What an archive may put in a dataset folder, checked member by member as it is
    unpacked, before any checksum: only files the catalog pins, and no more bytes in all
    than the dataset has (a small archive that would unpack to gigabytes stops there)."""

    entry: Dataset
    folder: Path
    download: Path
    written: int = 0

    def place(self, name: str, strip: str, data: IO[bytes]) -> None:
        name = name.removeprefix("./")
        if not name.startswith(strip):
            return
        relative = Path(name[len(strip) :])
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise UserError(f"archive member {name!r} would land outside the dataset folder")
        if relative.as_posix() != "SHA256SUMS" and not covered(self.entry, relative.as_posix()):
            raise UserError(
                f"{self.download}: {name}: no checksum of the catalog covers it; nothing was kept"
            )
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        budget = self.entry.bytes + SUMS_ALLOWANCE - self.written
        with path.open("wb") as handle:
            while chunk := data.read(CHUNK):
                self.written += len(chunk)
                if len(chunk) > budget:
                    raise UserError(
                        f"{self.download}: unpacks to more than the {self.entry.bytes:,} bytes "
                        f"of {self.entry.name}; nothing was kept"
                    )
                budget -= len(chunk)
                handle.write(chunk)


def unpack(entry: Dataset, source: dict[str, str], download: Path, folder: Path) -> None:
    """A file to its path, or an archive's members under ``strip`` into ``folder``; members
    that would land outside it, that the catalog does not pin, links and devices are
    refused, and so is an archive that unpacks to more than the dataset's size."""
    archive = source.get("archive")
    if archive is None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(download, folder / source["path"])
        return
    strip = source["strip"]
    unpacking = Unpacking(entry, folder, download)
    try:
        if archive == "zip":
            with zipfile.ZipFile(download) as bundle:
                for info in bundle.infolist():
                    if not info.is_dir():
                        with bundle.open(info) as opened:
                            unpacking.place(info.filename, strip, opened)
        else:
            with tarfile.open(download) as tarball:
                for member in tarball:
                    if member.isfile():
                        data = tarball.extractfile(member)
                        assert data is not None
                        unpacking.place(member.name, strip, data)
                    elif not member.isdir():
                        raise UserError(f"{download}: {member.name}: not a file or folder")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        download.unlink(missing_ok=True)
        raise UserError(f"{download}: not a readable archive ({exc})") from None


def mirror() -> str | None:
    """The mirror's base URL, where one is set: an http(s) URL, or one line saying it is not."""
    base = os.environ.get(MIRROR_ENV) or None
    if base is None:
        return None
    try:
        parts = urllib.parse.urlsplit(base)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is no port raises here
    except ValueError:
        valid = False
    if not valid:
        raise UserError(f"{MIRROR_ENV}={base!r} is not an http(s) URL of a mirror")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UserError(  # not quoted: what it holds may be a secret
            f"{MIRROR_ENV} must not hold credentials, a query string or a fragment; "
            "medharness sends no credentials to a mirror"
        )
    return base


def reachable(url: str) -> bool:
    """Whether the host of ``url`` accepts a connection within a few seconds."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "", port), timeout=3).close()
    except (OSError, ValueError):  # ValueError: a port that is no port
        return False
    return True
