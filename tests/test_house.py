"""The package's shape: no import cycle, every module imports on its own, one registry for the
generator families, short files and recipe functions, a README layout that matches the tree."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunejury_align import generators
from tunejury_align.generators.base import Family, Trainer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tunejury_align"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (top level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` depends on the submodule; `from pkg import name` on the package
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycle_anywhere_in_the_package():
    files = [p for p in PACKAGE.rglob("*.py")]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): package_imports(p, modules) for p in files}
    # Tarjan's strongly connected components: a cycle is a component of more than one module
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles (including imports inside functions): {cycles}"


def test_every_module_imports_on_its_own():
    """Each module in a fresh process (forked after the third-party libraries are imported)."""
    names = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
    script = (
        "import os, sys, importlib, torch, numpy\n"
        f"names = {names!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException as err:\n"
        "            print(name, type(err).__name__, err, flush=True)\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    if status:\n"
        "        failed.append(name)\n"
        "print('FAILED', failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_files_and_recipe_functions_stay_short():
    long_files = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 430}
    assert not long_files, f"files over ~400 lines: {long_files}"
    long_functions = {}
    for path in (PACKAGE / "recipes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_functions[f"{path.name}:{node.name}"] = length
    assert not long_functions, f"recipe functions over ~80 lines: {long_functions}"


# -- one registry --------------------------------------------------------------------------------
class ToyPipeline:
    """Stands in for a library pipeline object of a new diffusion family."""


class ToyTrainer(Trainer):
    family = "toy"
    default_trainable = (r"^weight$",)

    def __init__(self, generator, trainable=None, generation=None):
        self.generator, self.root = generator, torch.nn.Linear(1, 1)
        self._select(trainable)


class ToyGenerator:
    family, sample_rate, is_debug = "toy", 8000, True

    def __init__(self, name="toy"):
        self.name = name

    @classmethod
    def from_pretrained(cls, name, device=None, dtype=None):
        return cls(name)

    @classmethod
    def from_pipeline(cls, pipe, name="toy"):
        generator = cls(name)
        generator.pipe = pipe
        return generator

    def options(self, **overrides):
        return overrides

    def generate(self, prompts, seeds, **options):
        return torch.zeros(len(prompts), 1, 80)

    def initial_noise(self, seeds, duration=None):
        return torch.zeros(len(seeds), 4)

    def sample(self, prompts, initial_noise, **kwargs):
        return torch.zeros(len(prompts), 1, 80)

    def info(self):
        return {"generator": self.name, "debug": True}


def test_a_family_registered_in_one_place_is_reachable_everywhere(monkeypatch):
    toy = Family(name="toy", summary="Toy (owner/toy)", adapter=ToyGenerator, debug=lambda: ToyGenerator("debug-toy"),
                 pipeline_classes=("ToyPipeline",), trainer=ToyTrainer)
    monkeypatch.setitem(generators.FAMILIES, "toy", toy)
    monkeypatch.setitem(generators.DEBUG_NAMES, "debug-toy", "toy")
    assert toy.diffusion
    # load_generator (the debug model) and the wrapping of a library object, for DITTO too
    assert generators.load_generator("debug-toy").name == "debug-toy"
    wrapped = generators.as_diffusion_generator(ToyPipeline())
    assert isinstance(wrapped, ToyGenerator) and isinstance(wrapped.pipe, ToyPipeline)
    # the fine-tune lookup
    trainer = generators.trainer_for(ToyGenerator())
    assert isinstance(trainer, ToyTrainer) and trainer.trainable_names == ["weight"]
    # and the CLI help of every command that takes a generator
    from tunejury_align.cli import build_parser

    for command in ("best-of-n", "ditto", "expert-iter"):
        subparsers = next(a for a in build_parser()._actions if a.dest == "command")
        generator_action = next(a for a in subparsers.choices[command]._actions if a.dest == "generator")
        assert "Toy (owner/toy)" in generator_action.help and "debug-toy" in generator_action.help


def test_families_without_a_sampler_or_a_loss_are_refused_with_the_families_that_have_one():
    with pytest.raises(TypeError, match=r"diffusion generator .*stable-audio.*audioldm2"):
        generators.as_diffusion_generator(object())
    with pytest.raises(TypeError, match=r"fine-tunes \['musicgen', 'stable-audio'\]"):
        generators.trainer_for(generators.load_generator("debug-audioldm2"))


def test_readme_layout_matches_the_tree():
    from scripts.readme_layout import layout

    readme = (ROOT / "README.md").read_text()
    assert layout() in readme, "README's layout section is stale: run `python scripts/readme_layout.py --write`"
