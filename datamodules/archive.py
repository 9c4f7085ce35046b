"""Getting a dataset onto disk: from a local zip (extracted once, atomically) or a URL (checksummed)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from datamodules.errors import DatasetError


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; verify ``sha256`` before the file appears.

    The bytes go to a temporary file beside ``dest`` that is renamed only once complete and verified, so
    an interrupted or corrupt download never leaves a file at ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                    while block := response.read(1 << 20):
                        tmp.write(block)
                        bar.update(len(block))
        except Exception as err:
            tmp_path.unlink(missing_ok=True)
            raise DatasetError(f"download of {url} failed: {err}") from err
    if sha256 is not None:
        got = sha256_of(tmp_path)
        if got != sha256:
            tmp_path.unlink(missing_ok=True)
            raise DatasetError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}")
    tmp_path.replace(dest)
    return dest


def extract_once(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` once; a marker file records a complete extraction.

    Extraction goes to a temporary folder beside ``dest`` that is renamed into place at the end, so an
    interrupted extraction never leaves a half-filled ``dest``. Calling it again is a no-op. Processes that
    extract at the same time (DDP ranks started each on its own) each extract to their own temporary folder;
    the first rename wins and the others keep its result.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / ".extracted"
    if marker.exists():
        return dest
    if not archive.is_file():
        raise DatasetError(f"archive {archive} does not exist")
    if dest.exists() and any(dest.iterdir()):
        if marker.exists():  # another process finished since the check above
            return dest
        raise DatasetError(f"{dest} exists without a completed extraction of {archive}; remove it and retry")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial."))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (tmp / member).resolve()
                if not str(target).startswith(str(tmp.resolve())):
                    raise DatasetError(f"archive {archive} has an unsafe path {member!r}")
            zf.extractall(tmp)
        (tmp / ".extracted").write_text(f"{archive.name} {sha256_of(archive)}\n")
        if marker.exists():  # another process finished first
            return dest
        try:
            if dest.exists():
                dest.rmdir()
            tmp.replace(dest)
        except OSError:
            if not marker.exists():
                raise
    except zipfile.BadZipFile as err:
        raise DatasetError(f"archive {archive} is not a valid zip file: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
