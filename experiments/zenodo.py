"""Zenodo records over plain HTTP (urllib): a record's file list, and one file's download with resume,
retries with exponential back-off and a checksum check. Filing the files is `experiments.download`'s job.

    GET <api-url>/records/<id>  ->  {"files": [{"key", "size", "checksum": "md5:<hex>", "links": {"self"}}]}
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from utils import UserError

DEFAULT_API_URL = "https://zenodo.org/api"
DEFAULT_RECORD = "8048780"  # "Evaluating SimCLR for Medical Image Classification": the study's checkpoints
BACKOFF_BASE_S = 1.0  # retry n waits BACKOFF_BASE_S * 2**(n-1) seconds (tests set 0)
MAX_RETRY_AFTER_S = 120.0  # cap on a server's Retry-After
TIMEOUT_S = 60.0  # per connect / per read
CHUNK = 1 << 20
USER_AGENT = "medsimclr-download-checkpoints/0.1 (python urllib)"
MIRROR_FIX = "check the network connection, or point --api-url at a mirror"


@dataclass(frozen=True)
class RecordFile:
    name: str
    size: int
    checksum: str  # "<algorithm>:<hex>", e.g. "md5:0f3e..."
    url: str

    @property
    def algorithm(self) -> str:
        return self.checksum.partition(":")[0].lower()

    @property
    def digest(self) -> str:
        return self.checksum.partition(":")[2].lower()


@dataclass(frozen=True)
class Record:
    id: str
    title: str
    url: str
    files: tuple[RecordFile, ...]


class TransientError(Exception):
    """A failure worth retrying (timeout, dropped connection, HTTP 5xx or 429)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RangeNotSatisfiable(TransientError):
    """HTTP 416: the server cannot resume from the partial file; retried from scratch."""


def parse_record_id(text: str) -> str:
    """A record id from `8048780`, `10.5281/zenodo.8048780` or `https://zenodo.org/records/8048780`."""
    match = re.fullmatch(r"\s*(?:.*(?:zenodo\.|/records?/))?(\d+)/?\s*", text)
    if not match:
        raise ValueError(f"not a Zenodo record id, DOI or URL: {text}")
    return match.group(1)


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ HTTP with error translation
def _retry_after(err: urllib.error.HTTPError) -> float | None:
    value = (err.headers or {}).get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER_S) if value.strip().replace(".", "", 1).isdigit() else None


def _translate(err: BaseException, what: str, url: str) -> Exception:
    """A TransientError to retry, or a one-line UserError to stop with."""
    if isinstance(err, urllib.error.HTTPError):
        status = f"HTTP {err.code} {err.reason}"
        if err.code == 416:
            return RangeNotSatisfiable(f"{status}; starting over")
        if err.code == 429 or err.code >= 500:
            return TransientError(status, _retry_after(err))
        fix = {404: "check --record and --api-url; the file or record may have been removed"}.get(
            err.code, "check --record and --api-url")
        return UserError(f"{what}: {status} from {url}", fix)
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)) or "timed out" in str(reason):
            return TransientError(f"{reason or 'timed out'}")
        return UserError(f"{what} could not be reached at {urllib.parse.urlsplit(url).netloc or url} ({reason})",
                         MIRROR_FIX)
    if isinstance(err, (TimeoutError, socket.timeout)):
        return TransientError("timed out")
    if isinstance(err, http.client.IncompleteRead):
        return TransientError(f"connection dropped ({len(err.partial)} bytes read, more expected)")
    if isinstance(err, (ConnectionError, http.client.HTTPException)):
        return TransientError(f"connection dropped ({type(err).__name__}{f': {err}' if str(err) else ''})")
    return UserError(f"{what}: {err}", "check the disk and the folder's permissions")


def _open(url: str, what: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except ValueError as err:  # unknown url type, malformed URL
        raise UserError(f"{what}: bad URL {url} ({err})", "--api-url takes an http(s) URL") from None
    except (OSError, http.client.HTTPException) as err:
        if isinstance(err, urllib.error.HTTPError):
            err.close()
        raise _translate(err, what, url) from None


def retrying(action, what: str, retries: int, progressed=lambda: False):
    """Run `action()`, retrying a TransientError up to `retries` times with exponential back-off.

    `progressed()`, asked after each failure, tells whether the attempt got further than any before it
    (a resumed download did): then the count of failures in a row starts again.
    """
    failures = 0
    while True:
        try:
            return action()
        except (OSError, http.client.HTTPException) as err:  # raised while reading or writing
            error = _translate(err, what, "")
            if not isinstance(error, TransientError):
                raise error from None
        except TransientError as err:
            error = err
        failures = 0 if progressed() else failures
        if failures >= retries:
            raise UserError(f"{what}: gave up after {failures + 1} failed attempt(s) in a row ({error})",
                            "try again later, raise --retries, or point --api-url at a mirror") from None
        delay = BACKOFF_BASE_S * 2 ** failures
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        failures += 1
        from tqdm import tqdm

        tqdm.write(f"warning: {what}: {error}; retry {failures} of {retries} in {delay:g} s", file=sys.stderr)
        time.sleep(delay)


# ------------------------------------------------------------------ the record
def record_url(api_url: str, record_id: str) -> str:
    return f"{api_url.rstrip('/')}/records/{urllib.parse.quote(str(record_id))}"


def parse_record(data, record_id: str, url: str) -> Record:
    """The record's files from Zenodo's JSON (the current API, and the legacy one's field names)."""
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):  # GET /records/<id>/files
        files = files.get("entries")
    if not isinstance(files, list):
        raise UserError(f"{url} did not answer with a Zenodo record (no file list)", "check --record and --api-url")
    parsed = []
    for entry in files:
        links = entry.get("links") or {}
        name = entry.get("key") or entry.get("filename")
        link = links.get("self") or links.get("content") or links.get("download")
        if not name or not link or entry.get("size", entry.get("filesize")) is None:
            raise UserError(f"{url}: a file entry lacks its name, size or link ({str(entry)[:100]})",
                            "check --api-url: it should serve Zenodo's REST API")
        parsed.append(RecordFile(str(name), int(entry.get("size", entry.get("filesize"))),
                                 str(entry.get("checksum") or ""), urllib.parse.urljoin(url, link)))
    title = ((data.get("metadata") or {}).get("title") or data.get("title") or "") if isinstance(data, dict) else ""
    return Record(str(record_id), str(title), url, tuple(parsed))


def fetch_record(api_url: str = DEFAULT_API_URL, record_id: str = DEFAULT_RECORD, retries: int = 4) -> Record:
    url = record_url(api_url, record_id)
    what = f"Zenodo record {record_id}"

    def get() -> bytes:
        with _open(url, what, {"Accept": "application/json"}) as response:
            return response.read()

    body = retrying(get, what, retries)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{url} did not answer with JSON", "check --api-url: it should serve Zenodo's REST API") from None
    return parse_record(data, record_id, url)


# ------------------------------------------------------------------ one file
def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def download(file: RecordFile, part: Path, retries: int = 4, progress: bool = True) -> Path:
    """Download `file` into `part` (resuming what is there), verify its checksum, return `part`.

    On a checksum mismatch `part` is deleted and a UserError raised; nothing else is ever written.
    """
    if file.algorithm not in hashlib.algorithms_available or not file.digest:
        raise UserError(f"{file.name}: the record gives no usable checksum ({file.checksum or 'none'})",
                        "refusing to place an unverified file")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > file.size:
        part.unlink()
    free = shutil.disk_usage(part.parent).free
    if file.size - min(have, file.size) > free:
        raise UserError(f"{file.name}: needs {human_size(file.size)} but {part.parent} has {human_size(free)} free",
                        "free some space or pass --dest-root on another disk")
    what = file.name
    best = [part.stat().st_size if part.exists() else 0]
    bar = [None]

    def progressed() -> bool:
        now = part.stat().st_size if part.exists() else 0
        better, best[0] = now > best[0], max(best[0], now)
        return better

    def attempt() -> None:
        have = part.stat().st_size if part.exists() else 0
        if have >= file.size > 0:
            return
        try:
            response = _open(file.url, what, {"Range": f"bytes={have}-"} if have else {})
        except RangeNotSatisfiable:
            part.unlink(missing_ok=True)
            raise
        with response:
            if have and response.status == 206 and _content_range_start(response.headers.get("Content-Range")) != have:
                part.unlink()
                raise TransientError("the server resumed at the wrong offset; starting over")
            if response.status != 206:
                have = 0  # the server sent the whole file (no resume support)
            expected = int(response.headers.get("Content-Length") or file.size - have)
            if bar[0] is not None:  # a retry: show where it resumes
                bar[0].reset(total=file.size)
                bar[0].n = have
                bar[0].refresh()
            elif progress:
                from tqdm import tqdm

                bar[0] = tqdm(total=file.size, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=file.name, file=sys.stderr, dynamic_ncols=True)
            got = 0
            with open(part, "ab" if have else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    got += len(block)
                    if bar[0] is not None:
                        bar[0].update(len(block))
            if got < expected:
                raise TransientError(f"connection dropped after {have + got} of {file.size} bytes")

    try:
        retrying(attempt, what, retries, progressed)
    except KeyboardInterrupt:
        print(f"\nnote: the partial download is kept in {part}; run again to resume it", file=sys.stderr)
        raise
    finally:
        if bar[0] is not None:
            bar[0].close()
    got = file_digest(part, file.algorithm)
    if got != file.digest:
        part.unlink()
        raise UserError(f"{file.name}: checksum mismatch ({file.algorithm} {got}, the record says {file.digest}); "
                        "the download was deleted and nothing placed",
                        "run again; if it repeats, the server or mirror serves a different file")
    return part
