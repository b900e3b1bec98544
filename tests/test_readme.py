"""README.md and docs/*.md cannot rot: their Python snippets run as written, and the commands
they name exist.

* Every ```python block runs on its own, in a fresh process (a reader may copy any one block
  alone): a child forked from a process that has only imported the libraries
  (tests/scripts/block_runner.py), inside a temporary working directory, with ``FNNET_DATA``
  set as the ``shared_data`` fixture finds it and downloads off. Tracebacks point at the
  page's own line numbers.
* Every ``make TARGET`` is a rule in the Makefile, and every ``fnnet ...`` command line
  parses with :func:`fnnet.app.cli.build_parser` (parsed only, nothing runs), in the ```bash
  blocks, their comments, and the prose's inline code.
"""

import argparse
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from fnnet.app import cli

FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
ELIDED = re.compile(r"\(\s*\.\.\.\s*[,)]")
"""A call whose arguments are elided, ``fit(..., mesh=mesh)``: the block is a fragment to read,
not a program; it is the one kind of block that is not run."""


def readme(repo_root) -> str:
    return (repo_root / "README.md").read_text(encoding="utf-8")


def pages(repo_root) -> list:
    """README.md and every page of docs/, as ``(path, text)``."""
    return [(path, path.read_text(encoding="utf-8"))
            for path in [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]]


def fenced(text: str, language: str):
    """``(line, code)`` for each ```language block of ``text``; ``line`` is the README line
    number of the block's first line of code."""
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            yield text.count("\n", 0, match.start(2)) + 1, match.group(2)


def command_mentions(text: str):
    """``(where, argv)`` for each command in the bash blocks and in the prose's inline code, and
    ``(where, [program, word])`` for a command named in a bash comment (``# ... fnnet gradcheck mnist``)."""
    for line, code in fenced(text, "bash"):
        for offset, source in enumerate(code.splitlines()):
            where = f"README.md:{line + offset}"
            argv = shlex.split(source, comments=True)
            if argv:
                yield where, argv
            for program, word in re.findall(r"\b(make|fnnet) +([\w-]+)", source.partition("#")[2]):
                yield where + " (comment)", [program, word]
    prose = FENCE.sub("", text)
    for span in re.findall(r"`((?:make|fnnet|python -m fnnet) [^`\n]+)`", prose):
        argv = shlex.split(span.removeprefix("python -m "))
        yield f"README.md inline `{span}`", argv


def make_targets(makefile: str) -> set[str]:
    """The explicit rule targets of a Makefile (``demo: $(STAMP)`` -> ``demo``)."""
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_][^:=\s]*(?:[ \t]+[^:=\s]+)*)[ \t]*:(?!=)", makefile, re.MULTILINE):
        targets.update(match.group(1).split())
    return targets


def _python_blocks():
    root = pathlib.Path(__file__).resolve().parents[1]
    return [(path, line, code) for path, text in pages(root) for line, code in fenced(text, "python")
            if not ELIDED.search(code)]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory, request):
    """A working folder for the README's blocks: ``runs/mnist`` in it as ``fnnet train mnist`` makes it
    (when MNIST is at hand), for the "Loading a trained run" block."""
    folder = tmp_path_factory.mktemp("readme")
    env = {"FNNET_OFFLINE": "1"}
    try:
        env["FNNET_DATA"] = str(request.getfixturevalue("shared_data"))
    except pytest.skip.Exception:
        return folder, env, False  # a snippet that needs MNIST is skipped rather than downloading
    result = subprocess.run([sys.executable, "-m", "fnnet", "train", "mnist", "--limit", "2000", "--epochs", "1",
                             "--out", "runs/mnist", "--quiet"], cwd=folder, env=dict(os.environ, **env),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder, env, True


@pytest.fixture(scope="module")
def block_runner():
    """A process that runs each block alone in a fresh child forked from it (tests/scripts/block_runner.py:
    the libraries imported once, no JAX backend started before the fork); ``None`` where there is no fork."""
    if not hasattr(os, "fork"):
        yield None
        return
    runner = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).parent / "scripts" / "block_runner.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    yield runner
    runner.stdin.close()
    runner.wait(timeout=60)


def _run_alone(runner, code: str, filename: str, cwd, env: dict):
    """``(returncode, stderr)`` of ``code`` run as ``__main__`` in a process of its own."""
    if runner is None:
        script = f"exec(compile({code!r}, {filename!r}, 'exec'))"
        result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=dict(os.environ, **env),
                                capture_output=True, text=True, timeout=600)
        return result.returncode, result.stderr
    runner.stdin.write(json.dumps({"code": code, "filename": filename, "cwd": str(cwd), "env": env}) + "\n")
    runner.stdin.flush()
    reply = json.loads(runner.stdout.readline())
    return reply["returncode"], reply["stderr"]


@pytest.mark.parametrize("path,line,code", _python_blocks(),
                         ids=[f"{path.name}:{line}" for path, line, _ in _python_blocks()])
def test_python_block_runs_alone_in_a_fresh_interpreter(readme_dir, block_runner, path, line, code):
    folder, env, have_mnist = readme_dir
    if "runs/mnist" in code and not have_mnist:
        pytest.skip("MNIST not found")
    # padded with blank lines so that a traceback names the page's own line numbers
    returncode, stderr = _run_alone(block_runner, "\n" * (line - 1) + code, str(path), folder, env)
    assert returncode == 0, f"{path.name}:{line}: the block fails on its own:\n{stderr[-3000:]}"


def test_every_python_block_is_run(repo_root):
    """Only a fragment with elided arguments (``fit(..., mesh=mesh)``) may be skipped."""
    blocks = [block for _, text in pages(repo_root) for block in fenced(text, "python")]
    assert len(_python_blocks()) >= len(blocks) - 1 and len(blocks) >= 8


def test_readme_is_short_and_links_every_docs_page(repo_root):
    text = readme(repo_root)
    assert text.count("\n") <= 250
    for page in sorted((repo_root / "docs").glob("*.md")):
        if page.name not in ("index.md", "api.md", "data.md", "cli.md"):
            assert f"docs/{page.name}" in text, page.name
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (repo_root / target).is_file(), target


def test_named_make_targets_and_fnnet_commands_exist(repo_root):
    targets = make_targets((repo_root / "Makefile").read_text(encoding="utf-8"))
    parser = cli.build_parser()
    subcommands = next(action.choices for action in parser._actions
                       if isinstance(action, argparse._SubParsersAction))
    checked, problems = 0, []
    mentions = [(f"{path.name}{where.removeprefix('README.md')}", argv) for path, text in pages(repo_root)
                for where, argv in command_mentions(text)]
    for where, argv in mentions:
        if argv[0] == "make":
            missing = [t for t in argv[1:] if not t.startswith("-") and "=" not in t and t not in targets]
            problems += [f"{where}: make target {t!r} is not in the Makefile" for t in missing]
        elif argv[0] == "fnnet" and where.endswith("(comment)"):
            if argv[1] not in subcommands:
                problems.append(f"{where}: {argv[1]!r} is not an fnnet subcommand")
        elif argv[0] == "fnnet":
            try:
                parser.parse_args(argv[1:])     # parse only: nothing is trained or loaded
            except (cli.UsageError, SystemExit) as error:
                problems.append(f"{where}: {shlex.join(argv)}: {error}")
        else:
            continue
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 8  # make demo/test/..., fnnet train/eval/gradcheck/summary
