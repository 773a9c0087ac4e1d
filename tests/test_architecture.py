"""The import rules of docs/DESIGN.md, checked on the source (every import, at module level or inside a
function), and every run file in configs/ parses into a valid run config."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from transformer_xl.config import ConfigError, ModelConfig, RunConfig, load_toml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "transformer_xl"
NAME = "transformer_xl"
STDLIB = set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` brings in: the submodule when a name is one, else the module."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports_of(module: str) -> set[str]:
    """Every module this one imports (ours by full name; third-party and stdlib by top-level name)."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path.name == "__init__.py", node))
    return {name if name.startswith(NAME) else name.split(".")[0] for name in found if name}


GRAPH = {module: imports_of(module) for module in MODULES}


def _in(module: str, package: str) -> bool:
    return module == f"{NAME}.{package}" or module.startswith(f"{NAME}.{package}.")


def test_the_graph_sees_imports_inside_functions():
    assert f"{NAME}.pretrained" in GRAPH[f"{NAME}.runtime"]  # imported inside load_checkpoint only
    assert "torch" in GRAPH[f"{NAME}.model.transformer"]


def test_model_imports_only_torch_the_config_and_itself():
    for module, imported in GRAPH.items():
        if not _in(module, "model"):
            continue
        for name in imported:
            ours = name.startswith(NAME)
            allowed = (name == f"{NAME}.config" or _in(name, "model")) if ours else (name in STDLIB or name == "torch")
            assert allowed, f"{module} imports {name}: model/ may import only torch, the stdlib and config"


def test_data_imports_only_the_config_and_itself():
    for module, imported in GRAPH.items():
        if _in(module, "data"):
            bad = [n for n in imported if n.startswith(NAME) and n != f"{NAME}.config" and not _in(n, "data")]
            assert not bad, f"{module} imports {bad}: data/ depends only on config"


def test_nothing_outside_training_and_cli_imports_training():
    for module, imported in GRAPH.items():
        if _in(module, "training") or _in(module, "cli") or module == NAME:
            continue  # the package root re-exports train() for the public API
        bad = [n for n in imported if _in(n, "training")]
        assert not bad, f"{module} imports {bad}: inference and analysis must work without training/"


def test_only_the_runtime_reads_torchrun_variables():
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if module != f"{NAME}.runtime":
            for variable in ('"WORLD_SIZE"', '"LOCAL_RANK"', '"RANK"', '"TORCHELASTIC_RESTART_COUNT"'):
                assert variable not in text, f"{module} reads {variable}: use transformer_xl.runtime"


def _cycle() -> list[str] | None:
    """One import cycle among our modules, or None. A package's __init__ counts as a module."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for name in sorted(GRAPH[module]):
            if name not in GRAPH:
                continue
            if state.get(name) == 1:
                return stack[stack.index(name):] + [name]
            if name not in state and (found := visit(name)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    # The root package re-exports everything; submodules never import it, so it cannot close a cycle.
    assert not any(NAME in imported for imported in GRAPH.values()), "a submodule imports the package root"
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, f"{NAME}.config", GRAPH[f"{NAME}.config"] | {f"{NAME}.model.transformer"})
    assert _cycle() is not None


def test_nothing_assigns_a_models_config_after_construction():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "config":
                        owner = target.value
                        assert isinstance(owner, ast.Name) and owner.id == "self" and module.endswith(
                            "model.transformer"), f"{module}:{node.lineno} assigns .config"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_config_file_parses_into_a_valid_run_config(path: Path):
    data = load_toml(path)
    preset = data.pop("preset", None)
    model = dict(ModelConfig.preset(preset).to_dict() if preset else {"n_token": 256})
    model.update(data.pop("model", {}))
    model.setdefault("n_token", 256)
    try:
        RunConfig.from_dict({"model": model, **data})
    except ConfigError as exc:
        pytest.fail(f"{path.name}: {exc}")
