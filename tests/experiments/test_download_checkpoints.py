"""Tests for scripts/download_checkpoints.py against a Zenodo-shaped HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import REPO
from experiments import zenodo
from experiments.download import select
from experiments.zenodo import RecordFile, human_size, parse_record_id
from utils import UserError

SCRIPT = REPO / "scripts" / "download_checkpoints.py"
RECORD = "8048780"
STAGE_DIRS = {
    "simclr": Path("pretrain/simclr/models"),
    "logistic_regression": Path("downstream/logistic_regression/models"),
    "resnet": Path("downstream/resnet/models"),
}

from experiments import download_checkpoints as script  # noqa: E402  (SCRIPT: its entry point)


# --------------------------------------------------------------------- checkpoints
def checkpoint_bytes(state: dict, **extra) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.1}, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": "1.9.0", **extra}, buffer)
    return buffer.getvalue()


def simclr_ckpt(seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return checkpoint_bytes({"convnet.conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
                             "convnet.fc.0.weight": torch.randn(8, 4, generator=g),
                             "convnet.fc.2.weight": torch.randn(4, 8, generator=g)})


def logreg_ckpt() -> bytes:
    return checkpoint_bytes({"model.weight": torch.randn(8, 512), "model.bias": torch.zeros(8)})


def resnet_ckpt() -> bytes:
    return checkpoint_bytes({"backbone.conv1.weight": torch.randn(4, 3, 3, 3), "backbone.fc.weight": torch.randn(8, 4)})


class Evil:
    """Unpickling this (weights_only=False) would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------- the server
class Zenodo(ThreadingHTTPServer):
    """Serves /api/records/<RECORD> and its files; `behaviour[name]` is a queue of one-shot misbehaviours."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.checksums: dict[str, str] = {}  # wrong checksums to announce
        self.behaviour: dict[str, list[str]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []

    def handle_error(self, request, client_address):
        pass  # a client that timed out and left: not the test's business

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"

    def content_requests(self, name: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.requests if path == f"/api/records/{RECORD}/files/{name}/content"]

    def record(self) -> dict:
        return {"id": int(RECORD), "metadata": {"title": "Evaluating SimCLR for Medical Image Classification"},
                "files": [{"key": name, "size": len(data),
                           "checksum": self.checksums.get(name, "md5:" + hashlib.md5(data).hexdigest()),
                           "links": {"self": f"{self.api}/records/{RECORD}/files/{name}/content"}}
                          for name, data in self.files.items()]}


class Handler(BaseHTTPRequestHandler):
    server: Zenodo

    def log_message(self, *args):
        pass

    def send_body(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.requests.append((self.path, dict(self.headers)))
        prefix = f"/api/records/{RECORD}"
        if self.path == prefix:
            return self.send_body(200, json.dumps(self.server.record()).encode(), {"Content-Type": "application/json"})
        name = self.path[len(prefix + "/files/"):-len("/content")] if self.path.startswith(prefix + "/files/") else ""
        if name not in self.server.files:
            return self.send_body(404, b'{"status": 404, "message": "not found"}')
        data = self.server.files[name]
        queue = self.server.behaviour.get(name, [])
        action = queue.pop(0) if queue else "serve"
        if action.isdigit():  # an HTTP error status
            return self.send_body(int(action), b'{"status": %s}' % action.encode())
        if action == "stall":  # answer later than the client's timeout
            time.sleep(0.6)
            return self.send_body(200, data)
        if action == "drop":  # a full Content-Length, half the bytes, then the connection closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if start:
            return self.send_body(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        return self.send_body(200, data)


@pytest.fixture
def server():
    httpd = Zenodo()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(zenodo, "BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(zenodo, "TIMEOUT_S", 10.0)


@pytest.fixture
def study(server):
    """The record holds one checkpoint of each kind."""
    server.files.update({"pretrain-bloodmnist.ckpt": simclr_ckpt(),
                         "downstream-dermamnist-100-samples.ckpt": logreg_ckpt(),
                         "baseline-pathmnist-1-spc.ckpt": resnet_ckpt()})
    return server


def run(server, *args, root=None):
    argv = ["--api-url", server.api, *map(str, args)]
    return script.main(argv + (["--dest-root", str(root)] if root else []))


def placed(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------- tests
def test_list_prints_files_sizes_and_total_and_downloads_nothing(study, tmp_path, capsys):
    run(study, "--list", root=tmp_path)
    out = capsys.readouterr().out
    assert "Evaluating SimCLR" in out
    for name, data in study.files.items():
        assert any(name in line and human_size(len(data)) in line for line in out.splitlines())
    assert f"3 file(s), {human_size(sum(map(len, study.files.values())))} in total" in out
    assert not any("/files/" in path for path, _ in study.requests)
    assert not list(tmp_path.iterdir())


def test_downloads_each_kind_into_its_stage_folder(study, output_root, capsys):
    run(study)  # no --dest-root: $MEDSIMCLR_OUTPUT_ROOT (output_root) is where models_dir points
    assert placed(output_root) == {
        str(STAGE_DIRS["simclr"] / "pretrain-bloodmnist.ckpt"): study.files["pretrain-bloodmnist.ckpt"],
        str(STAGE_DIRS["logistic_regression"] / "downstream-dermamnist-100-samples.ckpt"):
            study.files["downstream-dermamnist-100-samples.ckpt"],
        str(STAGE_DIRS["resnet"] / "baseline-pathmnist-1-spc.ckpt"): study.files["baseline-pathmnist-1-spc.ckpt"],
    }
    out = capsys.readouterr().out
    assert "3 downloaded, 0 skipped (identical), 0 kept (different, use --force)" in out
    assert str(output_root / STAGE_DIRS["resnet"]) in out.splitlines()[-1]


def test_include_filters_by_glob(study, tmp_path):
    run(study, "--include", "pretrain-*", "baseline-*", root=tmp_path)
    assert sorted(placed(tmp_path)) == [str(STAGE_DIRS["resnet"] / "baseline-pathmnist-1-spc.ckpt"),
                                        str(STAGE_DIRS["simclr"] / "pretrain-bloodmnist.ckpt")]
    assert not study.content_requests("downstream-dermamnist-100-samples.ckpt")


def test_include_matching_nothing_is_an_error(study, tmp_path):
    with pytest.raises(UserError, match="--include nosuch-\\* matches no file"):
        run(study, "--include", "pretrain-*", "nosuch-*", root=tmp_path)


def test_checksum_mismatch_places_nothing_and_leaves_no_part(study, tmp_path, capsys):
    study.files = {"pretrain-bloodmnist.ckpt": simclr_ckpt()}
    study.checksums["pretrain-bloodmnist.ckpt"] = "md5:" + "0" * 32
    with pytest.raises(SystemExit) as exit_info:
        run(study, root=tmp_path)
    assert exit_info.value.code == 2
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and "checksum mismatch" in lines[0] and "nothing placed" in lines[0]
    assert placed(tmp_path) == {}


def test_dropped_connection_resumes_with_range(study, tmp_path, capsys):
    name = "pretrain-bloodmnist.ckpt"
    study.files = {name: simclr_ckpt()}
    study.behaviour[name] = ["drop"]
    run(study, root=tmp_path)
    requests = study.content_requests(name)
    assert len(requests) == 2 and "Range" not in requests[0]
    assert requests[1]["Range"] == f"bytes={len(study.files[name]) // 2}-"
    assert (tmp_path / STAGE_DIRS["simclr"] / name).read_bytes() == study.files[name]
    assert "connection dropped" in capsys.readouterr().err
    assert not (tmp_path / ".downloads").exists()


def test_partial_file_from_an_earlier_run_is_resumed(study, tmp_path):
    name = "pretrain-bloodmnist.ckpt"
    study.files = {name: simclr_ckpt()}
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / f"{name}.part").write_bytes(study.files[name][:100])
    run(study, root=tmp_path)
    assert [r.get("Range") for r in study.content_requests(name)] == ["bytes=100-"]
    assert (tmp_path / STAGE_DIRS["simclr"] / name).read_bytes() == study.files[name]


@pytest.mark.parametrize("failures, message", [(["500", "503"], "HTTP 503"), (["429"], "HTTP 429"),
                                               (["stall"], "timed out")])
def test_transient_failures_are_retried(study, tmp_path, capsys, monkeypatch, failures, message):
    monkeypatch.setattr(zenodo, "TIMEOUT_S", 0.3)
    name = "baseline-pathmnist-1-spc.ckpt"
    study.files = {name: resnet_ckpt()}
    study.behaviour[name] = list(failures)
    run(study, root=tmp_path)
    assert len(study.content_requests(name)) == len(failures) + 1
    assert message in capsys.readouterr().err
    assert (tmp_path / STAGE_DIRS["resnet"] / name).read_bytes() == study.files[name]


def test_server_error_gives_up_after_retries(study, tmp_path, capsys):
    name = "baseline-pathmnist-1-spc.ckpt"
    study.files = {name: resnet_ckpt()}
    study.behaviour[name] = ["500"] * 5
    with pytest.raises(SystemExit):
        run(study, "--retries", "2", root=tmp_path)
    assert len(study.content_requests(name)) == 3
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and "gave up after 3" in lines[0] and "--api-url" in lines[0]


def test_missing_file_is_a_one_line_error(study, tmp_path, capsys):
    study.files = {"pretrain-bloodmnist.ckpt": simclr_ckpt()}
    study.behaviour["pretrain-bloodmnist.ckpt"] = ["404"]
    with pytest.raises(SystemExit) as exit_info:
        run(study, root=tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and errors(err) and "HTTP 404" in err
    assert len(study.content_requests("pretrain-bloodmnist.ckpt")) == 1  # a 404 is not retried
    assert placed(tmp_path) == {}


def test_missing_record_and_unreachable_server_are_one_line_errors(server, tmp_path):
    with pytest.raises(UserError, match="Zenodo record 1: HTTP 404"):
        run(server, "--record", "1", "--list")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(UserError, match=r"record 8048780 could not be reached.*--api-url"):
        script.main(["--api-url", f"http://127.0.0.1:{port}/api", "--list"])


@pytest.mark.parametrize("entry", ["../escaped.ckpt", "/tmp/medsimclr-absolute-escape.ckpt", "a/../../escaped.ckpt"])
def test_zip_with_escaping_entry_is_refused(server, tmp_path, capsys, entry):
    root = tmp_path / "root"
    server.files = {"checkpoints.zip": zip_bytes({"pretrain-bloodmnist.ckpt": simclr_ckpt(), entry: simclr_ckpt(1)})}
    with pytest.raises(SystemExit):
        run(server, root=root)
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and "refusing the whole archive" in lines[0] and entry in lines[0]
    assert not list(tmp_path.rglob("escaped.ckpt")) and not Path("/tmp/medsimclr-absolute-escape.ckpt").exists()
    assert placed(tmp_path) == {}


def test_zip_of_checkpoints_is_unpacked_and_filed(server, tmp_path, capsys):
    members = {"ckpts/pretrain-bloodmnist.ckpt": simclr_ckpt(), "downstream-bloodmnist-1-spc.ckpt": logreg_ckpt(),
               "ckpts/finetune-bloodmnist.ckpt": resnet_ckpt(), "README.txt": b"hello"}
    server.files = {"checkpoints.zip": zip_bytes(members)}
    run(server, root=tmp_path)
    assert placed(tmp_path) == {
        str(STAGE_DIRS["simclr"] / "pretrain-bloodmnist.ckpt"): members["ckpts/pretrain-bloodmnist.ckpt"],
        str(STAGE_DIRS["logistic_regression"] / "downstream-bloodmnist-1-spc.ckpt"):
            members["downstream-bloodmnist-1-spc.ckpt"],
        str(STAGE_DIRS["resnet"] / "finetune-bloodmnist.ckpt"): members["ckpts/finetune-bloodmnist.ckpt"],
    }
    assert "3 downloaded" in capsys.readouterr().out


def test_different_file_is_kept_unless_force(study, tmp_path, capsys):
    target = tmp_path / STAGE_DIRS["simclr"] / "pretrain-bloodmnist.ckpt"
    target.parent.mkdir(parents=True)
    target.write_bytes(simclr_ckpt(seed=7))
    with pytest.raises(SystemExit) as exit_info:
        run(study, root=tmp_path)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert f"{target} differs" in captured.err and "--force replaces it" in captured.err
    assert "2 downloaded, 0 skipped (identical), 1 kept (different, use --force)" in captured.out
    assert target.read_bytes() == simclr_ckpt(seed=7)  # the other two were still placed
    assert len(placed(tmp_path)) == 3 and not (tmp_path / ".downloads").exists()
    run(study, "--force", root=tmp_path)
    assert target.read_bytes() == study.files["pretrain-bloodmnist.ckpt"]
    assert "1 downloaded, 2 skipped (identical), 0 kept" in capsys.readouterr().out


def test_identical_file_is_skipped_without_downloading(study, tmp_path, capsys):
    run(study, root=tmp_path)
    before = placed(tmp_path)
    study.requests.clear()
    run(study, root=tmp_path)
    out = capsys.readouterr().out
    assert "skipped, identical to" in out and "0 downloaded, 3 skipped (identical)" in out
    assert not any("/files/" in path for path, _ in study.requests)
    assert placed(tmp_path) == before


def test_malicious_pickle_is_refused_and_never_runs(server, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = checkpoint_bytes({"convnet.conv1.weight": torch.zeros(1)}, callbacks=Evil(marker))
    server.files = {"pretrain-evil.ckpt": evil, "pretrain-bloodmnist.ckpt": simclr_ckpt()}
    with pytest.raises(SystemExit) as exit_info:
        run(server, root=tmp_path / "root")
    assert exit_info.value.code == 2
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and "pretrain-evil.ckpt not placed" in lines[0] and "refusing" in lines[0]
    assert not marker.exists()
    assert sorted(placed(tmp_path / "root")) == [str(STAGE_DIRS["simclr"] / "pretrain-bloodmnist.ckpt")]


def test_unknown_checkpoint_is_not_placed(server, tmp_path, capsys):
    server.files = {"other.ckpt": checkpoint_bytes({"layer.weight": torch.zeros(2)})}
    with pytest.raises(SystemExit):
        run(server, root=tmp_path)
    assert "other.ckpt not placed: its weights match no stage" in capsys.readouterr().err
    assert placed(tmp_path) == {}


def test_record_file_names_must_be_plain(server, tmp_path, capsys):
    server.files = {"escape.ckpt": simclr_ckpt()}
    original = server.record
    server.record = lambda: {**original(), "files": [{**original()["files"][0], "key": "../escape.ckpt"}]}
    with pytest.raises(SystemExit):
        run(server, root=tmp_path / "root")
    assert "not a plain file name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escape.ckpt"))


def test_helpers():
    assert parse_record_id("8048780") == parse_record_id("10.5281/zenodo.8048780") == "8048780"
    assert parse_record_id("https://zenodo.org/records/8048780") == "8048780"
    assert [human_size(n) for n in (512, 2048, 45 * 2**20)] == ["512 B", "2.0 KiB", "45.0 MiB"]
    files = [RecordFile(n, 1, "md5:x", "u") for n in ("pretrain-a.ckpt", "baseline-b.ckpt")]
    assert [f.name for f in select(files, ["pre*"])] == ["pretrain-a.ckpt"]


def test_command_line_lists_from_another_folder(study, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEDSIMCLR_OUTPUT_ROOT"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--api-url", study.api, "--list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pretrain-bloodmnist.ckpt" in done.stdout and "in total" in done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--retries", "-1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: argument --retries")


def test_an_encoder_of_any_method_is_filed_into_its_method_folder(server, tmp_path, capsys):
    moco = checkpoint_bytes({"encoder.conv1.weight": torch.randn(4, 1, 3, 3), "queue.keys": torch.randn(8, 4)},
                            hyper_parameters={"method": "moco", "backbone": "resnet18"})
    escaping = checkpoint_bytes({"encoder.conv1.weight": torch.randn(4, 1, 3, 3)},
                                hyper_parameters={"method": "../../escaped"})
    server.files = {"moco-bloodmnist.ckpt": moco, "odd.ckpt": escaping}
    with pytest.raises(SystemExit):
        run(server, root=tmp_path)
    assert placed(tmp_path) == {"pretrain/moco/models/moco-bloodmnist.ckpt": moco}  # an odd method name is no folder
    assert "a moco encoder (pretrain/moco)" in capsys.readouterr().out
