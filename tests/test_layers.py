"""The package's layers and import graph: no import loops, no module that needs another imported first,
and the runtime core free of ROS, training and tools.

Layers (README "Layout"): the runtime core (``av_snn_ros`` outside the folders below) imports neither
``rclpy``, nor ``av_snn_training``, nor ``av_snn_ros.tools``; ``ros/`` is the only ROS-aware part and
imports neither training nor tools; ``tools/`` (export, ONNX checks, bench, profiling) may use all of them.
Two checks, both needed: importing each module alone in a clean interpreter state (with the forbidden
packages blocked) catches loops and order dependencies at import time; reading every ``import``
statement, function-level ones included, catches the lazy imports that only run when a function is
called (the export <-> onnx_checks <-> tensorrt_backend loop was one).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'av_snn_ros'
#: folders outside the runtime core; replay/ starts the node graph through rclpy (a tool, pending a move
#: under tools/ once its owner's work is merged)
ROS_LAYER = ('ros',)
TOOL_LAYERS = ('tools', 'replay')
#: compatibility aliases for callers outside the package (the training package imports write_model_card
#: from here); they are not runtime code, so the core rules do not apply to them
COMPAT_ALIASES = ('av_snn_ros.export',)
#: what each layer must not import (top-level packages or package prefixes)
FORBIDDEN = {
    'core': ('rclpy', 'av_snn_training', 'av_snn_ros.tools', 'av_snn_ros.ros', 'av_snn_ros.replay'),
    'ros': ('av_snn_training', 'av_snn_ros.tools'),
    'tools': (),
}


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix('')
    parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
    return '.'.join(parts)


def modules(root: Path, package: str = PACKAGE) -> list[str]:
    """Every module of ``package`` under ``root`` (``__main__`` excluded: running it is not importing it)."""
    return sorted(module_name(p, root) for p in (root / package).rglob('*.py') if p.name != '__main__.py')


def layer(name: str, package: str = PACKAGE) -> str:
    parts = name.split('.')
    if name in COMPAT_ALIASES:
        return 'tools'
    if len(parts) > 1 and parts[1] in ROS_LAYER:
        return 'ros'
    if len(parts) > 1 and parts[1] in TOOL_LAYERS:
        return 'tools'
    return 'core'


def imports_of(path: Path, name: str) -> set[str]:
    """Absolute names of everything ``path`` (module ``name``) imports, at any depth of the code."""
    is_pkg = path.name == '__init__.py'
    base = name.split('.') if is_pkg else name.split('.')[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = '.'.join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                stem = node.module or ''
            found.add(stem)
            # ``from . import x`` / ``from .pkg import mod``: the names may be submodules
            found.update(f'{stem}.{alias.name}' for alias in node.names)
    return found


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (parents of a module are not edges: Python loads them
    first anyway, and a submodule naming its own package is no loop)."""
    names = set(modules(root, package))
    graph = {}
    for name in names:
        path = root / Path(*name.split('.'))
        path = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
        targets = {t for t in imports_of(path, name) if t in names}
        graph[name] = {t for t in targets if t != name and not name.startswith(t + '.')}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def forbidden_imports(root: Path, package: str = PACKAGE) -> dict[str, list[str]]:
    """module -> the forbidden names its code imports anywhere (lazy imports included)."""
    bad = {}
    for name in modules(root, package):
        rules = FORBIDDEN[layer(name, package)]
        path = root / Path(*name.split('.'))
        path = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
        hits = sorted(t for t in imports_of(path, name)
                      if any(t == f or t.startswith(f + '.') for f in rules))
        hits = [t for t in hits if not any(t.startswith(h + '.') for h in hits)]   # X, not also X.name
        if hits:
            bad[name] = hits
    return bad


# ----------------------------------------------------------------------------- the checks on this repo

def test_no_import_loops_in_the_package():
    assert cycles(import_graph(ROOT)) == []


def test_the_core_imports_neither_ros_nor_training_nor_tools_anywhere():
    assert forbidden_imports(ROOT) == {}


_IMPORT_EACH_ALONE = textwrap.dedent('''
    import importlib, importlib.abc, json, sys
    blocked = []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + '.') for b in blocked):
                raise ImportError(f'{name} may not be imported by this layer')
            return None

    sys.meta_path.insert(0, Block())
    failures = {}
    for name, forbidden in json.loads(sys.argv[1]):
        for loaded in [m for m in sys.modules if m == 'av_snn_ros' or m.startswith('av_snn_ros.')]:
            del sys.modules[loaded]              # a clean package state for every module
        blocked[:] = forbidden
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failures[name] = f'{type(exc).__name__}: {exc}'
    print(json.dumps(failures))
''')


def test_each_module_imports_alone_with_its_layer_forbidden_packages_blocked():
    """One interpreter; before each module every av_snn_ros module is unloaded and the layer's forbidden
    packages are blocked. Core modules come first, so rclpy has never been loaded when they import."""
    order = {'core': 0, 'tools': 1, 'ros': 2}
    names = sorted(modules(ROOT), key=lambda n: (order[layer(n)], n))
    plan = [(n, list(FORBIDDEN[layer(n)])) for n in names]
    out = subprocess.run([sys.executable, '-c', _IMPORT_EACH_ALONE, json.dumps(plan)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


# ------------------------------------------------------------------- the checks can fail (planted faults)

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_lazy_three_module_loop_is_found(tmp_path):
    # the shape of the old export -> onnx_checks -> backends.tensorrt_backend -> export loop
    _write(tmp_path, {
        'av_snn_ros/__init__.py': '',
        'av_snn_ros/export.py': 'def f():\n    from .onnx_checks import g\n',
        'av_snn_ros/onnx_checks.py': 'from .backends import tensorrt_backend\n',
        'av_snn_ros/backends/__init__.py': '',
        'av_snn_ros/backends/tensorrt_backend.py': 'def h():\n    from ..export import f\n',
        'av_snn_ros/contract.py': 'X = 1\n',
    })
    assert cycles(import_graph(tmp_path)) == [['av_snn_ros.backends.tensorrt_backend', 'av_snn_ros.export',
                                               'av_snn_ros.onnx_checks']]


def test_a_lazy_training_import_in_the_core_is_found(tmp_path):
    _write(tmp_path, {
        'av_snn_ros/__init__.py': '',
        'av_snn_ros/backends/__init__.py': '',
        'av_snn_ros/backends/base.py': 'def t():\n    from ..tools.profiling import time_interleaved\n',
        'av_snn_ros/bag.py': 'def main():\n    from av_snn_training.data.av_digits import AVDigits\n',
        'av_snn_ros/tools/__init__.py': '',
        'av_snn_ros/tools/profiling.py': 'import av_snn_training\n',
        'av_snn_ros/ros/__init__.py': '',
        'av_snn_ros/ros/node.py': 'import rclpy\n',
    })
    assert forbidden_imports(tmp_path) == {'av_snn_ros.backends.base': ['av_snn_ros.tools.profiling'],
                                           'av_snn_ros.bag': ['av_snn_training.data.av_digits']}


def test_every_cli_subcommand_module_exists_and_has_the_cli_interface():
    """``av-snn`` dispatches by module path: a moved module must be moved in cli.SUBCOMMANDS too."""
    import importlib

    from av_snn_ros.cli import SUBCOMMANDS
    for name, (module_name, _) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(getattr(module, 'add_arguments', None)) and callable(getattr(module, 'main', None)), name
