"""One run per name at a time: `<stage>/models/<name>.lock`, held from the first check of the run's output to its
final `<name>.ckpt` and config, so that a second run of the same name (another terminal, another cluster job)
exits at once instead of writing into the same TensorBoard folder and losing one of the two results.

The lock file holds the holder's host, process id, SLURM job id and start time; a thread touches it every
HEARTBEAT_S while the run lives. A lock is taken over, with a note, when its holder is gone: a dead process on this
host, or a lock on another host (a shared cluster file system) not touched for STALE_S, or the same SLURM job (a
requeued attempt of this very run). The lock belongs to the run, not to a rank: only global rank 0 takes it (the
other processes of a multi-device run are started by it, or beside it by torchrun or SLURM).
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from pathlib import Path

from utils import ON_EXIT, UserError

HEARTBEAT_S = 30.0  # ours: how often a live run touches its lock
STALE_S = 300.0  # ours: a lock of another host untouched this long is a dead run's (10 missed heartbeats)
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK")  # set by torchrun, SLURM and Lightning's launchers

_HELD: dict[Path, "RunLock"] = {}


def is_rank_zero() -> bool:
    return all(os.environ.get(variable, "0") == "0" for variable in RANK_VARIABLES)


def me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    """The lock of run `name` in folder `folder` (a stage's models/)."""

    def __init__(self, folder: Path, name: str):
        self.path = Path(folder) / f"{name}.lock"
        self.name = name
        self.stop = threading.Event()

    def holder(self) -> dict | None:
        try:
            return {**json.loads(self.path.read_text()), "touched": self.path.stat().st_mtime}
        except (OSError, ValueError):
            return None

    def why_free(self, holder: dict) -> str | None:
        """None while `holder` still runs; else why its lock may be taken over."""
        mine = me()
        if holder.get("pid") == mine["pid"] and holder.get("host") == mine["host"]:
            return "this process's own"
        if holder.get("slurm_job") and holder.get("slurm_job") == mine["slurm_job"]:
            return f"an earlier attempt of SLURM job {mine['slurm_job']}"
        if holder.get("host") == mine["host"]:
            return None if process_alive(int(holder.get("pid", -1))) else f"process {holder.get('pid')}, which is gone"
        idle = time.time() - holder["touched"]
        return f"{holder.get('host')}, untouched for {idle:.0f} s" if idle > STALE_S else None

    def acquire(self) -> None:
        self.created = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps(me())
        for _ in range(3):  # a lock that vanishes between the checks (its run ended): try again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                reason = self.why_free(holder)
                if reason is None:
                    raise UserError(f"run {self.name} is already running: process {holder.get('pid')} on "
                                    f"{holder.get('host')} holds {self.path} (since {holder.get('started')})",
                                    "wait for it, or choose another --name")
                if reason != "this process's own":
                    print(f"note: taking over the lock of run {self.name} from {reason}")
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                tmp.write_text(record)
                os.replace(tmp, self.path)
                break
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            break
        else:
            raise UserError(f"cannot take the lock {self.path}", "run again")
        _HELD[self.path] = self
        threading.Thread(target=self.beat, daemon=True).start()

    def beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self.stop.set()
        _HELD.pop(self.path, None)
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        for folder in getattr(self, "created", []):  # the folders it made, where the run wrote nothing else
            try:
                folder.rmdir()
            except OSError:
                break


def hold(folder: Path, name: str) -> RunLock | None:
    """Take run `name`'s lock (rank 0 only; already held by this process: kept); released by `release` or at
    exit."""
    path = Path(folder) / f"{name}.lock"
    if not is_rank_zero():
        return None
    if path in _HELD:
        return _HELD[path]
    lock = RunLock(folder, name)
    lock.acquire()
    return lock


def release(folder: Path, name: str) -> None:
    lock = _HELD.get(Path(folder) / f"{name}.lock")
    if lock is not None:
        lock.release()


@atexit.register
def release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


ON_EXIT.append(release_all)  # a command that ends (an error too) in a process that goes on: the tests, tune.py
