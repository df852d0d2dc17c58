# -*- coding: utf-8 -*-
"""The layers of plugins/module_utils (docs/dev/architecture.md), read from the source with ast.

Imports run one way: modules -> common -> openstack/, libvirt/ -> core/.  A core file imports
nothing outside core/; a backend package imports core/ and itself, never the other backend nor
common; every vmops import sits at the top of its file (an import inside a function hides a circle
from the reader, not from ansible-core's packager); the files import no circle; every import names
a module or a name that exists.  And the code and its docs speak of the collection only: no paths to
scratch files or folders outside the repository.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import os
import re

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
COLLECTION = 'ansible_collections.vmops.lifecycle'
MODULE_UTILS = COLLECTION + '.plugins.module_utils'
SCANNED = ('plugins/module_utils', 'plugins/modules', 'plugins/inventory')
BACKENDS = ('openstack', 'libvirt')

# What each layer of module_utils may not import (by layer of the imported file).
FORBIDDEN = {
    'core': ('common', 'openstack', 'libvirt'),
    'openstack': ('common', 'libvirt'),
    'libvirt': ('common', 'openstack'),
}


# Reading the source --------------------------------------------------------------------------

class Source(object):
    """One .py file: its path in the repository, its dotted name, its tree."""

    def __init__(self, root, path):
        self.path = path
        parts = path[:-len('.py')].split('/')
        self.is_package = parts[-1] == '__init__'
        if self.is_package:
            parts = parts[:-1]
        self.name = '.'.join([COLLECTION] + parts)
        with open(os.path.join(root, path)) as handle:
            self.tree = ast.parse(handle.read(), filename=path)

    @property
    def package(self):
        return self.name if self.is_package else self.name.rpartition('.')[0]


class Import(object):
    """One imported vmops module: where (file, line), what (module, names), and whether at top level."""

    def __init__(self, source, node, module, names, top_level):
        self.source, self.line, self.module, self.names, self.top_level = source, node.lineno, module, names, top_level
        self.text = ast.dump(node) if not hasattr(ast, 'unparse') else ast.unparse(node)

    def __str__(self):
        return '%s:%d: %s' % (self.source.path, self.line, self.text)


def read_sources(root=REPO, folders=SCANNED):
    sources = {}
    for folder in folders:
        for directory, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
            for filename in sorted(filenames):
                if filename.endswith('.py'):
                    path = os.path.relpath(os.path.join(directory, filename), root).replace(os.sep, '/')
                    source = Source(root, path)
                    sources[source.name] = source
    return sources


def _nested_nodes(tree):
    """Every node with a flag: is it inside a function or class body (not at the file's top level)?"""
    stack = [(child, False) for child in ast.iter_child_nodes(tree)]
    while stack:
        node, nested = stack.pop()
        yield node, nested
        inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _absolute(source, node):
    if not node.level:
        return node.module
    base = source.package.split('.')
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def vmops_imports(source):
    """The imports of this collection's own code in one file (relative imports resolved)."""
    found = []
    for node, nested in _nested_nodes(source.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(COLLECTION + '.'):
                    found.append(Import(source, node, alias.name, [], not nested))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(source, node)
            if module and (module == COLLECTION or module.startswith(COLLECTION + '.')):
                found.append(Import(source, node, module, [alias.name for alias in node.names], not nested))
    return sorted(found, key=lambda item: (item.source.path, item.line))


def layer(name):
    """core, openstack, libvirt, common for module_utils; modules for a module; None otherwise."""
    if name.startswith(MODULE_UTILS + '.'):
        return name[len(MODULE_UTILS) + 1:].split('.')[0]
    if name.startswith(COLLECTION + '.plugins.modules.') or name.startswith(COLLECTION + '.plugins.inventory.'):
        return 'modules'
    return None


def targets(imported, sources):
    """The files one import loads: a name that is a module counts as that module, else the module itself."""
    files = [imported.module] if imported.module in sources else []
    for name in imported.names:
        if imported.module + '.' + name in sources:
            files.append(imported.module + '.' + name)
    return files


def _bound_names(tree):
    """The names a module binds at its top level (inside top-level if/try/with too)."""
    names = set()
    statements = list(tree.body)
    while statements:
        statement = statements.pop()
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split('.')[0] for alias in statement.names)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
        for field in ('body', 'orelse', 'finalbody', 'handlers'):
            if isinstance(statement, (ast.If, ast.Try, ast.With, ast.For, ast.While, ast.ExceptHandler)):
                statements.extend(getattr(statement, field, []) or [])
    return names


def find_cycles(graph):
    """Each import circle once, as a path that ends where it starts."""
    cycles, seen, done = [], set(), set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path, stack = [], {}, [(start, iter(sorted(graph.get(start, ()))))]
        path.append(start)
        on_path[start] = 0
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                del on_path[node]
                done.add(node)
            elif child in on_path:
                cycle = path[on_path[child]:] + [child]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif child not in done:
                on_path[child] = len(path)
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return cycles


# The checks (each returns the violations, one line each, naming the file and the import) ----------

def backward_imports(sources):
    found = []
    for source in sources.values():
        forbidden = FORBIDDEN.get(layer(source.name), ())
        for imported in vmops_imports(source):
            bad = sorted(set(layer(target) for target in targets(imported, sources) or [imported.module]
                             if layer(target) in forbidden))
            if bad:
                found.append('%s (%s/ must not import %s)' % (imported, layer(source.name), ' or '.join(bad)))
    return found


def nested_imports(sources):
    return ['%s (inside a function or class; move it to the top of the file)' % imported
            for source in sources.values() for imported in vmops_imports(source) if not imported.top_level]


def missing_targets(sources):
    found = []
    for source in sources.values():
        for imported in vmops_imports(source):
            module = sources.get(imported.module)
            namespace = any(name.startswith(imported.module + '.') for name in sources)
            if module is None and not namespace:
                found.append('%s (no module %s)' % (imported, imported.module))
                continue
            bound = _bound_names(module.tree) if module else set()
            where = module.path if module else imported.module
            for name in imported.names:
                if name != '*' and name not in bound and imported.module + '.' + name not in sources:
                    found.append('%s (%s has no %s)' % (imported, where, name))
    return found


def import_graph(sources):
    graph = {}
    for source in sources.values():
        if layer(source.name) in ('modules', None):
            continue
        edges = graph.setdefault(source.name, set())
        for imported in vmops_imports(source):
            edges.update(target for target in targets(imported, sources) if layer(target) not in ('modules', None))
    return graph


def circles(sources):
    short = dict((name, source.path) for name, source in sources.items())
    return [' -> '.join(short[name] for name in cycle) for cycle in find_cycles(import_graph(sources))]


SOURCES = read_sources()


def _report(violations, what):
    return '%s:\n  %s' % (what, '\n  '.join(violations))


# The tests -----------------------------------------------------------------------------------

def test_the_scan_sees_every_layer():
    layers = set(layer(name) for name in SOURCES)
    assert set(['common', 'core', 'openstack', 'libvirt', 'modules']) <= layers, sorted(SOURCES)
    assert MODULE_UTILS + '.core.states' in SOURCES


def test_core_imports_nothing_outside_core():
    core = dict((n, s) for n, s in SOURCES.items() if layer(n) == 'core')
    violations = backward_imports(core)
    assert not violations, _report(violations, 'core/ imports common, openstack/ or libvirt/')


@pytest.mark.parametrize('backend', BACKENDS)
def test_a_backend_imports_neither_the_other_backend_nor_common(backend):
    files = dict((n, s) for n, s in SOURCES.items() if layer(n) == backend)
    violations = backward_imports(files)
    assert not violations, _report(violations, '%s/ imports common or the other backend' % backend)


def test_every_vmops_import_is_at_the_top_of_its_file():
    violations = nested_imports(SOURCES)
    assert not violations, _report(violations, 'vmops imports inside a function or class body')


def test_module_utils_import_no_circle():
    violations = circles(SOURCES)
    assert not violations, _report(violations, 'import circles among module_utils files')


def test_every_import_names_something_that_exists():
    violations = missing_targets(SOURCES)
    assert not violations, _report(violations, 'imports of modules or names that do not exist')


# The checks themselves, on a small tree with one violation of each kind ---------------------------

BAD_TREE = {
    'plugins/module_utils/common.py': 'def open_with():\n    pass\n',
    'plugins/module_utils/core/__init__.py': '',
    'plugins/module_utils/core/states.py': 'from %(mu)s.core.engine import run\nRUNNING = 1\n',
    'plugins/module_utils/core/engine.py': ('from %(mu)s.core.states import RUNNING, PAUSED\n'
                                            'def run():\n    from %(mu)s import common\n'),
    'plugins/module_utils/openstack/__init__.py': '',
    'plugins/module_utils/openstack/backend.py': ('from %(mu)s.core import states\n'
                                                  'from %(mu)s.libvirt import backend\n'
                                                  'from %(mu)s.core.nosuch import x\n'),
    'plugins/module_utils/libvirt/__init__.py': '',
    'plugins/module_utils/libvirt/backend.py': 'from ..core import states\nfrom .. import common\n',
    'plugins/modules/instance_state.py': 'from %(mu)s.common import open_with\n',
}


@pytest.fixture
def bad_sources(tmp_path):
    for path, text in BAD_TREE.items():
        target = tmp_path.joinpath(*path.split('/'))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text % {'mu': MODULE_UTILS})
    return read_sources(str(tmp_path))


def test_the_checks_name_each_offending_file_and_import(bad_sources):
    backward = backward_imports(bad_sources)
    assert len(backward) == 3
    assert any(line.startswith('plugins/module_utils/core/engine.py:3: from %s import common' % MODULE_UTILS)
               for line in backward)
    assert any('openstack/backend.py:2' in line and 'openstack/ must not import libvirt' in line for line in backward)
    assert any('libvirt/backend.py:2: from .. import common' in line for line in backward)
    assert nested_imports(bad_sources) == [
        'plugins/module_utils/core/engine.py:3: from %s import common '
        '(inside a function or class; move it to the top of the file)' % MODULE_UTILS]
    missing = missing_targets(bad_sources)
    assert len(missing) == 2 and any('no module %s.core.nosuch' % MODULE_UTILS in line for line in missing)
    assert any(line.startswith('plugins/module_utils/core/engine.py:1:') and 'core/states.py has no PAUSED' in line
               for line in missing)
    assert circles(bad_sources) == [
        'plugins/module_utils/core/engine.py -> plugins/module_utils/core/states.py -> '
        'plugins/module_utils/core/engine.py']


def test_find_cycles():
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': set()}) == []
    assert find_cycles({'a': {'a'}}) == [['a', 'a']]
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]


# No references outside the repository -----------------------------------------------------------

OUTSIDE = [
    (re.compile(r'/tmp/vmops-contracts?\b'), 'a scratch folder outside the repository'),
    (re.compile(r'(?<![\w.-])notes/'), 'a notes folder (scratch notes, not part of the collection)'),
    (re.compile(r'(?<![\w.-])/work/'), 'the development machine\'s workspace'),
]
SHIPPED = ('plugins', 'roles', 'docs')


def outside_references(root=REPO, folders=SHIPPED):
    found = []
    for folder in folders:
        for directory, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
            for filename in sorted(filenames):
                full = os.path.join(directory, filename)
                path = os.path.relpath(full, root).replace(os.sep, '/')
                with open(full, 'rb') as handle:
                    text = handle.read().decode('utf-8', 'replace')
                for number, line in enumerate(text.splitlines(), 1):
                    for pattern, why in OUTSIDE:
                        match = pattern.search(line)
                        if match:
                            found.append('%s:%d: %r (%s)' % (path, number, match.group(0), why))
    return found


def test_code_and_docs_name_no_path_outside_the_repository():
    violations = outside_references()
    assert not violations, _report(violations, 'references to files outside the repository')


def test_the_outside_check_catches_scratch_references(tmp_path):
    docs = tmp_path / 'docs'
    docs.mkdir()
    (docs / 'a.md').write_text('See /tmp/vmops-contracts/faults.md and notes/drain.md.\n'
                               'The sandbox: /var/tmp/vmops-sandbox/hosts.env; release_notes/ are fine.\n')
    assert outside_references(str(tmp_path)) == [
        "docs/a.md:1: '/tmp/vmops-contracts' (a scratch folder outside the repository)",
        "docs/a.md:1: 'notes/' (a notes folder (scratch notes, not part of the collection))"]
