"""Filing downloaded checkpoints into the stages' models/ folders by what they hold, and unpacking zips safely.

A `.ckpt` goes where its contents say (`read_checkpoint` + `checkpoint_kind`, weights only, so a file
carrying code is refused before anything runs), under its own name; a different file already there is
kept unless `force`. Downloads are staged in `<root>/.downloads/` and removed once filed or refused.
"""
from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from experiments.zenodo import CHUNK, RecordFile, download, file_digest, human_size
from utils import DOWNSTREAM_STAGES, UserError, atomic_path, output_root, pretrain_stages, stage_folder

DOWNLOADS = ".downloads"  # under the root: <name>.part files (resumed by the next run) and unpacked zips
STUDY_METHOD = "simclr"  # the study's encoders: a copy may already be in its folder


def stage_dir(root: Path, kind: str) -> Path:
    """Where a checkpoint of `kind` (a downstream stage or a pretraining method) is filed under `root`."""
    return root / stage_folder(kind) / "models"


def existing_stage_dirs(root: Path) -> list[Path]:
    """The models folders an identical copy of a record file may already be in."""
    stages = [*DOWNSTREAM_STAGES, *sorted({STUDY_METHOD, *pretrain_stages(root)})]
    return [stage_dir(root, stage) for stage in stages]


def select(files: tuple[RecordFile, ...] | list[RecordFile], patterns: list[str] | None) -> list[RecordFile]:
    """The files whose name matches any glob pattern (all without patterns); a pattern matching none is an error."""
    if not patterns:
        return list(files)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatch(f.name, p) for f in files)]
    if unmatched:
        names = ", ".join(f.name for f in files[:8]) + (", ..." if len(files) > 8 else "")
        raise UserError(f"--include {' '.join(unmatched)} matches no file of the record",
                        f"its files: {names or 'none'}; --list shows them all")
    return [f for f in files if any(fnmatch.fnmatch(f.name, p) for p in patterns)]


@dataclass
class Report:
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.kept and not self.failed

    def summary(self) -> str:
        text = (f"{len(self.downloaded)} downloaded, {len(self.skipped)} skipped (identical), "
                f"{len(self.kept)} kept (different, use --force)")
        text += f", {len(self.failed)} failed" if self.failed else ""
        text += f", {len(self.ignored)} ignored (neither .ckpt nor .zip)" if self.ignored else ""
        folders: dict[Path, int] = {}
        for path in self.downloaded + self.skipped + self.kept:
            folders[path.parent] = folders.get(path.parent, 0) + 1
        where = ", ".join(f"{folder} ({count})" for folder, count in folders.items())
        return text + (f"; in {where}" if where else "")


def _say(message: str) -> None:
    print(message, flush=True)


def _error(err: UserError, report: Report, name: str) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)
    report.failed.append(name)


def check_name(name: str) -> None:
    """A record's file name must be a plain name: it becomes a path under our folders."""
    if not name or name != PurePosixPath(name).name or "\\" in name or name.startswith(".") or "\0" in name:
        raise UserError(f"record file {name!r} is not a plain file name; refusing it", "check --record and --api-url")


def _kind(src: Path, name: str) -> str:
    from models.checkpoints import checkpoint_kind, read_checkpoint

    try:
        ckpt = read_checkpoint(src)
    except UserError as err:
        raise UserError(f"{name} not placed: {str(err).replace(str(src), name)}") from None
    try:
        return checkpoint_kind(ckpt)
    except (AttributeError, TypeError):  # state_dict keys that are not strings
        return "unknown"


def file_checkpoint(src: Path, name: str, root: Path, force: bool, report: Report) -> None:
    """Move the verified checkpoint `src` to `<its stage's models>/<name>` under `root`; `src` is gone afterwards."""
    from models.checkpoints import kind_name

    try:
        kind = _kind(src, name)
        if kind == "unknown":
            raise UserError(f"{name} not placed: its weights match no stage (not a pretrained encoder, "
                            "logistic-regression head or finetuned classifier of this framework or the study)",
                            "only those are filed")
        target = stage_dir(root, kind) / name
        if target.is_file():
            if file_digest(target) == file_digest(src):
                report.skipped.append(target)
                _say(f"{name}: skipped, identical to {target}")
                return
            if not force:
                report.kept.append(target)
                print(f"warning: {target} differs from {name} in the record; kept it (--force replaces it)",
                      file=sys.stderr, flush=True)
                return
        replaced = target.exists()
        with atomic_path(target) as tmp:
            shutil.move(str(src), tmp)
        report.downloaded.append(target)
        _say(f"{name}: {kind_name(kind)} -> {target}{' (replaced the different file)' if replaced else ''}")
    finally:
        src.unlink(missing_ok=True)


# ------------------------------------------------------------------ zip archives
def _escapes(member: str, root: Path) -> bool:
    parts = re.split(r"[\\/]", member)
    if member.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", member) or ".." in parts:
        return True
    return not (root / member).resolve().is_relative_to(root)


def extract_checkpoints(archive_path: Path, name: str, folder: Path) -> list[tuple[str, Path]]:
    """The `.ckpt` members of a zip, unpacked under `folder` as (file name, path).

    Any member that would land outside `folder` (`../`, absolute paths) refuses the whole archive
    before anything is written.
    """
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = archive.infolist()
            root = folder.resolve()
            bad = [m.filename for m in members if _escapes(m.filename, root)]
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise UserError(f"{name}: refusing the whole archive: entry {bad[0]!r}{more} would be written "
                                "outside its folder; nothing was extracted", "the archive is damaged or malicious")
            wanted = [m for m in members if not m.is_dir() and m.filename.lower().endswith(".ckpt")
                      and not m.filename.startswith("__MACOSX/") and not PurePosixPath(m.filename).name.startswith(".")]
            others = [m.filename for m in members if not m.is_dir() and m not in wanted]
            if others:
                _say(f"{name}: ignoring {len(others)} member(s) that are not checkpoints: {', '.join(others[:5])}")
            need = sum(m.file_size for m in wanted)
            folder.mkdir(parents=True, exist_ok=True)
            if need > shutil.disk_usage(folder).free:
                raise UserError(f"{name}: unpacking needs {human_size(need)}, more than {folder} has free",
                                "free some space or pass --dest-root on another disk")
            extracted = []
            for index, member in enumerate(wanted):
                path = folder / str(index) / PurePosixPath(member.filename.replace("\\", "/")).name
                path.parent.mkdir()
                with archive.open(member) as source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                extracted.append((path.name, path))
            return extracted
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise UserError(f"{name} is not a readable zip archive ({err})", "the download may be damaged") from None


# ------------------------------------------------------------------ the whole job
def _identical_present(file: RecordFile, root: Path) -> Path | None:
    if file.algorithm not in hashlib.algorithms_available:
        return None
    for folder in existing_stage_dirs(root):
        existing = folder / file.name
        if existing.is_file() and existing.stat().st_size == file.size \
                and file_digest(existing, file.algorithm) == file.digest:
            return existing
    return None


def _fetch_one(file: RecordFile, downloads: Path, root: Path, force: bool, retries: int,
               progress: bool, report: Report) -> None:
    check_name(file.name)
    suffix = PurePosixPath(file.name).suffix.lower()
    if suffix not in (".ckpt", ".zip"):
        report.ignored.append(file.name)
        _say(f"{file.name}: ignored (neither a .ckpt checkpoint nor a .zip of them)")
        return
    if suffix == ".ckpt" and (present := _identical_present(file, root)):
        report.skipped.append(present)
        _say(f"{file.name}: skipped, identical to {present}")
        return
    _say(f"{file.name}: downloading {human_size(file.size)} from {file.url}")
    part = download(file, downloads / f"{file.name}.part", retries, progress)
    if suffix == ".ckpt":
        file_checkpoint(part, file.name, root, force, report)
        return
    folder = downloads / f"{file.name}.unpacked"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        members = extract_checkpoints(part, file.name, folder)
        if not members:
            _say(f"{file.name}: holds no .ckpt file")
        for member_name, path in members:
            try:
                check_name(member_name)
                file_checkpoint(path, member_name, root, force, report)
            except UserError as err:
                _error(err, report, f"{file.name}:{member_name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        part.unlink(missing_ok=True)


def fetch_files(files: list[RecordFile], dest_root: Path | None = None, force: bool = False, retries: int = 4,
                progress: bool = True) -> Report:
    """Download, verify and file every record file; one file's failure is reported and the rest go on."""
    root = Path(dest_root) if dest_root is not None else output_root()
    downloads = root / DOWNLOADS
    report = Report()
    try:
        for file in files:
            try:
                _fetch_one(file, downloads, root, force, retries, progress, report)
            except UserError as err:
                _error(err, report, file.name)
    finally:
        try:
            downloads.rmdir()  # only when empty: a partial download stays for the next run to resume
        except OSError:
            pass
    return report
