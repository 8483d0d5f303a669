"""The checkout's top-level folders re-export the library; the library never imports them."""

import ast
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT

TOP_LEVEL_ONLY = {"export", "experiments", "bench", "examples", "tests", "run"}


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_library_imports_no_top_level_checkout_package():
    offenders = []
    for path in sorted((REPO_ROOT / "daso_tf").rglob("*.py")):
        for module in _imported_modules(path):
            if module.split(".")[0] in TOP_LEVEL_ONLY:
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {module}")
    assert not offenders, offenders


def test_checkout_packages_are_the_library_objects():
    import daso_tf.experiments
    import daso_tf.serving
    import experiments
    import export

    assert experiments.get_experiment is daso_tf.experiments.get_experiment
    assert export.export_saved_model is daso_tf.serving.export_saved_model
    assert experiments.list_experiments() == daso_tf.experiments.list_experiments()


def test_checkout_client_module_runs():
    done = subprocess.run([sys.executable, "-m", "export.client", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--images" in done.stdout


def test_sources_point_readers_inside_the_repository():
    """Comments and docstrings cite docs/ (in the repository), never spec files outside it."""
    pattern = re.compile(r"spec/[A-Z_]+\.md|\.\./shared/spec|shared/golden/READM[E]|TF_NOTE[S]|(DASO|LEARNERS|RESULTS|ARCHITECTURE)\.m[d]")
    offenders = []
    for folder in ("daso_tf", "experiments", "export", "bench", "tests", "docs"):
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md") and "studies" not in path.parts:
                offenders += [f"{path.relative_to(REPO_ROOT)}:{number}"
                              for number, line in enumerate(path.read_text().splitlines(), 1)
                              if pattern.search(line)]
    assert offenders == []
