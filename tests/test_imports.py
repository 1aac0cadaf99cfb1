"""Import structure of bert_jax, read from the source with `ast` (nothing is imported).

An edge A -> B means: some line of module A imports module B. Every form counts, wherever it
sits (module level, or inside a function, class or method):
  import bert_jax.x.y            -> bert_jax.x.y
  from bert_jax import x         -> bert_jax.x when x is a module, else the package bert_jax
  from bert_jax.x import y       -> bert_jax.x.y when y is a module, else bert_jax.x
  from . import y / from .x import y   (relative imports, resolved the same way)
  importlib.import_module("bert_jax.x") / __import__(...) / importlib.util.find_spec(...)
  "bert_jax.x:Name"              (a literal `module:attribute` string, loaded by name somewhere)
Importing bert_jax.x.y first runs the `__init__` of the package bert_jax.x, so an import from
outside that package is also an edge to the package. (From inside it, the package is already
loading when the module runs: no edge.) A `python -m bert_jax.x` string is another process, not
an edge.

Tests: no cycle (a strongly connected component of more than one module, or a module that
imports itself; a module's "bert_jax.x:Name" string naming itself is not counted), and only
bert_jax/data imports TensorFlow (the design rules of issue 23).

From the command line (no pytest, nothing of bert_jax imported):
  python tests/test_imports.py            the cycles, shortest first, with the lines closing them
                                          (and any import of a bert_jax module that does not exist)
  python tests/test_imports.py --edges    every edge, with file:line and the function it sits in
  python tests/test_imports.py --edges --module bert_jax.finetune    the edges from or to one module
  python tests/test_imports.py --tf       the TensorFlow imports outside bert_jax/data
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import functools
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "bert_jax"
# Calls whose first argument, a literal module name, is imported.
IMPORT_CALLS = ("import_module", "__import__", "find_spec")
# "bert_jax.x.y:Name": a module and an attribute of it, loaded by name (e.g. a registry).
STRING_REF = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# Modules that import TensorFlow when imported.
TENSORFLOW = re.compile(r"tensorflow(_\w+)?|tf_keras")


@dataclasses.dataclass(frozen=True, order=True)
class Edge:
  src: str      # importing module
  dst: str      # imported module
  path: str     # file of src, relative to the repository root
  line: int
  where: str    # enclosing function/class ("" at module level)
  how: str      # the import as written (implicit package edges say so)

  def location(self) -> str:
    return f"{self.path}:{self.line}" + (f" (in {self.where})" if self.where else "")


def module_files(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
  """Module name -> file, for every .py file of the package (a package is its __init__.py)."""
  out = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    if all(p.isidentifier() for p in parts):
      out[".".join(parts)] = path
  return out


def _ancestors(name: str) -> list[str]:
  parts = name.split(".")
  return [".".join(parts[:n]) for n in range(1, len(parts))]


def _call_name(func: ast.expr) -> str:
  if isinstance(func, ast.Attribute):
    return func.attr
  return func.id if isinstance(func, ast.Name) else ""


def _imports_of(tree: ast.Module, package: str) -> list[tuple[str, str | None, int, str, str]]:
  """(name, member, line, enclosing function/class, text) of each import in a module's tree.

  `package` is the package relative imports start from. `member` is the imported name of a
  `from name import member` (None for the other forms).
  """
  found = []
  stack = [(tree, "")]
  while stack:
    node, where = stack.pop()
    for child in ast.iter_child_nodes(node):
      kind = type(child)
      if kind is ast.Import:
        found += [(a.name, None, child.lineno, where, f"import {a.name}") for a in child.names]
      elif kind is ast.ImportFrom:
        base = child.module or ""
        if child.level:
          parts = package.split(".")
          parts = parts[:len(parts) - child.level + 1]
          base = ".".join(parts + ([child.module] if child.module else []))
        text = f"from {'.' * child.level}{child.module or ''} import "
        found += [(base, None if a.name == "*" else a.name, child.lineno, where, text + a.name)
                  for a in child.names]
      elif kind is ast.Call:
        name = _call_name(child.func)
        arg = child.args[0] if child.args else None
        if name in IMPORT_CALLS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
          found.append((arg.value, None, child.lineno, where, f'{name}("{arg.value}")'))
      elif kind is ast.Constant:
        if isinstance(child.value, str) and ":" in child.value:
          m = STRING_REF.fullmatch(child.value)
          if m:
            found.append((m.group(1), None, child.lineno, where, f'"{child.value}"'))
      if kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
        stack.append((child, f"{where}.{child.name}" if where else child.name))
      else:
        stack.append((child, where))
  return sorted(found, key=lambda f: (f[2], f[4]))


@functools.lru_cache(maxsize=None)
def _parsed(root: pathlib.Path, package: str):
  """Module name -> (file relative to root, its imports), for every module of the package."""
  files = module_files(root, package)
  out = {}
  for module, path in files.items():
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out[module] = (path.relative_to(root).as_posix(), _imports_of(tree, own))
  return files, out


def import_edges(root: pathlib.Path = ROOT, package: str = PACKAGE) -> list[Edge]:
  """Every edge between two modules of the package (see the module docstring), sorted."""
  files, parsed = _parsed(root, package)
  edges = set()
  for module, (rel, found) in parsed.items():
    for base, member, line, where, how in found:
      if base != package and not base.startswith(package + "."):
        continue
      if member is not None and f"{base}.{member}" in files:
        target = f"{base}.{member}"
      elif base in files:
        target = base
      else:
        continue  # no such module (see missing_modules)
      if target == module and how.startswith('"'):
        continue  # a module naming one of its own attributes "bert_jax.x:Name": already loaded
      # target == module otherwise: an import of itself (`from bert_jax.x import y` in bert_jax.x).
      edges.add(Edge(module, target, rel, line, where, how))
      # The packages that must run first and do not contain the importer.
      for parent in _ancestors(target):
        if parent in files and not (module == parent or module.startswith(parent + ".")):
          edges.add(Edge(module, parent, rel, line, where, f"{how}  [runs {parent}/__init__]"))
  return sorted(edges)


def missing_modules(root: pathlib.Path = ROOT, package: str = PACKAGE) -> list[Edge]:
  """Imports of package modules that do not exist (stale after a move); dst is the name."""
  files, parsed = _parsed(root, package)
  return sorted({Edge(module, base, rel, line, where, how)
                 for module, (rel, found) in parsed.items()
                for base, _, line, where, how in found
                 if (base == package or base.startswith(package + ".")) and base not in files})


def tensorflow_imports(root: pathlib.Path = ROOT, package: str = PACKAGE) -> list[Edge]:
  """Imports of TensorFlow (tensorflow, tensorflow_datasets, ...) outside <package>.data."""
  _, parsed = _parsed(root, package)
  out = []
  for module, (rel, found) in parsed.items():
    if module == f"{package}.data" or module.startswith(f"{package}.data."):
      continue
    for base, _, line, where, how in found:
      top = base.split(".")[0]
      if TENSORFLOW.fullmatch(top):
        out.append(Edge(module, top, rel, line, where, how))
  return sorted(out)


def _graph(edges):
  graph = collections.defaultdict(set)
  for e in edges:
    graph[e.src].add(e.dst)
  return graph


def strongly_connected(edges: list[Edge]) -> list[list[str]]:
  """Tarjan's strongly connected components (each sorted), of the modules in the edges."""
  graph = _graph(edges)
  nodes = sorted({e.src for e in edges} | {e.dst for e in edges})
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      out.append(sorted(component))

  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(max(limit, 10 * len(nodes) + 100))
  try:
    for v in nodes:
      if v not in index:
        visit(v)
  finally:
    sys.setrecursionlimit(limit)
  return out


def _shortest_path(graph, start, goal, allowed):
  """Modules from start to goal (both included) by BFS inside `allowed`; None if none."""
  previous = {start: None}
  queue = collections.deque([start])
  while queue:
    v = queue.popleft()
    if v == goal:
      path = []
      while v is not None:
        path.append(v)
        v = previous[v]
      return path[::-1]
    for w in sorted(graph[v]):
      if w in allowed and w not in previous:
        previous[w] = v
        queue.append(w)
  return None


@dataclasses.dataclass
class Cycle:
  modules: list[str]                 # a -> b -> ... -> a, the first module not repeated
  component: list[str]               # the strongly connected component it lies in
  hops: list[list[Edge]]             # the import lines of each hop a -> b, b -> c, ..., z -> a


def cycles(edges: list[Edge]) -> list[Cycle]:
  """Import cycles, shortest first: for each edge inside a component of more than one module
  (or a self-import), the shortest cycle through it; cycles found twice are listed once."""
  graph = _graph(edges)
  by_pair = collections.defaultdict(list)
  for e in edges:
    by_pair[(e.src, e.dst)].append(e)
  found = {}
  for component in strongly_connected(edges):
    members = set(component)
    for (src, dst) in sorted(by_pair):
      if src not in members or dst not in members:
        continue
      if src == dst:
        loop = [src]
      elif len(component) > 1:
        back = _shortest_path(graph, dst, src, members)
        loop = [src] + back[:-1]
      else:
        continue
      first = loop.index(min(loop))  # one rotation per cycle
      key = tuple(loop[first:] + loop[:first])
      if key not in found:
        hops = [by_pair[(key[i], key[(i + 1) % len(key)])] for i in range(len(key))]
        found[key] = Cycle(list(key), component, hops)
  return sorted(found.values(), key=lambda c: (len(c.modules), c.modules))


def format_cycles(found: list[Cycle]) -> str:
  lines = []
  components = []
  for c in found:
    if c.component not in components:
      components.append(c.component)
  lines.append(f"{len(found)} import cycle(s) in {len(components)} group(s) of modules "
               "that import each other:")
  for i, comp in enumerate(components, 1):
    lines.append(f"  group {i} ({len(comp)} module(s)): {', '.join(comp)}")
  for c in found:
    chain = " -> ".join(c.modules + [c.modules[0]])
    lines.append(f"\n{chain}   [group {components.index(c.component) + 1}]")
    for hop in c.hops:
      lines.append(f"  {hop[0].src} -> {hop[0].dst}:")
      for e in hop:
        lines.append(f"      {e.location()}: {e.how}")
  return "\n".join(lines)


def format_edges(edges: list[Edge]) -> str:
  return "\n".join(f"{e.src} -> {e.dst}   {e.location()}: {e.how}" for e in edges)


def print_edges(module: str | None = None) -> None:
  """Prints every edge (of `module` only, when given: from it or to it)."""
  edges = import_edges()
  if module:
    edges = [e for e in edges if module in (e.src, e.dst)]
  print(format_edges(edges))


def print_cycles() -> bool:
  """Prints the import cycles, shortest first; True when there are none."""
  found = cycles(import_edges())
  print(format_cycles(found) if found else "no import cycle")
  return not found


def test_no_import_cycles():
  found = cycles(import_edges())
  if found:
    raise AssertionError("\n" + format_cycles(found))


def test_only_data_imports_tensorflow():
  found = tensorflow_imports()
  if found:
    raise AssertionError("only bert_jax/data imports TensorFlow; these modules do too:\n"
                         + format_edges(found))


def test_edges_of_every_import_form(tmp_path):
  """The checker itself, on a made-up package: each form of import gives its edge."""
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  sources = {
      "__init__.py": "",
      "a.py": "import os\nfrom pkg import b\n\ndef f():\n  from pkg.sub import c\n",
      "b.py": "class K:\n  def m(self):\n    import pkg.a\n",
      "d.py": ("import importlib\nfrom . import a\nfrom .sub.c import name\n"
               "KINDS = {'x': 'pkg.e:Thing'}\nimportlib.import_module('pkg.b')\n"
               "RUN = ['-m', 'pkg.a']\n"),
      "e.py": "from pkg.e import Thing\nimport tensorflow as tf\nOWN = 'pkg.e:Thing'\n",
      "sub/__init__.py": "from pkg.sub import c\n",
      "sub/c.py": "from ..d import KINDS\nimport tensorflow_datasets\nfrom pkg.gone import x\n",
  }
  for name, text in sources.items():
    (pkg / name).write_text(text)
  got = {(e.src, e.dst, e.line, e.where) for e in import_edges(tmp_path, "pkg")}
  assert got == {
      ("pkg.a", "pkg.b", 2, ""), ("pkg.a", "pkg.sub.c", 5, "f"), ("pkg.a", "pkg.sub", 5, "f"),
      ("pkg.b", "pkg.a", 3, "K.m"),
      ("pkg.d", "pkg.a", 2, ""), ("pkg.d", "pkg.sub.c", 3, ""), ("pkg.d", "pkg.sub", 3, ""),
      ("pkg.d", "pkg.e", 4, ""), ("pkg.d", "pkg.b", 5, ""),
      ("pkg.e", "pkg.e", 1, ""),
      ("pkg.sub", "pkg.sub.c", 1, ""), ("pkg.sub.c", "pkg.d", 1, ""),
  }, got
  found = cycles(import_edges(tmp_path, "pkg"))
  assert [c.modules for c in found] == [
      ["pkg.e"], ["pkg.a", "pkg.b"], ["pkg.d", "pkg.sub.c"], ["pkg.a", "pkg.sub.c", "pkg.d"],
      ["pkg.d", "pkg.sub", "pkg.sub.c"],  # through pkg/sub/__init__.py, run by `from .sub.c`
      ["pkg.a", "pkg.sub", "pkg.sub.c", "pkg.d"], ["pkg.a", "pkg.sub.c", "pkg.d", "pkg.b"]], found
  assert "pkg/b.py:3 (in K.m): import pkg.a" in format_cycles(found)
  assert [(e.src, e.dst, e.line) for e in missing_modules(tmp_path, "pkg")] == [
      ("pkg.sub.c", "pkg.gone", 3)]
  assert [(e.src, e.dst) for e in tensorflow_imports(tmp_path, "pkg")] == [
      ("pkg.e", "tensorflow"), ("pkg.sub.c", "tensorflow_datasets")]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--edges", action="store_true", help="print every edge")
  parser.add_argument("--module", default="", help="with --edges: only the edges from or to it")
  parser.add_argument("--tf", action="store_true", help="print TensorFlow imports outside data/")
  args = parser.parse_args(argv)
  if args.edges:
    print_edges(args.module or None)
    return 0
  if args.tf:
    found = tensorflow_imports()
    print(format_edges(found) if found else "no TensorFlow import outside bert_jax/data")
    return 1 if found else 0
  ok = print_cycles()
  missing = missing_modules()
  if missing:
    print("\nimports of modules that do not exist:\n" + format_edges(missing))
  return 0 if ok and not missing else 1


if __name__ == "__main__":
  sys.exit(main())
