"""Layers in one direction (docs/architecture.md): a module may import its own layer or lower
ones, never a higher one. Every import is read from the source, lazy imports inside functions
included, so a shortcut upward fails here."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "genba"

# bottom (0) to top; a package's layer applies to all its modules
LAYERS = [
    {"errors", "tensors", "registry", "settings", "cache", "report", "metrics", "device"},
    {"data"},
    {"backbones", "encoders"},
    {"features", "memory", "train"},
    {"store"},
    {"zeroshot", "methods"},
    {"live", "adapt", "experiment", "continual", "cvm", "movit", "sak"},
    {"serve"},
    {"cli", "__main__", "__init__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    assert top in LAYER_OF, f"genba.{top} has no layer: add it to LAYERS here and to docs/architecture.md"
    return LAYER_OF[top]


def imports_of(path: Path, module: str):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target]
            if target == "genba":  # from genba import cli: the submodules named
                names = [f"genba.{a.name}" for a in node.names
                         if (SRC / f"{a.name}.py").exists() or (SRC / a.name).is_dir()]
            yield from (n for n in names if n.startswith("genba"))
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("genba"))


def test_no_import_goes_up_a_layer():
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "genba":
            continue
        for target in imports_of(path, module):
            if target != "genba" and layer(target) > layer(module):
                violations.append(f"{module} -> {target}")
    assert not violations, "imports that go up a layer:\n" + "\n".join(violations)


def test_one_training_loop():
    """Only the engine back-propagates or steps an optimiser; everything else supplies objectives."""
    callers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("backward", "step", "zero_grad"):
                callers.add(str(path.relative_to(SRC)))
    assert callers == {"train/engine.py"}, f"training-loop calls outside the engine: {sorted(callers)}"
