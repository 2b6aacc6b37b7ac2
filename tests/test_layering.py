"""Dependencies point one way: utils <- models <- common <- stages (pretrain/, downstream/) <- experiments/ <-
scripts/ (entry points). No layer imports one above it, no module takes part in an import cycle, no stage imports
another stage's internals, nothing downstream names a method, and no library function takes the command line's
argparse Namespace (typed options instead: common.cli.options)."""
import ast
import re

import pytest

import pretrain
from conftest import REPO

LAYERS = [["utils.py"], ["models"], ["common"], ["pretrain", "downstream"], ["experiments"], ["scripts"]]
SHARED = ["common", "models", "utils.py"]
STAGE_PACKAGES = ("pretrain", "downstream", "scripts", "experiments")
# entry points that keep a stage folder's command line (python pretrain/feature_analysis.py): main from experiments/
ENTRY_POINTS = {"pretrain/feature_analysis.py"}
# the command line itself, where a Namespace is parsed and checked before it becomes typed options; elsewhere only
# a command's own main, parse_args and build_parser see it
COMMAND_LINE = {"common/cli/parsers.py", "common/cli/options.py", "pretrain/cli.py", "pretrain/recipes.py"}
COMMAND_FUNCTIONS = {"main", "parse_args", "build_parser"}


def python_files(*places: str):
    for place in places:
        path = REPO / place
        yield from ([path] if path.suffix == ".py" else sorted(path.rglob("*.py")))


def module_name(path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    top = name.split(".")[0]
    for index, places in enumerate(LAYERS):
        if any(top == place.removesuffix(".py") for place in places):
            return index
    return None


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
    for path in python_files("common", "pretrain", "downstream", "experiments", "scripts", "utils.py"):
        assert not classes.search(path.read_text()), path.relative_to(REPO)


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=lambda i: "+".join(LAYERS[i]))
def test_no_layer_imports_one_above_it(layer):
    for path in python_files(*LAYERS[layer]):
        if str(path.relative_to(REPO)) in ENTRY_POINTS:
            continue
        above = {m for m in imported_modules(path) if (layer_of(m) or 0) > layer}
        assert not above, f"{path.relative_to(REPO)} (layer {'+'.join(LAYERS[layer])}) imports {sorted(above)}"


def test_entry_points_are_short_and_hold_no_library():
    for path in [*python_files("scripts"), *(REPO / p for p in ENTRY_POINTS)]:
        tree = ast.parse(path.read_text())
        definitions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not definitions and len(path.read_text().splitlines()) <= 15, path.relative_to(REPO)
    assert not (REPO / "scripts" / "__init__.py").exists()  # entry points, not a package


def test_no_import_cycles():
    """Module-level and function-level imports alike: a cycle through a lazy import is still a cycle."""
    modules = {module_name(p): p for p in python_files("utils.py", "models", "common", "pretrain", "downstream",
                                                          "experiments")}
    graph = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycle = stack[stack.index(other):] + [other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def namespace_parameters(path) -> list[str]:
    """function(parameter) of every function of `path` that takes an argparse Namespace: a parameter annotated
    argparse.Namespace, or an unannotated one named args (a command's Namespace by habit)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name in COMMAND_FUNCTIONS:
            continue
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if "Namespace" in annotation or (arg.arg == "args" and not annotation):
                found.append(f"{node.name}({arg.arg})")
    return found


def test_no_library_function_takes_a_namespace():
    for path in python_files("utils.py", "models", "common", "pretrain", "downstream", "experiments"):
        if str(path.relative_to(REPO)) in COMMAND_LINE:
            continue
        assert not namespace_parameters(path), f"{path.relative_to(REPO)}: {namespace_parameters(path)}"


def test_the_namespace_check_finds_one(tmp_path):
    """The check above can fail: a function taking `args`, or a parameter annotated Namespace, is found."""
    module = tmp_path / "module.py"
    module.write_text("import argparse\n\ndef run(args):\n    pass\n\n"
                      "def other(options: argparse.Namespace, *args):\n    pass\n\n"
                      "def main(args):\n    pass\n\ndef typed(args: Options):\n    pass\n")
    assert namespace_parameters(module) == ["run(args)", "other(options)"]
