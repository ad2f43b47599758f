"""The house: sweep/'s subpackages and their import order, the sizes that keep modules readable,
the fence around other libraries' private API, and files written before the modules moved
(archives, configs, `_target_` names) that must keep loading and running."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, run_cli
from sweep import _compat, _moved

PACKAGE = REPO / "sweep"
PRE_MOVE = Path(__file__).parent / "data" / "pre_move"  # written by the code before the move
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_PRIVATE_USES = 11


def modules() -> dict[Path, ast.Module]:
    """Every module of the package, parsed."""
    return {p: ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_subpackages_import_downward_only():
    """pyproject.toml's import-linter contract (the layers docs/architecture.md draws): a new
    upward import or cycle fails here, naming the import."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout, proc.stdout


def test_no_module_over_500_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for path, tree in modules().items():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(REPO)} {n}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {n}")
    assert long_modules == [] and long_functions == []


def _own_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Names the package defines itself (its modules, functions, classes, variables, attributes
    set on self, arguments): an `x._name` among them is the package's own, not a library's."""
    own = {p.stem for p in trees}
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                    own.add(n.attr)
            elif isinstance(n, ast.arg):
                own.add(n.arg)
    return own


def _attr_call(n: ast.AST) -> bool:
    """Whether `n` is getattr/setattr/hasattr(obj, name, ...)."""
    return (
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("getattr", "setattr", "hasattr")
        and len(n.args) >= 2
    )


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _uses_in(n: ast.AST, own: set[str]) -> list[str]:
    """The private uses node `n` itself makes (without its children), as 'what' strings."""
    if isinstance(n, ast.ImportFrom) and n.module and not n.module.startswith("sweep"):
        found = [f"from {n.module} import ..."] if any(map(_private, n.module.split("."))) else []
        return found + [a.name for a in n.names if _private(a.name)]
    if isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own:
        mine = isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")
        return [] if mine or n.attr == "_exit" else [n.attr]
    if _attr_call(n):
        s = n.args[1]
        if isinstance(s, ast.Constant) and isinstance(s.value, str):
            if _private(s.value) and s.value not in own:
                return [f"{n.func.id}(..., {s.value!r})"]
    return []


def private_api_uses() -> list[str]:
    """Uses of another library's private API in sweep/, by the rule of the project's counter
    (shared/tools/private_api.py): an import from a module with a private part, an imported
    `_name`, an attribute `x._name` the package does not define (not self/cls, not a dunder,
    not os._exit), getattr/setattr/hasattr with such a name. Each as 'path:line: what'."""
    trees = modules()
    own = _own_names(trees)
    return [
        f"{path.relative_to(REPO)}:{n.lineno}: {what}"
        for path, tree in trees.items()
        for n in ast.walk(tree)
        for what in _uses_in(n, own)
    ]


def test_private_api_is_used_in_compat_only_and_at_most_eleven_times():
    uses = private_api_uses()
    assert all(u.startswith("sweep/_compat/") for u in uses), uses
    assert 0 < len(uses) <= MAX_PRIVATE_USES, uses


def test_the_counter_counts_what_it_says(tmp_path, monkeypatch):
    """The rule above finds a private use it is shown, and leaves the package's own alone."""
    pkg = tmp_path / "sweep"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "import torch\nfrom hydra._internal import utils\nx = torch._C\n"
        "class A:\n    def __init__(self):\n        self._mine = 1\n    def f(self, o):\n"
        "        return o._mine, getattr(o, '_other')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert private_api_uses() == [
        "sweep/a.py:2: from hydra._internal import ...",
        "sweep/a.py:3: _C",
        "sweep/a.py:8: getattr(..., '_other')",
    ]


def test_the_allow_list_keyword_is_spelled_in_compat_only():
    spelled = [
        str(p.relative_to(REPO))
        for p in PACKAGE.rglob("*.py")
        if any(k in p.read_text() for k in _compat.ALLOW_LIST_KEYWORDS)
    ]
    assert spelled == ["sweep/_compat/__init__.py"]


def test_instantiate_passes_the_allow_list_under_either_spelling(monkeypatch):
    """Hydra 1.4.0rc3 spells it `_execution_whitelist_`; Hydra's main branch
    `_target_whitelist_`. The installed Hydra decides, read from its signature; under the other
    spelling (a Hydra that renamed it, here the installed one behind a renaming wrapper) the same
    call allows and refuses the same targets."""
    installed = _compat.allow_list_keyword()
    assert installed in _compat.ALLOW_LIST_KEYWORDS
    assert installed in inspect.signature(hydra.utils.instantiate).parameters
    real = hydra.utils.instantiate
    other = next(k for k in _compat.ALLOW_LIST_KEYWORDS if k != installed)
    namespace: dict = {"real": real, "installed": installed}
    exec(  # a function whose signature names the other spelling, as a renamed Hydra's would
        f"def renamed(config, *args, {other}=None, **kwargs):\n"
        f"    return real(config, *args, **{{installed: {other}}}, **kwargs)\n",
        namespace,
    )
    for instantiate in (real, namespace["renamed"]):
        monkeypatch.setattr(hydra.utils, "instantiate", instantiate)
        _compat.allow_list_keyword.cache_clear()
        node = OmegaConf.create({"_target_": "collections.OrderedDict", "a": 1})
        assert _compat.instantiate(node, ("collections.*",)) == {"a": 1}
        with pytest.raises(Exception, match=_compat.REFUSED_TARGET):
            _compat.instantiate(node, ("optuna.*",))
    _compat.allow_list_keyword.cache_clear()


def test_old_module_names_are_the_moved_modules():
    """`sweep.train`, `sweep.callbacks`, ... (the paths before the subpackages) import as the
    very module that moved, so isinstance checks and module state agree under both names."""
    for old, new in _moved.MOVED.items():
        moved = importlib.import_module(old)
        assert moved is importlib.import_module(new), old
        assert moved.__name__ == new and moved.__spec__.name == new, old
    import sweep.regularizers
    from sweep.sparsity import regularizers

    assert sweep.regularizers.Regularizer is regularizers.Regularizer


def test_every_target_a_pre_move_run_wrote_still_resolves():
    """The config.yaml a run wrote before the move names `sweep.regularizers.Regularizer`,
    `sweep.callbacks.Archive`, ...; its hydra.yaml `sweep.sweeper.L1Sweeper` and
    `sweep.launcher.ForkLauncher`."""
    text = (PRE_MOVE / "run_config.yaml").read_text()
    targets = re.findall(r"_target_: (sweep\.\S+)", text)
    targets += ["sweep.sweeper.L1Sweeper", "sweep.launcher.ForkLauncher"]
    assert len(targets) == 13
    for name in targets:
        obj = hydra.utils.get_object(name)
        assert callable(obj), name


def test_archives_written_before_the_move_load_and_predict_the_same():
    """model.l1z and model.compact.l1z from the code before the move (their `_target_`s:
    sweep.models.mlp, sweep.models.compact_net) give the logits that code gave."""
    from sklearn.datasets import load_digits

    from sweep.export import load

    expected = json.loads((PRE_MOVE / "logits.json").read_text())["logits"]
    x = torch.tensor(load_digits().data[:16] / 16, dtype=torch.float32)
    for name in ("model.l1z", "model.compact.l1z"):
        with torch.no_grad():
            logits = load(PRE_MOVE / name)(x)
        assert torch.allclose(logits, torch.tensor(expected[name]), atol=1e-6), name


def test_a_config_written_before_the_move_still_runs(tmp_path):
    """The pre-move run's own config.yaml, given as a config of one's own, trains and prunes."""
    shutil.copy(PRE_MOVE / "run_config.yaml", tmp_path / "old.yaml")
    run_cli(tmp_path, "--config-dir", ".", "--config-name", "old", "train.epochs=1",
            "prune.epochs=1", "hydra.run.dir=out")  # fmt: skip
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["prune_sparsity"] == 0.5 and 0.45 < metrics["sparsity"] < 0.55


def test_python_m_an_old_module_name_runs_the_moved_module(tmp_path):
    """`python -m sweep.row` (the docs' command before the move) prints the same table as
    `python -m sweep.results.row`."""
    from conftest import run_module

    old, new = run_module("sweep.row", tmp_path), run_module("sweep.results.row", tmp_path)
    assert old.returncode == new.returncode == 0, old.stderr
    assert old.stdout == new.stdout and "| `trial` | int64 |" in new.stdout


def test_a_study_started_before_the_move_resumes(tmp_path):
    """A study records its configuration's `_target_`s; one started before the move recorded
    the old paths (sweep.regularizers.Regularizer, sweep.callbacks.Archive, ...). Resumed with
    the same command, it runs on: the old paths are the same code."""
    import optuna

    from sweep import _moved
    from sweep.search.study import CONFIG_ATTR

    args = ["-m", "hydra.sweeper.study_name=old", "train.epochs=1"]
    run_cli(tmp_path, *args, "hydra.sweeper.n_trials=1")
    storage = f"sqlite:///{tmp_path}/outputs/optuna.db"
    study = optuna.load_study(study_name="old", storage=storage)
    recorded = study.user_attrs[CONFIG_ATTR]
    back = {new: old for old, new in _moved.MOVED.items()}
    before_move = {
        k: next((v.replace(n, o, 1) for n, o in back.items() if v.startswith(n + ".")), v)
        if k.endswith("_target_") and isinstance(v, str) else v
        for k, v in recorded.items()
    }  # fmt: skip
    assert before_move["regularizer._target_"] == "sweep.regularizers.Regularizer"
    assert before_move["callbacks.archive._target_"] == "sweep.callbacks.Archive"
    study.set_user_attr(CONFIG_ATTR, before_move)
    run_cli(tmp_path, *args, "hydra.sweeper.n_trials=2")
    study = optuna.load_study(study_name="old", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
