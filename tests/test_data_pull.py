"""Datasets fetched on first use: a loopback server stands in for the mirror and the public
sources; checksums, cut downloads, a read-only cache, and a run that pulls what it needs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_DATA

import medharness.catalog as catalog_module
import medharness.data as data_module
from medharness.catalog import TRUST_ON_FIRST_USE, Dataset, catalog, problems, pull
from medharness.cli import main
from medharness.core.errors import UserError
from medharness.data import DataRoot, load_task_data, verify_checksums
from medharness.tasks import get_task


class Served:
    """What the loopback server holds, and what it was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before the connection drops
        self.ranges: list[tuple[str, str | None]] = []
        self.length_header: str | None = None  # sent instead of the true Content-Length
        self.headers: list[dict[str, str]] = []  # of each request
        self.moved: dict[str, str] = {}  # path -> where a 302 sends it
        self.trickle: set[str] = set()  # paths sent a byte every 0.1 s
        self.silent: set[str] = set()  # paths sent 10 bytes, then nothing for 3 s


@contextmanager
def serving(served: Served) -> Iterator[str]:
    """A loopback server of ``served``'s files, its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            requested = self.headers.get("Range")
            served.ranges.append((path, requested))
            served.headers.append(dict(self.headers.items()))
            if path in served.moved:
                self.send_response(302)
                self.send_header("Location", served.moved[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path not in served.files:
                self.send_error(404)
                return
            body, start = served.files[path], 0
            if requested:
                start = int(requested.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
            else:
                self.send_response(200)
            rest = body[start:]
            if served.length_header != "":  # "": none, the body ends with the connection
                self.send_header("Content-Length", served.length_header or str(len(rest)))
            self.end_headers()
            if path in served.trickle:
                self.trickle(rest)
                return
            if path in served.silent:
                with suppress(OSError):
                    self.wfile.write(rest[:10])
                    self.wfile.flush()
                    time.sleep(3)
                self.close_connection = True
                return
            cut = served.cut_once.pop(path, None)
            self.wfile.write(rest if cut is None else rest[:cut])
            if cut is not None:
                self.close_connection = True

        def trickle(self, rest: bytes) -> None:
            with suppress(OSError):  # the client hangs up at its deadline
                for byte in rest[:40]:  # each read is quick, the whole never is
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, *args: Any) -> None:
            pass  # a client that hung up on a refused answer

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    with serving(served) as base:
        yield base, served


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def entry_for(name: str, files: dict[str, bytes], sources: list[dict[str, str]]) -> Dataset:
    """A catalog entry for fixture files, its checksums computed here with hashlib."""
    loose = {p: sha(d) for p, d in files.items() if "/" not in p}
    folders: dict[str, dict[str, Any]] = {}
    for top in sorted({p.split("/", 1)[0] for p in files if "/" in p}):
        lines = sorted((p, sha(d)) for p, d in files.items() if p.startswith(f"{top}/"))
        digest = sha("".join(f"{h}  ./{p}\n" for p, h in lines).encode())
        folders[top] = {"files": len(lines), "sha256": digest}
    size = sum(len(d) for d in files.values())
    return Dataset(name, name, "MIT", "https://example.org", [], size, sources, loose, folders)


def tarball(name: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for path, data in files.items():
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fixture_catalog(
    fixture_data: Path, server: tuple[str, Served], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Dataset]:
    """medqa (single files) and medquad (a zip of folders) from the test fixtures, served
    both as public sources and as mirror tarballs."""
    base, served = server
    medqa = tree(fixture_data / "medqa")
    medquad = tree(fixture_data / "medquad")
    for path, data in medqa.items():
        served.files[f"sources/medqa/{path}"] = data
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        for path, data in medquad.items():
            archive.writestr(f"MedQuAD-abc/{path}", data)
    served.files["sources/medquad.zip"] = bundle.getvalue()
    for name, files in (("medqa", medqa), ("medquad", medquad)):
        served.files[f"mirror/{name}.tar.gz"] = tarball(name, files)
    entries = {
        "medqa": entry_for(
            "medqa",
            medqa,
            [{"url": f"{base}/sources/medqa/{p}", "path": p} for p in medqa],
        ),
        "medquad": entry_for(
            "medquad",
            medquad,
            [{"url": f"{base}/sources/medquad.zip", "archive": "zip", "strip": "MedQuAD-abc/"}],
        ),
    }
    monkeypatch.setattr(catalog_module, "catalog", lambda: entries)
    monkeypatch.setattr(data_module, "catalog", lambda: entries)
    monkeypatch.delenv("MEDHARNESS_DATA_DIR", raising=False)
    return entries


def test_pull_from_the_public_sources_checks_and_places_each_dataset(
    fixture_catalog: dict[str, Dataset], fixture_data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    assert main(["data", "pull", "--data-dir", str(root)]) == 0
    for name in ("medqa", "medquad"):
        pulled = tree(root / name)
        assert pulled.pop("SHA256SUMS") and pulled == tree(fixture_data / name)
        check = subprocess.run(
            ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=root / name, check=False
        )
        assert check.returncode == 0  # the written SHA256SUMS is sha256sum's own format
    assert not list(root.glob(".*"))  # no staging left
    assert main(["data", "verify", "--data-dir", str(root)]) == 0


def test_offline_a_pull_names_the_mirror_and_data_dir_settings(
    fixture_catalog: dict[str, Dataset],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unreachable = dataclasses.replace(
        fixture_catalog["medqa"],
        sources=[{"url": "http://127.0.0.1:9/medqa/test.jsonl", "path": "x.jsonl"}],
    )  # nothing listens: as offline as a test may be
    monkeypatch.setattr(catalog_module, "catalog", lambda: {"medqa": unreachable})
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "set MEDHARNESS_DATA_MIRROR to a mirror" in err[0]
    assert "MEDHARNESS_DATA_DIR at a folder that holds the datasets" in err[0]
    assert "run the command again" not in err[0]  # nothing arrived: nothing to resume


def test_pull_from_a_mirror_and_list_what_is_there(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    root = tmp_path / "data"
    assert main(["data", "pull", "medquad", "--data-dir", str(root)]) == 0
    assert [path for path, _ in served.ranges] == ["mirror/medquad.tar.gz"]
    capsys.readouterr()
    assert main(["data", "list", "--data-dir", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("medquad") and "verified" in line for line in lines)
    assert any(line.startswith("medqa ") and "absent" in line for line in lines)


def test_a_checksum_mismatch_is_refused_and_nothing_is_left(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, served = server
    served.files["sources/medqa/us_4opt_test.jsonl"] += b"\n"
    root = tmp_path / "data"
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "us_4opt_test.jsonl sha256" in err and "nothing was kept" in err
    assert err.count("\n") == 1
    assert list(root.iterdir()) == []


def test_a_cut_download_resumes_where_it_stopped(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, served = server
    archive = served.files["sources/medquad.zip"]
    served.cut_once["sources/medquad.zip"] = len(archive) // 2
    root = tmp_path / "data"
    assert main(["data", "pull", "medquad", "--data-dir", str(root)]) == 2
    assert "connection closed early" in capsys.readouterr().err
    part = root / ".medquad.partial" / "downloads" / "medquad.zip.part"
    assert part.stat().st_size == len(archive) // 2
    assert main(["data", "pull", "medquad", "--data-dir", str(root)]) == 0
    assert served.ranges[-1] == ("sources/medquad.zip", f"bytes={len(archive) // 2}-")
    assert not problems(fixture_catalog["medquad"], root / "medquad")


def test_a_read_only_data_folder_is_one_clear_line(
    fixture_catalog: dict[str, Dataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "readonly"
    root.mkdir()
    if subprocess.run(["chattr", "+i", str(root)], check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
    finally:
        subprocess.run(["chattr", "-i", str(root)], check=True)
    err = capsys.readouterr().err
    assert f"cannot write the data folder {root}" in err and err.count("\n") == 1


def quick_config(tmp_path: Path, fake_script: Path) -> Path:
    config = {
        "name": "pulled",
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "fake", "model": f"fake:{fake_script}"}],
        "tasks": [{"name": "medquad_gen", "limit": 4}, {"name": "medqa_4opt", "limit": 4}],
    }
    path = tmp_path / "pulled.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_a_run_pulls_missing_datasets_into_the_cache_from_the_mirror(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    fake_script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, served = server
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror")
    assert main(["run", str(quick_config(tmp_path, fake_script))]) == 0
    assert sorted(p for p, _ in served.ranges) == ["mirror/medqa.tar.gz", "mirror/medquad.tar.gz"]
    assert (tmp_path / "cache/data/medquad/SHA256SUMS").is_file()
    assert main(["run", str(quick_config(tmp_path, fake_script))]) == 0
    assert len(served.ranges) == 2  # present and verified: not pulled again


def test_offline_a_missing_dataset_names_the_command_that_fetches_it(
    fixture_catalog: dict[str, Dataset],
    fake_script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", "http://127.0.0.1:9/")  # nothing listens
    assert main(["run", str(quick_config(tmp_path, fake_script))]) == 2
    err = capsys.readouterr().err
    assert "`medharness data pull medquad` fetches it" in err and err.count("\n") == 1


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_the_shipped_catalog_matches_the_real_datasets() -> None:
    assert REAL_DATA is not None
    for entry in catalog().values():
        first_use = set(entry.files.values()) == {TRUST_ON_FIRST_USE}
        if first_use and not (REAL_DATA / entry.name).exists():
            continue  # nothing is pinned before its first pull
        assert problems(entry, REAL_DATA / entry.name) == [], entry.name


def test_a_refused_archive_is_not_reused_by_the_next_pull(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    good = served.files["mirror/medquad.tar.gz"]
    served.files["mirror/medquad.tar.gz"] = b"not an archive at all"
    root = tmp_path / "data"
    assert main(["data", "pull", "medquad", "--data-dir", str(root)]) == 2
    assert "not a readable archive" in capsys.readouterr().err
    served.files["mirror/medquad.tar.gz"] = good  # the mirror is fixed
    assert main(["data", "pull", "medquad", "--data-dir", str(root)]) == 0
    assert [path for path, _ in served.ranges].count("mirror/medquad.tar.gz") == 2


def test_a_link_planted_at_the_staging_path_is_refused_and_left_alone(
    fixture_catalog: dict[str, Dataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("mine")
    root.mkdir()
    (root / ".medqa.partial").symlink_to(elsewhere)
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]
    assert (elsewhere / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("hostile", ["extra folder", "unpacks to gigabytes"])
def test_a_mirror_archive_is_checked_member_by_member_while_unpacking(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    fixture_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hostile: str,
) -> None:
    base, served = server
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    files = tree(fixture_data / "medqa")
    if hostile == "extra folder":
        files["planted/extra.jsonl"] = b'{"question": "scored as if it were MedQA"}\n'
        says = "planted/extra.jsonl: no checksum of the catalog covers it"
    else:  # a few dozen KB of gzip that would unpack to 24 MiB of one file
        files["us_4opt_test.jsonl"] = bytes(24 << 20)
        says = "unpacks to more than the"
    served.files["mirror/medqa.tar.gz"] = tarball("medqa", files)
    assert len(served.files["mirror/medqa.tar.gz"]) < 1 << 20
    root = tmp_path / "data"
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err.splitlines()[-1], err  # a bar, then one line
    assert not (root / "medqa").exists()
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert written < fixture_catalog["medqa"].bytes + (5 << 20)  # stopped, not unpacked whole


@pytest.mark.parametrize("base", ["not-a-url", "http://127.0.0.1:99999/", "http://[::1/"])
def test_a_mirror_that_is_no_url_is_one_line(
    base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", base)
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an http(s) URL of a mirror" in err


def test_a_content_length_that_is_no_number_is_read_past(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, served = server
    served.length_header = "lots"  # the body still ends when the connection closes
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 0


def test_a_file_trusted_on_first_use_is_pinned_by_its_first_pull(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    csv_file = (Path(__file__).parent / "fixtures" / "medcalc_bench" / "test_data.csv").read_bytes()
    served.files["sources/medcalc/test_data.csv"] = csv_file
    url = f"{base}/sources/medcalc/test_data.csv"
    fixture_catalog["medcalc_bench"] = Dataset(
        "medcalc_bench", "MedCalc-Bench", "CC BY-SA 4.0", "https://example.org", ["medcalc"],
        len(csv_file), [{"url": url, "path": "test_data.csv"}],
        {"test_data.csv": TRUST_ON_FIRST_USE}, {},
    )  # fmt: skip
    root = tmp_path / "data"
    assert main(["data", "pull", "medcalc_bench", "--data-dir", str(root)]) == 0
    sums = (root / "medcalc_bench" / "SHA256SUMS").read_text()
    assert sums == f"{sha(csv_file)}  ./test_data.csv\n"  # recorded at the first pull
    assert main(["data", "verify", "--data-dir", str(root)]) == 0
    (root / "medcalc_bench" / "test_data.csv").write_bytes(csv_file.replace(b"93.333", b"93.334"))
    assert problems(fixture_catalog["medcalc_bench"], root / "medcalc_bench") != []
    with pytest.raises(UserError, match=r"test_data.csv: sha256 .* differs from .*/SHA256SUMS"):
        load_task_data(get_task("medcalc"), DataRoot(root, "test"))


def test_files_without_published_digests_are_pinned_at_their_first_pull(
    server: tuple[str, Served], tmp_path: Path
) -> None:
    base, served = server
    first = b'{"prompt_id": "a"}\n'
    served.files["sources/hb/eval.jsonl"] = first
    entry = entry_for("hb", {"eval.jsonl": first}, [])
    source = {"url": f"{base}/sources/hb/eval.jsonl", "path": "eval.jsonl"}
    entry = dataclasses.replace(entry, files={"eval.jsonl": TRUST_ON_FIRST_USE}, sources=[source])
    folder = pull(entry, tmp_path)
    assert (folder / "SHA256SUMS").read_text() == f"{sha(first)}  ./eval.jsonl\n"
    assert problems(entry, folder) == []
    (folder / "eval.jsonl").write_bytes(b'{"prompt_id": "b"}\n')  # changed after the pull
    assert problems(entry, folder)[0].startswith("eval.jsonl sha256 ")
    with pytest.raises(
        UserError, match=r"eval.jsonl: sha256 \w+\.\.\. differs from \w+\.\.\. in .*SHA256SUMS"
    ):
        verify_checksums(folder, "hb", {"hb/eval.jsonl": sha((folder / "eval.jsonl").read_bytes())})


def test_a_mirror_redirect_to_another_port_is_followed_with_no_credentials(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, served = server
    elsewhere = Served()
    elsewhere.files["medqa.tar.gz"] = served.files["mirror/medqa.tar.gz"]
    with serving(elsewhere) as other:
        served.moved["mirror/medqa.tar.gz"] = f"{other}/medqa.tar.gz"
        monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
        assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 0
    assert [p for p, _ in elsewhere.ranges] == ["medqa.tar.gz"]
    sent = {name.lower() for name in elsewhere.headers[0]}
    assert not sent & {"authorization", "cookie", "proxy-authorization"}


@pytest.mark.parametrize(
    "base", ["http://user:secret@127.0.0.1:8000/", "http://127.0.0.1:8000/?token=secret"]
)
def test_a_mirror_url_holding_credentials_is_refused_without_echoing_them(
    base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", base)
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "credentials" in err and "secret" not in err, err


def test_a_mirror_that_trickles_meets_the_download_deadline_in_one_line(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    served.trickle.add("mirror/medqa.tar.gz")
    monkeypatch.setattr(catalog_module, "DOWNLOAD_DEADLINE_S", 0.5)
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    started = time.monotonic()
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 2
    assert time.monotonic() - started < 3  # not the 4 s the whole trickle takes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "before the deadline" in err.splitlines()[-1], err
    assert "resume" in err


def test_a_download_larger_than_its_dataset_is_refused_and_not_reused(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    good = served.files["mirror/medqa.tar.gz"]
    cap = 2 * fixture_catalog["medqa"].bytes + (4 << 20)  # twice the dataset and its sums
    for declared in (True, False):  # a Content-Length that says so, and none
        served.length_header = None if declared else ""
        served.files["mirror/medqa.tar.gz"] = bytes(cap + 1)
        monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
        root = tmp_path / f"data-{declared}"
        assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
        err = capsys.readouterr().err
        assert "bytes" in err and "nothing was kept" in err, err
        assert not [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".part")]
        served.length_header, served.files["mirror/medqa.tar.gz"] = None, good
        before = len(served.ranges)
        assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 0
        assert served.ranges[before:] == [("mirror/medqa.tar.gz", None)]  # afresh, no Range


@pytest.mark.parametrize("found", ["link", "user's folder"])
def test_a_dataset_path_that_fails_its_check_and_is_not_a_pull_is_left_alone(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    found: str,
) -> None:
    base, served = server
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("mine")
    if found == "link":
        (root / "medqa").symlink_to(elsewhere)
    else:
        elsewhere.rename(root / "medqa")
        elsewhere = root / "medqa"
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the catalog" in err, err
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]
    assert served.ranges == []  # refused before any download


def test_a_pulled_dataset_that_fails_its_check_is_replaced(
    fixture_catalog: dict[str, Dataset], tmp_path: Path
) -> None:
    root = tmp_path / "data"
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 0
    spoilt = next(p for p in (root / "medqa").iterdir() if p.suffix == ".jsonl")
    spoilt.write_text("edited\n")
    assert main(["data", "pull", "medqa", "--data-dir", str(root)]) == 0
    assert not problems(fixture_catalog["medqa"], root / "medqa")


def test_a_mirror_gone_silent_stops_the_download_long_before_its_deadline(
    fixture_catalog: dict[str, Dataset],
    server: tuple[str, Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = server
    served.silent.add("mirror/medqa.tar.gz")
    monkeypatch.setattr(catalog_module, "STALL_S", 0.3)
    monkeypatch.setenv("MEDHARNESS_DATA_MIRROR", f"{base}/mirror/")
    started = time.monotonic()
    assert main(["data", "pull", "medqa", "--data-dir", str(tmp_path / "data")]) == 2
    assert time.monotonic() - started < 2.5  # not the 3 s of silence, nor the 30 min
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no answer within 0.3 s" in err.splitlines()[-1], err
    assert "what arrived is kept" in err  # the 10 bytes, resumed by the next pull
