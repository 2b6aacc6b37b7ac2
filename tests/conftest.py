import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.fakedata import SPLIT_SIZES, write_npz  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One folder with a tiny npz for every flag in SPLIT_SIZES (28 px)."""
    folder = tmp_path_factory.mktemp("medmnist")
    for flag in SPLIT_SIZES:
        write_npz(folder, flag)
    return folder


@pytest.fixture
def output_root(tmp_path, monkeypatch) -> Path:
    """Checkpoints and logs of this test go to a temporary folder, never the repository."""
    root = tmp_path / "out"
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(root))
    return root
