"""Imports flow one way: cli -> recipes -> {trainer, data, tokenizer, tasks, metrics, checkpoint, languages,
pipeline} -> model -> {config, kernels, weights}; weights -> config -> files; the kernels import nothing from
the package. Checked on the source, so a violation fails here rather than in review."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xmodlm"


def internal_imports(path: Path) -> set[str]:
    """The xmodlm modules a file imports (first component after the package), relative or absolute."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from ..x import y
                base = path.relative_to(PACKAGE).parts[:-1][: max(0, len(path.relative_to(PACKAGE).parts) - node.level)]
                parts = [*base, *(node.module.split(".") if node.module else [])]
                names = [parts[0]] if parts else [alias.name for alias in node.names]
                found.update(names)
            elif node.module and node.module.startswith("xmodlm."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("xmodlm."))
    return found


def module_imports(name: str) -> set[str]:
    path = PACKAGE / f"{name}.py"
    return internal_imports(path if path.exists() else PACKAGE / name / "__init__.py")


def test_model_imports_only_its_config_kernels_and_weights():
    assert module_imports("model") <= {"config", "kernels", "weights"}
    assert module_imports("config") <= {"files"}
    assert module_imports("weights") <= {"config", "files"}
    assert module_imports("files") == set()


def test_the_kernels_import_nothing_from_the_package():
    files = sorted((PACKAGE / "kernels").rglob("*.py"))
    assert files
    for path in files:  # imports among the kernels' own files name "kernels"
        assert internal_imports(path) <= {"kernels"}, f"{path.relative_to(PACKAGE)} imports {internal_imports(path)}"


def test_nothing_below_the_recipes_imports_them_or_the_cli():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("recipes", "cli.py", "__main__.py"):
            continue
        assert not internal_imports(path) & {"recipes", "cli"}, f"{rel} imports a recipe or the CLI"


def test_library_modules_do_not_import_each_other_upwards():
    # the trainer knows no model; from the kernels only what the processor can do fast (bf16 or not, for --precision)
    lower = {"trainer": {"files", "runtime", "settings", "kernels"}, "metrics": set(), "data": set(), "tokenizer": {"data", "files"},
             "settings": set(), "synthetic": {"files"},
             "runtime": {"files", "kernels"}}  # the kernels' timed choices, kept in a file per machine
    for name, allowed in lower.items():
        assert module_imports(name) <= allowed | {"config"}, name


def test_recipes_never_import_the_cli():
    """Recipes are callable from Python; the CLI calls them, never the other way round."""
    for path in (PACKAGE / "recipes").rglob("*.py"):
        assert "cli" not in internal_imports(path), f"{path.relative_to(PACKAGE)} imports the CLI"
