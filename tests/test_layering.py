"""The house's arrows point one way: the library never imports the application nor the `fnnet`
facade, imports sit at the top of modules, and the layers load without optax or fnnet.app."""

import argparse
import ast
import pathlib
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp

import fnnet
from fnnet.app import cli, commands

PACKAGE = pathlib.Path(fnnet.__file__).resolve().parent
APP = PACKAGE / "app"
OPTIONAL = {"tqdm", "matplotlib", "sklearn", "torch", "onnx", "onnxruntime"}
"""Optional dependencies: imported inside the function that needs them, with a one-line reason."""
DEFERRED = {("fnnet/app/cli.py", "_main", "fnnet.app"): "the commands load JAX: `fnnet --help` and a bad flag do not"}
"""The other imports allowed inside a function, each with its reason."""


def _modules(root):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _library_modules():
    return [p for p in _modules(PACKAGE) if APP not in p.parents and p.name != "__main__.py"
            and p != PACKAGE / "__init__.py"]


def _submodules():
    return {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_the_library_never_imports_the_application_or_the_facade():
    problems = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "fnnet" or alias.name.startswith("fnnet.app"):
                        problems.append(f"{where}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("fnnet.app"):
                    problems.append(f"{where}: from {node.module} import ...")
                elif node.module == "fnnet":
                    facade = [a.name for a in node.names if a.name not in _submodules()]
                    if facade:
                        problems.append(f"{where}: from fnnet import {', '.join(facade)} (the facade, not a module)")
    assert not problems, "\n".join(problems)


def test_imports_sit_at_the_top_of_every_module():
    problems = []
    for path in _modules(PACKAGE):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    where = (str(path.relative_to(PACKAGE.parent)), function.name)
                    if not all(name.split(".")[0] in OPTIONAL or where + (name,) in DEFERRED for name in names):
                        problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {names} inside "
                                        f"{function.name}()")
    assert not problems, "\n".join(problems)


def test_importing_the_layers_loads_neither_optax_nor_the_application():
    code = ("import sys, fnnet.layers, fnnet.gradients, fnnet.combinators; "
            "print(sorted(m for m in sys.modules if m == 'optax' or m.startswith('fnnet.app') "
            "or m in ('fnnet.train', 'fnnet.gpt')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_entry_points_run_the_application_cli(repo_root):
    scripts = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"fnnet": "fnnet.app.cli:entry_point"}
    out = subprocess.run([sys.executable, "-m", "fnnet", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "exit status" in out.stdout, out.stderr
    # every public name of the README keeps working through the facade
    assert fnnet.load_run is fnnet.app.runs.load_run and fnnet.recipes is fnnet.app.recipes
    assert fnnet.train.fit and fnnet.gpt.GPT and fnnet.gradcheck.check_layer and fnnet.datasets.mnist


def test_each_layer_runs_in_a_named_scope_that_profiles_and_hlo_show():
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.Relu, fnnet.Flatten, fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (6, 6, 1))
    step = jax.jit(fnnet.value_and_grad(model, fnnet.losses.softmax_cross_entropy))
    text = step.lower(params, jnp.ones((2, 6, 6, 1)), jnp.array([0, 1])).as_text(debug_info=True)
    for scope in ("Conv(4, 3x3)/forward", "Conv(4, 3x3)/backward", "Dense(2)/backward", "serial/backward"):
        assert scope in text, scope


def test_help_and_a_bad_flag_answer_without_loading_jax():
    code = ("import sys\nfrom fnnet.app import cli\n"
            "for argv in (['--help'], ['train', 'mnist', '--epochs', 'zero']):\n"
            "    try:\n        code = cli.main(argv)\n    except SystemExit as stop:\n        code = stop.code\n"
            "    print(code, file=sys.stderr)\n"
            "print(sorted(m for m in ('jax', 'numpy', 'optax', 'fnnet.layers', 'fnnet.app.commands') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("[]"), out.stdout[-500:] + out.stderr
    assert "0\n" in out.stderr and "invalid int value: 'zero'\n2" in out.stderr, out.stderr


def test_the_facades_table_its_all_and_its_stub_name_the_same_things():
    """fnnet/__init__.py's one table (``_LAZY_MODULES``, ``_FROM``) is ``__all__``, and the stub
    declares exactly those names, each from the same module."""
    table = dict(fnnet._LAZY_MODULES)
    table.update({name: f"{module}.{attribute}" for name, (module, attribute) in fnnet._LAZY_NAMES.items()})
    assert len(fnnet._LAZY_NAMES) == sum(map(len, fnnet._FROM.values())), "a name is taken from two modules"
    assert not set(fnnet._LAZY_MODULES) & set(fnnet._LAZY_NAMES)
    assert sorted(fnnet.__all__) == sorted(table) and len(set(fnnet.__all__)) == len(fnnet.__all__)
    stub = ast.parse((PACKAGE / "__init__.pyi").read_text())
    declared = [(alias.asname or alias.name, f"{node.module}.{alias.name}") for node in stub.body
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fnnet") for alias in node.names]
    assert sorted(declared) == sorted(table.items())
    for name in fnnet.__all__:  # each reachable, the summary function included (no module of that name)
        assert getattr(fnnet, name) is not None, name
    assert callable(fnnet.summary) and fnnet.Summary.__module__ == "fnnet.summaries"



def test_every_command_of_the_parser_has_a_handler():
    """``fnnet NAME`` is parsed in cli.py (without JAX) and run in commands.py: the two agree."""
    parser = cli.build_parser()
    subcommands = next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert list(subcommands) == list(commands.COMMANDS)


MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_one_idea_per_file_and_short_functions():
    """No file in fnnet/ over ~450 lines; no function over ~80 lines (docstring included) unless its
    docstring says why it is long (a line starting "Long")."""
    problems = []
    for path in _modules(PACKAGE):
        text = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if text.count("\n") > MAX_FILE_LINES:
            problems.append(f"{where}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                reason = any(line.strip().startswith("Long") for line in (ast.get_docstring(node) or "").splitlines())
                if length > MAX_FUNCTION_LINES and not reason:
                    problems.append(f"{where}:{node.lineno}: {node.name} is {length} lines, with no reason")
    assert not problems, "\n".join(problems)
