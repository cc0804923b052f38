"""The type stub python/stackproof/_core.pyi against the installed core: the same
names both ways (a name added to the binding without the stub fails here), the same
parameters (names, kinds, defaults) wherever pyo3 gives a text signature, and every
class member the stub declares present at runtime with the same shape.

The installed module is inspected in a child python3 (PYTHONPATH: the prefix's
package, as tests/e2e/test_api.py runs it), so this process imports nothing of it."""
import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, stackproof_prefix

STUB = REPO / "python" / "stackproof" / "_core.pyi"

# Attributes every extension module or class has, which no stub declares.
MODULE_ATTRS = {"__all__", "__doc__", "__file__", "__loader__", "__name__", "__package__", "__spec__"}
CLASS_ATTRS = {"__doc__", "__module__", "__new__"}

# Runs in the child: everything the test compares, as JSON.
INTROSPECT = r'''
import inspect, json, sys
from stackproof import _core

def sig(obj):
    try:
        s = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    out = []
    for p in s.parameters.values():
        d = p.default
        out.append([p.name, p.kind.name, d is not inspect.Parameter.empty,
                    None if d is inspect.Parameter.empty else repr(d)])
    return out

doc = {"file": _core.__file__, "all": list(getattr(_core, "__all__", [])), "names": {}}
for name in dir(_core):
    obj = getattr(_core, name)
    if isinstance(obj, type):
        members = {}
        for m, v in vars(obj).items():
            kind = type(v).__name__
            members[m] = {"kind": "property" if kind in ("getset_descriptor", "member_descriptor") else kind,
                          "sig": sig(getattr(obj, m)) if callable(v) else None}
        doc["names"][name] = {"what": "class", "init": getattr(obj, "__text_signature__", None),
                              "sig": sig(obj) if getattr(obj, "__text_signature__", None) else None,
                              "members": members}
    elif callable(obj):
        doc["names"][name] = {"what": "function", "sig": sig(obj)}
    else:
        doc["names"][name] = {"what": "value", "type": type(obj).__name__}
json.dump(doc, sys.stdout)
'''


def installed_python():
    return stackproof_prefix() / "lib" / "stackproof" / "python"


@pytest.fixture(scope="module")
def runtime():
    py = installed_python()
    if not (py / "stackproof" / "_core.abi3.so").is_file():
        pytest.fail("stackproof is not installed in %s (run ./install.sh --prefix tests/build/prefix "
                    "--no-gdbinit --no-demo)" % stackproof_prefix())
    env = dict(os.environ)
    env["PYTHONPATH"] = str(py)
    p = subprocess.run([sys.executable, "-c", INTROSPECT], capture_output=True, text=True, env=env,
                       timeout=60, cwd=str(py))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["file"].startswith(str(py)), doc["file"]
    return doc


# ---- the stub, parsed ----

def is_public(name):
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def stub_params(fn, first=None):
    """[name, kind, has default, default repr or None] per parameter, as inspect reports them."""
    a = fn.args
    positional = [(x, "POSITIONAL_ONLY") for x in a.posonlyargs] + [(x, "POSITIONAL_OR_KEYWORD") for x in a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [[x.arg, kind, d is not None, d] for (x, kind), d in zip(positional, defaults)]
    if a.vararg:
        out.append([a.vararg.arg, "VAR_POSITIONAL", False, None])
    out += [[x.arg, "KEYWORD_ONLY", d is not None, d] for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append([a.kwarg.arg, "VAR_KEYWORD", False, None])
    if first:
        assert out and out[0][0] == first, (fn.name, out)
        out = out[1:]
    return out


def is_property(fn):
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)


def has_docstring(node):
    return ast.get_docstring(node) is not None


class Stub:
    def __init__(self, path):
        tree = ast.parse(path.read_text(), str(path))
        self.functions, self.classes, self.values = {}, {}, {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                self.values[node.target.id] = node
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        self.values[t.id] = node

    def public_names(self):
        names = list(self.functions) + list(self.classes) + list(self.values)
        return {n for n in names if is_public(n) and n not in MODULE_ATTRS}

    def all(self):
        return ast.literal_eval(self.values["__all__"].value)

    def members(self, cls):
        """name -> [FunctionDef...] (overloads together) and annotated attributes."""
        out = {}
        for node in self.classes[cls].body:
            if isinstance(node, ast.FunctionDef):
                out.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                out[node.target.id] = [node]
        return out


@pytest.fixture(scope="module")
def stub():
    return Stub(STUB)


def same_params(where, stub_sig, runtime_sig):
    def norm(p):
        name, kind, has_default, default = p
        return [name, kind, has_default]
    assert [norm(p) for p in stub_sig] == [norm(p) for p in runtime_sig], (where, stub_sig, runtime_sig)
    for (name, _k, _h, d), (_n, _k2, _h2, rd) in zip(stub_sig, runtime_sig):
        if d is None or rd in (None, "Ellipsis"):
            continue
        if isinstance(d, ast.Constant) and d.value is Ellipsis:
            continue
        assert repr(ast.literal_eval(d)) == rd, (where, name, ast.unparse(d), rd)


def generic(runtime_sig):
    """pyo3's `(*args, **kwargs)` for a slot it cannot describe (`__call__`)."""
    return runtime_sig is not None and [p[1] for p in runtime_sig] == ["VAR_POSITIONAL", "VAR_KEYWORD"]


# ---- the tests ----

def test_installed_package_ships_the_stub():
    pkg = installed_python() / "stackproof"
    assert (pkg / "_core.pyi").read_text() == STUB.read_text()
    assert (pkg / "py.typed").is_file()
    assert (REPO / "python" / "stackproof" / "py.typed").is_file()


def test_names_are_the_modules(runtime, stub):
    have = {n for n in runtime["names"] if is_public(n) and n not in MODULE_ATTRS}
    declared = stub.public_names()
    assert sorted(have - declared) == [], "exported by _core but not in _core.pyi"
    assert sorted(declared - have) == [], "in _core.pyi but not exported by _core"
    assert sorted(stub.all()) == sorted(runtime["all"]), "_core.__all__ differs from the stub's"
    assert set(stub.all()) == declared, "the stub's __all__ is not its names"


def test_each_name_is_what_the_stub_says(runtime, stub):
    for name in stub.functions:
        if is_public(name):
            assert runtime["names"][name]["what"] == "function", name
    for name in stub.classes:
        if is_public(name):
            assert runtime["names"][name]["what"] == "class", name
    for name, node in stub.values.items():
        if is_public(name) and name not in MODULE_ATTRS:
            got = runtime["names"][name]
            assert got["what"] == "value", name
            assert isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) == got["type"], name


def test_function_parameters_are_the_runtimes(runtime, stub):
    checked = 0
    for name, defs in stub.functions.items():
        if not is_public(name):
            continue
        assert len(defs) == 1, "overloaded module function %s: compare each overload by hand" % name
        got = runtime["names"][name]["sig"]
        if got is None:
            continue
        same_params(name, stub_params(defs[0]), got)
        checked += 1
    assert checked == len([n for n in stub.functions if is_public(n)]), "pyo3 gave every function a signature"


def test_class_members_exist_at_runtime(runtime, stub):
    for cls in stub.classes:
        if not is_public(cls):
            continue
        rt = runtime["names"][cls]
        members = stub.members(cls)
        # The constructor: pyo3's class text signature, or none (not constructible from
        # Python). pyo3 makes objects in __new__, so that is what the stub declares.
        assert "__init__" not in members, "%s: pyo3 classes have no __init__, declare __new__" % cls
        if rt["init"] is None:
            assert "__new__" not in members, "%s has no constructor at runtime" % cls
        else:
            assert "__new__" in members, "%s%s is constructible: the stub needs __new__" % (cls, rt["init"])
            same_params(cls + ".__new__", stub_params(members["__new__"][0], first="cls"), rt["sig"])
        for name, defs in members.items():
            if name == "__new__":
                continue
            where = "%s.%s" % (cls, name)
            assert name in rt["members"], "%s is in the stub but not at runtime" % where
            got = rt["members"][name]
            if isinstance(defs[0], ast.AnnAssign) or is_property(defs[0]):
                assert got["kind"] == "property", (where, got["kind"])
                continue
            assert got["kind"] != "property", "%s is a property at runtime" % where
            if got["sig"] is None:
                continue
            assert got["sig"][0][0] == "self", (where, got["sig"])
            if generic(got["sig"][1:]):
                continue
            for d in defs:  # every overload has the runtime's parameters
                same_params(where, stub_params(d, first="self"), got["sig"][1:])
        extra = {m for m in rt["members"] if m not in CLASS_ATTRS and is_public(m)} - set(members)
        assert sorted(extra) == [], "%s has members the stub does not declare" % cls


def test_every_public_stub_name_has_a_docstring(stub):
    missing = [n for n, defs in stub.functions.items() if is_public(n) and not any(map(has_docstring, defs))]
    for cls, node in stub.classes.items():
        if not is_public(cls):
            continue
        if not has_docstring(node):
            missing.append(cls)
        for name, defs in stub.members(cls).items():
            if isinstance(defs[0], ast.FunctionDef) and not any(map(has_docstring, defs)):
                missing.append("%s.%s" % (cls, name))
    assert missing == []
