"""House rules of the package, checked on its source text (nothing is imported, so no torch; a second or two).

- No function or method in `binding_sae/` takes more than `MAX_PARAMS` parameters. Counted: positional and
  keyword-only parameters; not counted: `self` / `cls` of a method, and `*args` / `**kwargs` (they pass things on,
  they are not an interface to remember). Settings that travel together go in a config section or a record instead.
- The package's import graph (every import, also the ones inside functions) has no cycle.
- No step module imports another step module: what two steps share lives in a module below both.
- Notebook prose and the README cite nothing a reader cannot follow (issue numbers, numbered mistakes, missing files).
"""
import ast, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "binding_sae"
STEPS = {"train", "identify", "ablate", "interchange", "analyze", "visualize"}  # the pipeline's step modules
MAX_PARAMS = 10
UNFOLLOWABLE = re.compile(r"issue [0-9]|mistake [0-9]|SPEC\.md")


def parse_package(pkg: Path = PKG) -> dict:
    "{module name: its syntax tree} of the package's modules (the generated index and `__init__` left out)."
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(pkg.glob("*.py")) if p.stem not in ("_modidx", "__init__")}


def n_params(fn: ast.FunctionDef, is_method: bool) -> int:
    "Positional and keyword-only parameters of `fn`, without a method's first (`self` / `cls`) and without *args / **kwargs."
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args]
    if is_method and names and names[0] in ("self", "cls"): names = names[1:]
    return len(names) + len(a.kwonlyargs)


def too_many_params(trees: dict, limit: int = MAX_PARAMS) -> list:
    "'module.function (n)' for every function or method with more than `limit` parameters."
    out = []
    for mod, tree in trees.items():
        def visit(node, in_class):
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if (n := n_params(ch, in_class)) > limit: out.append(f"{mod}.{ch.name} ({n})")
                    visit(ch, False)
                else: visit(ch, isinstance(ch, ast.ClassDef) or (in_class and not isinstance(ch, ast.ClassDef)))
        visit(tree, False)
    return out


def package_imports(tree: ast.AST, modules: set) -> set:
    "The package modules a module imports anywhere: `from .x import`, `from binding_sae.x import`, `import binding_sae.x`, `from binding_sae import x`."
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y / from . import x
                targets = [base] if base else [a.name for a in node.names]
            elif base == "binding_sae": targets = [a.name for a in node.names]
            elif base.startswith("binding_sae."): targets = [base.split(".")[1]]
            else: continue
            out |= {t.split(".")[0] for t in targets}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("binding_sae.")}
    return out & modules


def import_graph(trees: dict) -> dict:
    "{module: the package modules it imports}."
    return {m: package_imports(t, set(trees)) - {m} for m, t in trees.items()}


def find_cycle(graph: dict) -> list:
    "One import cycle as a list of modules (first = last), or [] when the graph is acyclic."
    state, stack = {}, []
    def dfs(m):
        state[m] = "open"; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open": return stack[stack.index(n):] + [n]
            if n not in state and (c := dfs(n)): return c
        state[m] = "done"; stack.pop()
        return []
    for m in sorted(graph):
        if m not in state and (c := dfs(m)): return c
    return []


def step_imports(graph: dict, steps: set = STEPS) -> list:
    "'a -> b' for every step module that imports another step module."
    return [f"{m} -> {n}" for m in sorted(graph) if m in steps for n in sorted(graph[m] & steps)]


def unfollowable_references(paths) -> list:
    "'file:line: text' for every line that cites an issue number, a numbered mistake or SPEC.md."
    out = []
    for p in paths:
        for i, line in enumerate(Path(p).read_text().splitlines(), 1):
            if UNFOLLOWABLE.search(line): out.append(f"{Path(p).name}:{i}: {line.strip()[:120]}")
    return out


# --- the checkers catch what they are meant to catch (synthetic sources)

def test_checkers_catch_violations(tmp_path):
    src = {"a": "from .b import x\ndef f(p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, *args, k=1, **kw): pass\n"
                "class C:\n    def m(self, a, b, c, d, e, f, g, h, i, j): pass\n",
           "b": "def g():\n    from binding_sae.a import f\n", "train": "from binding_sae import identify\n", "identify": "import numpy\n"}
    for name, text in src.items(): (tmp_path / f"{name}.py").write_text(text)
    trees = parse_package(tmp_path)
    assert too_many_params(trees) == ["a.f (11)"]  # *args/**kwargs and self are not counted; the method has exactly 10
    assert too_many_params(trees, limit=9) == ["a.f (11)", "a.m (10)"]
    graph = import_graph(trees)
    assert graph == {"a": {"b"}, "b": {"a"}, "train": {"identify"}, "identify": set()}
    assert find_cycle(graph) == ["a", "b", "a"]  # the import inside a function counts
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    assert step_imports(graph) == ["train -> identify"]
    (tmp_path / "nb.ipynb").write_text('{"source": ["as issue 5 showed", "fine"]}\n')
    assert len(unfollowable_references([tmp_path / "nb.ipynb"])) == 1


# --- the package itself

def test_no_function_takes_more_than_ten_parameters():
    assert too_many_params(parse_package()) == []


def test_import_graph_is_acyclic():
    assert find_cycle(import_graph(parse_package())) == []


def test_no_step_imports_another_step():
    graph = import_graph(parse_package())
    assert STEPS <= set(graph), STEPS - set(graph)  # the list of steps is current
    assert step_imports(graph) == []


def test_forward_sits_between_vlm_and_the_steps():
    graph = import_graph(parse_package())
    assert "vlm" in graph["forward"] and "forward" not in graph["vlm"]
    assert not graph["forward"] & STEPS


def test_prose_cites_only_what_a_reader_can_follow():
    assert unfollowable_references(sorted((ROOT / "nbs").glob("*.ipynb")) + [ROOT / "README.md"]) == []
