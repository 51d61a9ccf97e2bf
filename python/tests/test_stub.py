"""``_prospeo.pyi`` declares exactly what the extension module exports, with its signatures."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import prospeo
from prospeo import _prospeo

STUB = Path(prospeo.__file__).with_name("_prospeo.pyi")


def public(name: str) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return name == "__version__" or name.startswith("__datafusion_")
    return not name.startswith("_")


def parse_stub() -> tuple[dict[str, ast.AST], dict[str, dict[str, ast.AST]]]:
    """Module-level names and, for each class, its members (``__new__`` is the constructor)."""
    tree = ast.parse(STUB.read_text())
    names: dict[str, ast.AST] = {}
    members: dict[str, dict[str, ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        if isinstance(node, ast.ClassDef):
            members[node.name] = {
                item.name: item for item in node.body if isinstance(item, ast.FunctionDef)
            }
    return {k: v for k, v in names.items() if public(k)}, members


def stub_parameters(fn: ast.FunctionDef) -> list[str]:
    """Parameter names as ``__text_signature__`` spells them (``*`` for keyword-only)."""
    args = fn.args
    out = [a.arg for a in args.posonlyargs + args.args]
    if args.vararg:
        out.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        out.append("*")
    out += [a.arg for a in args.kwonlyargs]
    return out


def runtime_parameters(obj) -> list[str] | None:
    text = getattr(obj, "__text_signature__", None)
    if not text:
        return None
    sig = inspect.signature(obj)
    out: list[str] = []
    star = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        out.append(p.name)
    return out


def test_the_stub_declares_every_public_name_and_no_other():
    names, _ = parse_stub()
    exported = {n for n in dir(_prospeo) if public(n)}
    assert set(names) == exported


def test_the_stub_declares_every_public_member_of_each_class():
    names, members = parse_stub()
    classes = [n for n in dir(_prospeo) if isinstance(getattr(_prospeo, n), type)]
    assert classes, "the module exports classes"
    for name in classes:
        assert isinstance(names.get(name), ast.ClassDef), name
        declared = {m for m in members[name] if public(m)}
        exported = {m for m in dir(getattr(_prospeo, name)) if public(m)}
        assert declared == exported, name


def test_the_stub_signatures_match_the_extension():
    names, members = parse_stub()
    checked = 0
    for name, node in names.items():
        obj = getattr(_prospeo, name)
        if isinstance(node, ast.FunctionDef):
            assert stub_parameters(node) == runtime_parameters(obj), name
            checked += 1
        elif isinstance(node, ast.ClassDef):
            for member, fn in members[name].items():
                if member == "__new__":
                    expected = runtime_parameters(obj)
                    if expected is not None:
                        assert stub_parameters(fn)[1:] == expected, f"{name}()"
                        checked += 1
                    continue
                if not public(member):
                    continue
                attr = inspect.getattr_static(obj, member)
                is_property = any(
                    isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list
                )
                if is_property:
                    assert type(attr).__name__ in ("getset_descriptor", "property"), (
                        f"{name}.{member} is a property in the stub"
                    )
                    continue
                expected = runtime_parameters(getattr(obj, member))
                if expected is not None:
                    got = stub_parameters(fn)
                    assert got[0] == "self"
                    assert got == [p.lstrip("$") for p in expected], f"{name}.{member}"
                    checked += 1
    assert checked >= 10


def test_the_stub_constants_have_the_runtime_types():
    assert isinstance(_prospeo.__version__, str) and _prospeo.__version__ == prospeo.__version__
    assert isinstance(_prospeo.DATAFUSION_MAJOR, int)
    assert _prospeo.summary_key() == prospeo.SUMMARY_KEY == "prospeo.summary"
