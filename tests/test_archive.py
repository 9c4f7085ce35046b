"""Getting data onto disk: zip extraction (once, atomic) and checksummed download from a loopback server."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from datamodules import DatasetError
from datamodules.archive import download, extract_once
from tests.test_kolektor_datamodule import make_dm


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder; yields (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", folder
    finally:
        server.shutdown()
        server.server_close()


def zip_folder(source: Path, archive: Path, top: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, Path(top) / path.relative_to(source))
    return archive


def test_download_checks_the_checksum_and_leaves_nothing_on_mismatch(served, tmp_path: Path) -> None:
    url, folder = served
    (folder / "blob.bin").write_bytes(b"x" * 5000)
    good = hashlib.sha256(b"x" * 5000).hexdigest()
    dest = tmp_path / "dl" / "blob.bin"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download(f"{url}/blob.bin", dest, sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())
    assert download(f"{url}/blob.bin", dest, sha256=good).read_bytes() == b"x" * 5000


def test_download_failure_names_the_url(served, tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DatasetError, match="missing.zip"):
        download(f"{url}/missing.zip", tmp_path / "missing.zip")
    assert not (tmp_path / "missing.zip").exists()


def test_datamodule_downloads_extracts_and_reads(served, fresh_kolektor: Path, tmp_path: Path) -> None:
    url, folder = served
    archive = zip_folder(fresh_kolektor, folder / "KolektorSDD.zip", "KolektorSDD")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = tmp_path / "data" / "KolektorSDD"
    dm = make_dm(root, archive=tmp_path / "data" / "KolektorSDD.zip", url=f"{url}/KolektorSDD.zip", sha256=sha)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_samples) + len(dm.test_samples) == 18


def test_interrupted_extraction_leaves_no_half_written_root(tmp_path: Path) -> None:
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="broken.zip"):
        extract_once(bad, dest)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial." in p.name]


@pytest.mark.parametrize("other_finishes", ["before_the_marker_check", "before_the_rename"])
def test_a_concurrent_extraction_that_finishes_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             other_finishes: str) -> None:
    """Two processes (DDP ranks started each on its own) extract the same zip: the one that renames second
    keeps the first one's folder instead of failing, and leaves no temporary folder."""
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.txt", "mine")
    dest = tmp_path / "out"
    real_extractall, real_replace = zipfile.ZipFile.extractall, Path.replace

    def other_process_done() -> None:
        (dest / "top").mkdir(parents=True)
        (dest / "top" / "a.txt").write_text("theirs")
        (dest / ".extracted").write_text("data.zip\n")

    def extract_then_other(self, path, *args, **kwargs):  # noqa: ANN001, ANN202
        real_extractall(self, path, *args, **kwargs)
        if other_finishes == "before_the_marker_check":
            other_process_done()

    def other_then_replace(self, target):  # noqa: ANN001, ANN202
        if other_finishes == "before_the_rename" and Path(target) == dest:
            other_process_done()
        return real_replace(self, target)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_then_other)
    monkeypatch.setattr(Path, "replace", other_then_replace)
    assert extract_once(archive, dest) == dest
    assert (dest / "top" / "a.txt").read_text() == "theirs"
    assert not [p for p in tmp_path.iterdir() if ".partial." in p.name]


def test_unsafe_member_paths_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "no")
    with pytest.raises(DatasetError, match="unsafe path"):
        extract_once(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
