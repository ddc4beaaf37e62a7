"""Layers in one direction (docs/architecture.md): a module may import its own layer or lower
ones, never a higher one. Every import is read from the source, lazy imports inside functions
included, so a shortcut upward fails here."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "genba"

# bottom (0) to top; a package's layer applies to all its modules
LAYERS = [
    {"errors", "tensors", "registry", "settings", "metaschema", "tensorfile", "artefact", "cache", "report", "metrics", "device"},
    {"data"},
    {"backbones"},
    {"encoders"},  # built on backbones; backbones never import encoders
    {"features", "memory", "train"},
    {"store"},
    {"zeroshot", "methods"},
    {"live", "adapt", "experiment", "continual", "cvm", "movit", "sak", "model"},
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


def _trees():
    for path in sorted(SRC.rglob("*.py")):
        yield str(path.relative_to(SRC)), ast.parse(path.read_text())


def test_argparse_only_in_cli_modules():
    """The library never parses arguments: argparse is imported by `cli` modules (and __main__) only."""
    offenders = set()
    for name, tree in _trees():
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if "argparse" in modules and Path(name).stem not in ("cli", "__main__"):
                offenders.add(name)
    assert not offenders, f"argparse outside cli modules: {sorted(offenders)}"


GLOBAL_SEEDING = {("torch", "manual_seed"), ("torch.random", "manual_seed"), ("torch.cuda", "manual_seed"),
                  ("torch.cuda", "manual_seed_all"), ("torch.default_generator", "manual_seed"),
                  ("np.random", "seed"), ("numpy.random", "seed"), ("random", "seed")}


def test_no_global_seeding_outside_the_engine():
    """Random draws take a generator passed down from the run's seed; only genba.train (the engine's
    per-step reseeding inside its forked RNG, and `seeded` for module construction) seeds the global one."""
    offenders = set()
    for name, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if (owner, node.func.attr) in GLOBAL_SEEDING and name != "train/data.py":
                    offenders.add(f"{name}:{node.lineno} {owner}.{node.func.attr}")
    assert not offenders, f"global seeding in library code: {sorted(offenders)}"


TASK_HOOKS = {"begin_task", "task_data", "end_task"}


def task_loops(tree) -> list[int]:
    """Line numbers of task loops: a `for` / `while` whose body calls a strategy hook (begin_task,
    task_data, end_task). Driving a strategy over tasks is what makes a loop a task loop."""
    return [loop.lineno for loop in ast.walk(tree) if isinstance(loop, (ast.For, ast.While))
            and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in TASK_HOOKS
                    for stmt in loop.body for n in ast.walk(stmt))]


def test_one_task_loop():
    """Every part that learns in tasks goes through genba.continual.loop.run_tasks (one loop)."""
    loops = {f"{name}:{line}" for name, tree in _trees() for line in task_loops(tree)}
    assert len(loops) == 1 and next(iter(loops)).startswith("continual/loop.py:"), \
        f"task loops outside genba.continual.loop.run_tasks: {sorted(loops)}"


def test_the_task_loop_test_sees_a_second_loop():
    second = ast.parse("for t, task in enumerate(tasks):\n    strategy.begin_task(model, t)\n    fit(model, d)\n")
    assert task_loops(second) == [1]
