"""Dependencies point one way: stages -> shared library (common/, models/, utils.py). The shared library never
imports a stage, no stage imports another stage's internals, and nothing downstream names a method."""
import ast
import re

import pytest

import pretrain
from conftest import REPO

SHARED = ["common", "models", "utils.py"]
STAGE_PACKAGES = ("pretrain", "downstream", "scripts")


def python_files(*places: str):
    for place in places:
        path = REPO / place
        yield from ([path] if path.suffix == ".py" else sorted(path.rglob("*.py")))


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", list(python_files(*SHARED)), ids=lambda p: str(p.relative_to(REPO)))
def test_the_shared_library_imports_no_stage(path):
    stages = {m for m in imported_modules(path) if m.split(".")[0] in STAGE_PACKAGES}
    assert not stages, f"{path.relative_to(REPO)} imports {sorted(stages)}"


def test_stages_import_no_other_stage_s_internals():
    for stage in ("downstream/logistic_regression", "downstream/resnet"):
        for path in python_files(stage):
            others = {m for m in imported_modules(path) if m.startswith(("pretrain", "downstream"))
                      and not m.startswith(stage.replace("/", "."))}
            assert not others, f"{path.relative_to(REPO)} imports {sorted(others)}"
    for method in pretrain.METHODS:
        for path in python_files(f"pretrain/{method}"):
            others = {m for m in imported_modules(path) if m.startswith(("pretrain.", "downstream"))
                      and m.split(".")[1] in set(pretrain.METHODS) - {method}}
            assert not others, f"{path.relative_to(REPO)} imports {sorted(others)}"


def test_nothing_downstream_names_a_method():
    pattern = re.compile("|".join(pretrain.METHODS), re.IGNORECASE)
    for path in python_files("downstream"):
        found = sorted(set(pattern.findall(path.read_text())))
        assert not found, f"{path.relative_to(REPO)} names {found}"


def test_only_models_builds_networks():
    """A backbone is one registry entry: nothing outside models/ constructs an encoder class directly."""
    classes = re.compile(r"\b(ResNetEncoder|SmallCNN|ConvStemViT|VisionTransformer|torchvision\.models\.resnet\w*)\(")
    for path in python_files("common", "pretrain", "downstream", "scripts", "utils.py"):
        assert not classes.search(path.read_text()), path.relative_to(REPO)
