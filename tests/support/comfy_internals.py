"""Which ComfyUI names the shipped pack touches, found by reading its source (stdlib ``ast`` only, imports nothing).

The shipped pack is ``__init__.py``, ``nodes/`` and ``freecure_core/``.  A *use* is one of:

* ``import X`` / ``from X import Y`` of a ComfyUI module (``COMFY_MODULES``), also inside functions;
* ``importlib.import_module("X")``, ``sys.modules["X"]`` and ``sys.modules.get("X")`` with a constant name;
* an attribute chain on a name bound to one of those (``comfy.samplers.KSampler``, ``execution.CacheType.CLASSIC``);
* ``super().name(...)`` in a class derived from a ComfyUI class, or in a mixin used next to one
  (``CFGGuider.predict_noise``): the methods the pack overrides and calls back;
* ``getattr``/``hasattr`` on such a name with a constant string, or a loop variable over a tuple of strings;
* names in ``PARAMETER_ALIASES``: a parameter that carries a ComfyUI module (``to_v3(spec, io)`` gets
  ``comfy_api.latest.io`` from ``__init__.py``);
* a string literal that is an HTTP route of ComfyUI's server (``"/prompt"``, ``"/history/" + id``).

The symbol is the first name after the module, plus one member when that name is a class (CamelCase):
``comfy.samplers.KSampler.SAMPLERS`` -> ``KSampler.SAMPLERS``; ``nodes.NODE_CLASS_MAPPINGS.get`` ->
``NODE_CLASS_MAPPINGS``.  A use under ``hasattr``, a 3-argument ``getattr`` or ``try: ... except ImportError`` is
*guarded* (also ``except Exception``): a symbol whose every use is guarded is listed as optional.

``ComfyTree(root).lookup(module, symbol)`` answers whether a ComfyUI checkout defines the symbol, by reading its
source files (module-level names, class bodies, ``Class.attr =`` assignments, imports followed), so any ComfyUI
version can be checked without importing it.

docs/compatibility.md holds one table per module between the GENERATED markers; the "why" column is written by hand.

    python -m tests.support.comfy_internals           # list every use (file:line) and check the doc
    python -m tests.support.comfy_internals --write   # rewrite the tables, keeping each "why"; new rows say TODO
"""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import re
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "compatibility.md"
SHIPPED = ("__init__.py", "nodes", "freecure_core")
WRITE_COMMAND = "python -m tests.support.comfy_internals --write"

# Top-level modules a ComfyUI checkout puts on sys.path (0.3.75 and 0.33.0); the test checks this covers each tree.
COMFY_MODULES = frozenset({
    "alembic_db", "api_server", "app", "comfy", "comfy_api", "comfy_api_nodes", "comfy_config", "comfy_execution",
    "comfy_extras", "comfyui_version", "cuda_malloc", "execution", "folder_paths", "hook_breaker_ac10a0",
    "latent_preview", "main", "middleware", "new_updater", "node_helpers", "nodes", "protocol", "server", "utils",
})
# Top-level folders of a checkout that are not modules the pack could import.
NOT_MODULES = frozenset({"tests", "tests-unit", "custom_nodes", "script_examples", "input", "output", "models",
                         "user", "temp", "blueprints", "web", "notebooks"})
# Declared public API (the versioned comfy_api); everything else is an internal.
PUBLIC_MODULES = ("comfy_api.latest", "comfy_api.v0_0_1", "comfy_api.v0_0_2")
PUBLIC_SYMBOLS = frozenset({("server", "PromptServer.instance")})  # documented for custom nodes (messages, routes)
HTTP = "HTTP routes"  # pseudo-module of the server routes the runner calls
# Parameters that carry a ComfyUI module into a function (file -> {parameter: module}).  A parameter named like a
# ComfyUI module and used with attributes but missing here is reported by suspect_parameters().
PARAMETER_ALIASES = {
    "nodes/spec.py": {"io": "comfy_api.latest.io"},
    "freecure_core/comfy_bridge/embedded.py": {"execution": "execution"},
}

_ROUTE = re.compile(r"^/[a-z_]+(?:/[a-z_]+)*/?(?:\?.*)?$")
_GUARD_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclasses.dataclass(frozen=True)
class Use:
    module: str
    symbol: str  # "" for a module that is only imported
    file: str
    line: int
    guarded: bool


# ------------------------------------------------------------------------------------------------ scanning the pack
def shipped_files(repo: pathlib.Path = REPO_ROOT) -> list[pathlib.Path]:
    files = []
    for entry in SHIPPED:
        path = repo / entry
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _is_comfy(dotted: str) -> bool:
    return dotted.split(".", 1)[0] in COMFY_MODULES


def _is_class_name(name: str) -> bool:
    return name[:1].isupper() and not name.isupper()


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Scanner(ast.NodeVisitor):
    """Walks one file in order, with a scope stack of names bound to ComfyUI modules or classes."""

    def __init__(self, rel: str, tree: ast.Module):
        self.rel = rel
        self.uses: list[Use] = []
        self.scopes: list[dict] = [{}]
        self.strings: list[dict] = [{}]  # loop variables over tuples of constant strings
        self.guard = 0
        self.modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                        if _is_comfy(a.name)}
        self.modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
                         and n.module and _is_comfy(n.module)}
        self.in_fstring: set[int] = set()
        self.suspects: list[str] = []
        self.class_roots: dict[str, tuple[str, str]] = {}  # class -> (module, ComfyUI base class) it derives from
        self.local_classes: dict[str, ast.ClassDef] = {}
        self.aliases_seen: set[str] = set()
        self.hasattr_guarded: set[str] = set()  # getattr(x, n) arguments a comprehension checks with hasattr first

    # -------------------------------------------------------------------------------- bindings
    def _bind(self, name: str, ref) -> None:
        self.scopes[-1][name] = ref

    def _lookup(self, name: str):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def _record(self, module: str, chain: list[str], node, guarded: bool = False) -> None:
        symbol = ""
        if chain:
            symbol = chain[0] + (f".{chain[1]}" if len(chain) > 1 and _is_class_name(chain[0]) else "")
        self.uses.append(Use(module, symbol, self.rel, node.lineno, guarded or self.guard > 0))

    def _split(self, ref, attrs: list[str]) -> tuple[str, list[str]]:
        """(module, names after it) for ref ("module", dotted) or ("class", module, name) plus attributes."""
        if ref[0] == "class":
            return ref[1], [ref[2]] + attrs
        full = ref[1].split(".") + attrs
        module = ref[1]
        for i in range(len(full), len(ref[1].split(".")), -1):  # longest prefix this file imports as a module
            if ".".join(full[:i]) in self.modules:
                module = ".".join(full[:i])
                break
        return module, full[len(module.split(".")):]

    def _record_ref(self, ref, attrs: list[str], node, guarded: bool = False) -> None:
        self._record(*self._split(ref, attrs), node, guarded)

    # -------------------------------------------------------------------------------- module references
    def _module_ref(self, node) -> str | None:
        """X for importlib.import_module("X"), sys.modules["X"] and sys.modules.get("X") with X in ComfyUI."""
        name = None
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "import_module" and isinstance(f.value, ast.Name) \
                    and f.value.id == "importlib":
                name = _const_str(node.args[0])
            elif isinstance(f, ast.Attribute) and f.attr == "get" and self._is_sys_modules(f.value):
                name = _const_str(node.args[0])
        elif isinstance(node, ast.Subscript) and self._is_sys_modules(node.value):
            name = _const_str(node.slice)
        return name if name and _is_comfy(name) else None

    @staticmethod
    def _is_sys_modules(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "modules" and isinstance(node.value, ast.Name) \
            and node.value.id == "sys"

    def _resolve(self, node):
        """(ref, attrs, base) for an expression that is a ComfyUI name followed by attributes, else None."""
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            ref = self._lookup(node.id)
            return (ref, attrs, None) if ref else None
        module = self._module_ref(node)
        return (("module", module), attrs, node) if module else None

    # -------------------------------------------------------------------------------- visitors
    def visit_Import(self, node):
        for a in node.names:
            if not _is_comfy(a.name):
                continue
            self._record(a.name, [], node)
            if a.asname:
                self._bind(a.asname, ("module", a.name))
            else:
                self._bind(a.name.split(".")[0], ("module", a.name.split(".")[0]))

    def visit_ImportFrom(self, node):
        if node.level or not node.module or not _is_comfy(node.module):
            return
        for a in node.names:
            self._record(node.module, [a.name], node)
            ref = ("class", node.module, a.name) if _is_class_name(a.name) else ("module", f"{node.module}.{a.name}")
            self._bind(a.asname or a.name, ref)

    def visit_Try(self, node):
        caught = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)} if h.type is not None else {"BaseException"}
        guarded = bool(caught & _GUARD_ERRORS)
        self.guard += guarded
        for stmt in node.body:
            self.visit(stmt)
        self.guard -= guarded
        for part in (node.handlers, node.orelse, node.finalbody):
            for stmt in part:
                self.visit(stmt)

    visit_TryStar = visit_Try

    def _function(self, node):
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.scopes.append({})
        aliases = PARAMETER_ALIASES.get(self.rel, {})
        params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + \
            [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
        for arg in params:
            self._bind(arg.arg, ("module", aliases[arg.arg]) if arg.arg in aliases else None)  # shadows outer names
            if arg.arg in aliases:
                self.aliases_seen.add(arg.arg)
            elif arg.arg in COMFY_MODULES | {"io"} and any(
                    isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == arg.arg
                    for n in ast.walk(node)):
                self.suspects.append(f"{self.rel}:{node.lineno}: parameter {arg.arg!r}")
        for stmt in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(stmt)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _comprehension(self, node):
        self.scopes.append({})
        self.strings.append({})
        for gen in node.generators:
            self.visit(gen.iter)
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    self._bind(target.id, None)
            values = gen.iter.elts if isinstance(gen.iter, (ast.Tuple, ast.List)) else []
            if isinstance(gen.target, ast.Name) and values and all(_const_str(v) for v in values):
                self.strings[-1][gen.target.id] = [v.value for v in values]
        guards = [c for gen in node.generators for c in gen.ifs]
        for cond in guards:
            self.visit(cond)
        hasattrs = {ast.dump(c.args[1]) for cond in guards for c in ast.walk(cond)
                    if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == "hasattr"
                    and len(c.args) == 2}
        outer, self.hasattr_guarded = self.hasattr_guarded, self.hasattr_guarded | hasattrs
        for part in ((node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)):
            self.visit(part)
        self.hasattr_guarded = outer
        self.strings.pop()
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_ClassDef(self, node):
        roots = []
        for base in node.bases:
            found = self._resolve(base)
            if found and found[0]:
                module, chain = self._split(found[0], found[1])
                if len(chain) == 1 and _is_class_name(chain[0]):
                    roots.append((module, chain[0]))
            elif isinstance(base, ast.Name) and base.id in self.class_roots:
                roots.append(self.class_roots[base.id])
        if roots:
            self.class_roots[node.name] = roots[0]
            for base in node.bases:  # a mixin next to a ComfyUI base: its super() calls reach that base
                if isinstance(base, ast.Name) and base.id in self.local_classes and base.id not in self.class_roots:
                    self.class_roots[base.id] = roots[0]
        self.local_classes[node.name] = node
        self.generic_visit(node)

    def _local_after(self, name: str) -> set[str]:
        """This file's classes that super() in class ``name`` can reach before the ComfyUI base: its local bases,
        for a mixin the local classes listed after it, and their local bases in turn."""
        todo = [b.id for b in self.local_classes[name].bases if isinstance(b, ast.Name)]
        for cls in self.local_classes.values():
            names = [b.id if isinstance(b, ast.Name) else None for b in cls.bases]
            if name in names:
                todo += [n for n in names[names.index(name) + 1:] if n]
        seen: set[str] = set()
        while todo:
            n = todo.pop()
            if n in self.local_classes and n not in seen:
                seen.add(n)
                todo += [b.id for b in self.local_classes[n].bases if isinstance(b, ast.Name)]
        return seen

    def super_calls(self) -> None:
        """Records ``super().name(...)`` reaching a ComfyUI base class (from a class derived from it or a mixin used
        next to it); calls that land on a method this file defines first are left out."""
        for name, (module, base) in self.class_roots.items():
            local = {f.name for n in self._local_after(name) for f in self.local_classes[n].body
                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for node in ast.walk(self.local_classes[name]):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name) and \
                        node.func.value.func.id == "super" and node.func.attr not in local:
                    self.uses.append(Use(module, f"{base}.{node.func.attr}", self.rel, node.lineno, False))

    def visit_Assign(self, node):
        self.visit(node.value)
        module = self._module_ref(node.value)
        found = self._resolve(node.value) if isinstance(node.value, ast.Attribute) else None
        for target in node.targets:
            self.visit(target)
            if isinstance(target, ast.Name):
                if module:
                    self._bind(target.id, ("module", module))
                elif found and found[0][0] == "module" and not found[1]:
                    self._bind(target.id, found[0])
                elif self._lookup(target.id):
                    self.scopes[-1][target.id] = None  # rebound to something else

    def visit_Attribute(self, node):
        found = self._resolve(node)
        if found is None:
            self.generic_visit(node)
            return
        ref, attrs, base = found
        self._record_ref(ref, attrs, node)
        if base is not None:
            self.generic_visit(base)

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr") and len(node.args) >= 2:
            found = self._resolve(node.args[0])
            names = [_const_str(node.args[1])] if _const_str(node.args[1]) else []
            if not names and isinstance(node.args[1], ast.Name):
                names = next((s[node.args[1].id] for s in reversed(self.strings) if node.args[1].id in s), [])
            if found and names:
                guarded = f.id == "hasattr" or len(node.args) > 2 or ast.dump(node.args[1]) in self.hasattr_guarded
                for name in names:
                    self._record_ref(found[0], found[1] + [name], node, guarded)
                for arg in node.args[2:]:
                    self.visit(arg)
                return
        module = self._module_ref(node)
        if module and isinstance(f, ast.Attribute) and f.attr == "import_module":
            self._record(module, [], node)
        self.generic_visit(node)

    def visit_JoinedStr(self, node):
        for i, part in enumerate(node.values):
            if i and isinstance(part, ast.Constant):
                self.in_fstring.add(id(part))
        self.generic_visit(node)

    def visit_Constant(self, node):
        if id(node) in self.in_fstring or not isinstance(node.value, str) or not _ROUTE.match(node.value):
            return
        path = node.value.split("?", 1)[0]
        self.uses.append(Use(HTTP, path + "{}" if path.endswith("/") else path, self.rel, node.lineno, False))


def _scanners(repo: pathlib.Path):
    for path in shipped_files(repo):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        scanner = _Scanner(path.relative_to(repo).as_posix(), tree)
        scanner.visit(tree)
        scanner.super_calls()
        yield scanner


def scan(repo: pathlib.Path = REPO_ROOT) -> list[Use]:
    uses = [u for s in _scanners(repo) for u in s.uses]
    return sorted(set(uses), key=lambda u: (u.module, u.symbol, u.file, u.line))


def suspect_parameters(repo: pathlib.Path = REPO_ROOT) -> list[str]:
    """Problems with PARAMETER_ALIASES: parameters named like a ComfyUI module (used with attributes) that it does
    not list, and entries no function has any more."""
    out, seen = [], {}
    for s in _scanners(repo):
        out += s.suspects
        seen[s.rel] = s.aliases_seen
    for rel, aliases in PARAMETER_ALIASES.items():
        out += [f"{rel}: no parameter {name!r} any more" for name in aliases if name not in seen.get(rel, set())]
    return out


@dataclasses.dataclass
class Row:
    module: str
    symbol: str
    files: list[str]
    surface: str
    why: str = ""


def surface(module: str, symbol: str) -> str:
    public = module == HTTP or module.startswith(PUBLIC_MODULES) or (module, symbol) in PUBLIC_SYMBOLS
    return "public" if public else "internal"


def rows(uses: list[Use]) -> list[Row]:
    """One row per (module, symbol); a module only imported (no symbol used) gets one "" row."""
    by_key: dict[tuple, list[Use]] = {}
    for u in uses:
        by_key.setdefault((u.module, u.symbol), []).append(u)
    with_symbols = {m for m, s in by_key if s}
    out = []
    for (module, symbol), us in sorted(by_key.items()):
        if not symbol and module in with_symbols:
            continue
        kind = surface(module, symbol) + (", optional" if all(u.guarded for u in us) else "")
        out.append(Row(module, symbol, sorted({shown(u.file) for u in us}), kind))
    return out


def shown(path: str) -> str:
    """A file as the doc shows it: freecure_core/comfy_bridge/x.py -> comfy_bridge/x.py."""
    return path.removeprefix("freecure_core/")


# ------------------------------------------------------------------------------------------------ the doc
BEGIN = f"<!-- BEGIN GENERATED by `{WRITE_COMMAND}`: edit only the why column -->"
END = "<!-- END GENERATED -->"
TODO = "TODO: say why"
HEADER = "| symbol | used in | why | surface |\n|---|---|---|---|"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _module_title(module: str) -> str:
    return f"### {HTTP} (`server.PromptServer`)" if module == HTTP else f"### `{module}`"


def render(table: list[Row]) -> str:
    parts, current = [BEGIN], None
    for r in table:
        if r.module != current:
            current = r.module
            parts += ["", _module_title(r.module), "", HEADER]
        sym = f"`{r.symbol}`" if r.symbol else "(module import)"
        parts.append(f"| {sym} | {', '.join(r.files)} | {r.why or TODO} | {r.surface} |")
    return "\n".join(parts + ["", END])


def parse(text: str) -> list[Row]:
    """The rows of the generated block of the doc (module from each ### heading)."""
    if BEGIN not in text or END not in text:
        return []
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    out, module = [], None
    for line in block.splitlines():
        if line.startswith("### "):
            module = HTTP if line.startswith(f"### {HTTP}") else line[4:].strip().strip("`")
        elif line.startswith("| ") and not line.startswith(("| symbol", "|---")) and module:
            cells = [c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]]
            if len(cells) != 4:
                raise ValueError(f"{DOC.name}: table row with {len(cells)} cells (want 4): {line}")
            sym = "" if cells[0] == "(module import)" else cells[0].strip("`")
            why = "" if cells[2] == TODO else cells[2]
            out.append(Row(module, sym, [f.strip() for f in cells[1].split(",") if f.strip()], cells[3], why))
    return out


def updated_doc(text: str, table: list[Row]) -> str:
    """The doc with its generated block rewritten from ``table``, keeping the why of every row still there."""
    whys = {(r.module, r.symbol): r.why for r in parse(text)}
    for r in table:
        r.why = whys.get((r.module, r.symbol), "")
    block = render(table)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def differences(doc_rows: list[Row], table: list[Row]) -> list[str]:
    """What the doc says that the code does not (and back), one line each; empty when they agree."""
    doc = {(r.module, r.symbol): r for r in doc_rows}
    code = {(r.module, r.symbol): r for r in table}
    name = lambda k: f"{k[0]}: {k[1] or '(module import)'}"  # noqa: E731
    out = [f"used in the code, missing from the doc: {name(k)} ({', '.join(code[k].files)})"
           for k in code if k not in doc]
    out += [f"listed in the doc, no longer used: {name(k)}" for k in doc if k not in code]
    for k in code.keys() & doc.keys():
        if code[k].files != doc[k].files or code[k].surface != doc[k].surface:
            out.append(f"{name(k)}: doc says {', '.join(doc[k].files)} / {doc[k].surface}, code has "
                       f"{', '.join(code[k].files)} / {code[k].surface}")
        if not doc[k].why:
            out.append(f"{name(k)}: the why column is empty or TODO; write one line on why the pack needs it")
    return sorted(out)


# ------------------------------------------------------------------------------------------------ a ComfyUI tree
class ComfyTree:
    """Reads a ComfyUI checkout's source to say whether it defines a module or symbol (nothing is imported)."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self._parsed: dict[str, dict | None] = {}
        vf = self.root / "comfyui_version.py"
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", vf.read_text()) if vf.is_file() else None
        self.version = m.group(1) if m else "unknown"

    def top_level_modules(self) -> set[str]:
        out = set()
        for p in self.root.iterdir():
            if p.name in NOT_MODULES or p.name.startswith("."):
                continue
            if p.suffix == ".py" and p.is_file():
                out.add(p.stem)
            elif p.is_dir() and p.name.isidentifier() and any(p.glob("*.py")):
                out.add(p.name)
        return out

    def _path(self, dotted: str) -> pathlib.Path | None:
        base = self.root.joinpath(*dotted.split("."))
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.is_file():
                return p
        return base if base.is_dir() else None  # namespace package

    def is_module(self, dotted: str) -> bool:
        return self._path(dotted) is not None

    def _names(self, dotted: str) -> dict:
        """Module-level names of a module: name -> ("class", ClassDef) | ("value",) | ("module", dotted) |
        ("from", module, name); "*" -> list of star-imported modules."""
        if dotted in self._parsed:
            return self._parsed[dotted] or {}
        path = self._path(dotted)
        names: dict = {"*": []}
        self._parsed[dotted] = names
        if path is None or path.is_dir():
            return names
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
        self._collect(tree.body, names, package)
        for node in ast.walk(tree):  # `global X` then X = ... inside functions
            if isinstance(node, ast.Global):
                for n in node.names:
                    names.setdefault(n, ("value",))
        return names

    def _collect(self, body, names: dict, package: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                names[node.name] = ("class", node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names[node.name] = ("value",)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            names[n.id] = ("value",)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    names[a.asname or a.name.split(".")[0]] = ("module", a.name if a.asname else a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parent = ".".join(parts[:len(parts) - node.level + 1])
                    module = f"{parent}.{module}".strip(".") if module else parent
                for a in node.names:
                    if a.name == "*":
                        names["*"].append(module)
                    else:
                        names[a.asname or a.name] = ("from", module, a.name)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or \
                    type(node).__name__ == "TryStar":
                for part in ("body", "orelse", "finalbody"):
                    self._collect(getattr(node, part, []), names, package)
                for h in getattr(node, "handlers", []):
                    self._collect(h.body, names, package)

    def _member(self, dotted: str, name: str, depth: int = 0):
        """What ``name`` is in module ``dotted`` (following imports), or None."""
        if depth > 8:
            return None
        if self.is_module(f"{dotted}.{name}"):
            return ("module", f"{dotted}.{name}")
        names = self._names(dotted)
        entry = names.get(name)
        if entry is None:
            for star in names.get("*", []):
                found = self._member(star, name, depth + 1)
                if found:
                    return found
            return None
        if entry[0] == "class":
            return ("class", entry[1], dotted)
        if entry[0] == "module":
            return entry if self.is_module(entry[1]) else ("value",)  # a module outside ComfyUI (torch, ...)
        if entry[0] == "from":
            return self._member(entry[1], entry[2], depth + 1) if self.is_module(entry[1]) else ("value",)
        return entry

    def _class_has(self, cls: ast.ClassDef, module: str, attr: str, depth: int = 0) -> bool:
        if depth > 8:
            return False
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attr:
                return True
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                    return True
        for node in ast.walk(cls):  # self.attr = ... / Class.attr = ... in its methods
            if isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", cls.name):
                return True
        for base in cls.bases:
            chain = []
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if not isinstance(base, ast.Name):
                continue
            found = self._member(module, base.id)
            for part in chain:
                found = self._member(found[1], part) if found and found[0] == "module" else None
            if found and found[0] == "class" and self._class_has(found[1], found[2], attr, depth + 1):
                return True
        return False

    def lookup(self, module: str, symbol: str) -> str | None:
        """None when the tree has ``module`` and ``symbol`` (a route for HTTP), else what is missing."""
        if module == HTTP:
            return None if symbol in self.routes() else f"no server route {symbol}"
        parts = module.split(".")
        i = len(parts)
        while i and not self.is_module(".".join(parts[:i])):
            i -= 1
        if not i:
            return f"no module {module}"
        found = ("module", ".".join(parts[:i]))
        for name in parts[i:] + (symbol.split(".") if symbol else []):
            if found[0] == "module":
                found = self._member(found[1], name)
            elif found[0] == "class":
                found = ("value",) if self._class_has(found[1], found[2], name) else None
            else:
                return None  # a value: what it holds is not read from source
            if found is None:
                return f"no {name} in {module}" + (f" ({symbol})" if "." in symbol else "")
        return None

    def routes(self) -> set[str]:
        """Paths registered with ``@routes.get/post/...("...")`` in server.py, parameters written ``{}``."""
        out = set()
        server = self.root / "server.py"
        tree = ast.parse(server.read_text(encoding="utf-8")) if server.is_file() else ast.Module(body=[])
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("get", "post", "put", "delete", "patch") and node.args and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("routes"):
                path = _const_str(node.args[0])
                if path:
                    out.add(re.sub(r"\{[^}]*\}", "{}", path))
        return out


def missing_in(tree: ComfyTree, table: list[Row]) -> list[tuple[Row, str]]:
    return [(r, why) for r in table for why in [tree.lookup(r.module, r.symbol)] if why]


# ------------------------------------------------------------------------------------------------ command line
def main(argv: list[str]) -> int:
    uses = scan()
    table = rows(uses)
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# ComfyUI compatibility\n"
    if "--write" in argv:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(updated_doc(text, table), encoding="utf-8")
        todo = [r for r in table if not r.why]
        print(f"wrote {DOC.relative_to(REPO_ROOT)}: {len(table)} rows" +
              (f", {len(todo)} need a why (marked {TODO!r})" if todo else ""))
        return 0
    for u in uses:
        print(f"{u.module:40} {u.symbol or '(module import)':36} {u.file}:{u.line}{'  guarded' if u.guarded else ''}")
    diff = differences(parse(text), table)
    print("\n".join(["", f"{DOC.relative_to(REPO_ROOT)} is out of date (run {WRITE_COMMAND}):"] + diff)
          if diff else f"\n{DOC.relative_to(REPO_ROOT)} matches the code ({len(table)} rows)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
