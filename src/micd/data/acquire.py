"""Getting the real archives: resumable verified downloads, Zenodo and Synapse, safe extraction.

Every download goes to ``{dest}.part`` first; an interrupted transfer resumes from the bytes
already there (HTTP Range), and the file is renamed to ``dest`` only once its checksum matches.
A mismatch removes the partial file, so the next attempt starts clean.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from micd.atomic import stage_output_dir
from micd.data.io import file_digest, write_csv
from micd.errors import DataError, SettingsError, case_error

CHUNK = 1 << 20
JUNK_PREFIXES = ("__MACOSX/",)
JUNK_NAMES = (".DS_Store",)
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def verify_checksum(path: Path, algorithm: str, expected: str) -> None:
    """Raise DataError naming the file unless its ``algorithm`` digest is ``expected``."""
    found = file_digest(path, algorithm)
    if found != expected.lower():
        raise case_error(None, path, f"expected {algorithm} {expected.lower()}, found {found}")


def download(
    url: str,
    dest: Path,
    checksum: tuple[str, str] | None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` and verifying ``checksum`` = (algorithm, hex).

    Transient failures (a dropped connection, a timeout, a 5xx answer) are retried up to
    ``retries`` times, each resuming where the last stopped. ``checksum=None`` skips the check
    (only for sources that publish none).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout)
            break
        except _TRANSIENT as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
            if attempt == retries:
                raise DataError(
                    f"download of {url} failed after {retries + 1} attempts ({exc}); "
                    f"the partial file {part} is kept, so running again resumes it"
                ) from exc
            print(f"download interrupted ({exc}); resuming (attempt {attempt + 2})", file=sys.stderr)
            time.sleep(backoff * 2**attempt)
    if checksum is not None:
        try:
            verify_checksum(part, *checksum)
        except DataError as exc:
            part.unlink()
            raise DataError(f"{exc}; the partial download was removed, run again to download it anew") from None
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (restarting if the server ignores the Range)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is complete
            return
        raise
    with response:
        if response.status != 206:
            offset = 0  # a full answer: start the file again
        remaining = response.headers.get("Content-Length")
        total = offset + int(remaining) if remaining is not None else None
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                # a log file gets a line every 30 s rather than a redrawn bar
                mininterval=2.0 if sys.stderr.isatty() else 30.0,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def zenodo_file(api_url: str, filename: str, timeout: float = 60.0) -> tuple[str, str]:
    """Download address and md5 of ``filename`` in a Zenodo record (``api_url`` = ``.../api/records/<id>``)."""
    try:
        with urllib.request.urlopen(api_url, timeout=timeout) as response:
            record = json.load(response)
    except (*_TRANSIENT, ValueError) as exc:
        raise DataError(f"could not read the Zenodo record {api_url} ({exc}); set the md5 in the config to skip it")
    for entry in record.get("files", []):
        if entry.get("key") == filename:
            algorithm, _, digest = entry.get("checksum", "").partition(":")
            links = entry.get("links", {})
            url = links.get("content") or links.get("self")
            if algorithm != "md5" or not digest or not url:
                raise DataError(f"Zenodo record {api_url}: entry {filename} lacks an md5 checksum or a link")
            return url, digest
    names = [entry.get("key") for entry in record.get("files", [])]
    raise DataError(f"Zenodo record {api_url} has no file {filename!r}; it lists {names}")


def require_licence(accepted: bool, dataset: str, licence: str) -> None:
    if not accepted:
        raise SettingsError(
            f"{dataset} is distributed under {licence}. Read its terms, then set "
            f"datasets.{dataset}.licence_accepted: true in your config to download it"
        )


def fetch_synapse(
    dest: Path,
    entity: str,
    md5: str,
    placed: Path | None = None,
    token_env: str = "SYNAPSE_AUTH_TOKEN",
) -> Path:
    """Put Synapse's ``RawData.zip`` at ``dest``: the copy the user placed at ``placed``, or a
    download of ``entity`` with the personal access token in ``$token_env``; md5 verified either way.

    The token is read from the environment only and never appears in messages or files.
    """
    dest = Path(dest)
    if placed is not None and Path(placed).is_file():
        verify_checksum(Path(placed), "md5", md5)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            shutil.copyfile(placed, Path(tmp) / dest.name)
            os.replace(Path(tmp) / dest.name, dest)
        return dest
    token = os.environ.get(token_env)
    if not token:
        where = f"place RawData.zip at {placed}, or " if placed is not None else ""
        raise SettingsError(
            f"Synapse entity {entity} needs an account: {where}set the environment variable {token_env} "
            "to a personal access token (synapse.org > Account Settings > Personal Access Tokens)"
        )
    try:
        import synapseclient
    except ImportError:
        raise SettingsError("downloading from Synapse needs the synapseclient package: pip install -e '.[synapse]'")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        try:
            client = synapseclient.Synapse(skip_checks=True, silent=True)
            client.login(authToken=token, silent=True)
            path = Path(client.get(entity, downloadLocation=tmp).path)
        except Exception as exc:  # synapseclient raises many kinds; never echo the token
            raise DataError(f"Synapse download of {entity} failed: {str(exc).replace(token, '***')}") from None
        verify_checksum(path, "md5", md5)
        os.replace(path, dest)
    return dest


def extract_zip(archive: Path, out_dir: Path) -> None:
    """Extract ``archive`` into ``out_dir`` (atomically), skipping macOS junk.

    Refuses entries that would land outside ``out_dir`` (absolute paths, ``..``) and symbolic
    links; a truncated or damaged archive raises DataError naming it.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf, stage_output_dir(out_dir, "extract", [archive]) as tmp:
            for info in zf.infolist():
                if _is_junk(info.filename) or info.is_dir():
                    continue
                target = tmp / _safe_relative(archive, info)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # a bad CRC, a cut or garbled stream
                    raise case_error(
                        None,
                        archive,
                        f"entry {info.filename!r} is damaged ({exc}); expected a complete zip archive: "
                        "delete it and download again",
                    ) from exc
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise case_error(
            None,
            archive,
            f"expected a complete zip archive; it is truncated or damaged ({exc}): delete it and download again",
        ) from exc


def _is_junk(name: str) -> bool:
    base = PurePosixPath(name).name
    return name.startswith(JUNK_PREFIXES) or base.startswith("._") or base in JUNK_NAMES


def _safe_relative(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    path = PurePosixPath(info.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise case_error(None, archive, f"refusing entry {info.filename!r}: it would land outside the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise case_error(None, archive, f"refusing entry {info.filename!r}: archives of data sets hold no links")
    return path


def fetch_files(base_url: str, sha256: dict[str, str], out_dir: Path, retries: int = 5) -> None:
    """Download ``{base_url}/{name}`` for every name of ``sha256`` into ``out_dir`` (atomically),
    each checked against its pinned sha256, and record where each came from in ``sources.csv``."""
    with stage_output_dir(out_dir, "fetch-splits") as tmp:
        rows = []
        for name, digest in sorted(sha256.items()):
            url = f"{base_url.rstrip('/')}/{name}"
            download(url, tmp / name, ("sha256", digest), retries=retries)
            rows.append({"file": name, "url": url, "sha256": digest})
        write_csv(tmp / "sources.csv", ("file", "url", "sha256"), rows)
