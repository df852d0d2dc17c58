# -*- coding: utf-8 -*-
"""What a user gets: the tarball built from a used working tree, installed; the execution
environments ansible-builder makes of it; and the OpenStack modules on a host without libvirt-python.

Run by `scripts/test packaging` (slow for tests/unit: it builds and installs the collection).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
BIN = os.path.dirname(sys.executable)

# Everything the tarball may hold at its top, and what it must hold.
ALLOWED_TOP = {
    'MANIFEST.json', 'FILES.json', 'README.md', 'CONTRIBUTING.md', 'CHANGELOG.rst', 'CHANGELOG.md',
    'LICENSE', 'COPYING', 'bindep.txt', 'requirements.txt', 'requirements-openstack.txt',
    'requirements-libvirt.txt', 'changelogs', 'docs', 'meta', 'playbooks', 'plugins', 'roles', 'tests',
}
REQUIRED = {
    'MANIFEST.json', 'README.md', 'COPYING', 'bindep.txt', 'requirements.txt', 'requirements-openstack.txt',
    'requirements-libvirt.txt', 'meta/execution-environment.yml', 'meta/runtime.yml',
    'plugins/modules/instance_state.py', 'docs/examples/execution-environment.yml',
}

# What a used tree holds besides its sources: venvs, tool caches, test output, reports, old builds.
ARTEFACTS = [
    '.venv/bin/python', '.venv-sanity/pyvenv.cfg', '.venv-docs/pyvenv.cfg', '.build/site/index.html',
    '.ansible/collections/x', 'roles/maintenance_window/.ansible/x', '.pytest_cache/v/cache/lastfailed',
    'tests/unit/.pytest_cache/README.md', '.mypy_cache/x.json', '.ruff_cache/x',
    'plugins/modules/__pycache__/instance_state.cpython-311.pyc',
    'plugins/module_utils/core/states.pyc', 'reports/maintenance-window.md',
    'playbooks/reports/maintenance-window.html', 'playbooks/awx/reports/snapshot-policy.json',
    'tests/integration/targets/role_maintenance_window/reports/maintenance-window.md', 'tests/output/junit/x.xml',
    'tests/output/.tmp/sanity/x', 'vmops-lifecycle-0.0.9.tar.gz', 'changelogs/.plugin-cache.yaml',
    'ansible.log', 'plugins/modules/instance_state.py.swp', 'docs/README.md~',
]
ARTEFACT_PATTERNS = [
    '.venv*', '.build*', '*.ansible*', '*.pytest_cache*', '*.mypy_cache*', '*.ruff_cache*', '*__pycache__*',
    '*.pyc', 'reports*', 'playbooks/reports*', 'playbooks/*/reports*',
    'tests/integration/targets/*/reports*', 'tests/output*', '*.tar.gz', '*.plugin-cache.yaml', '*.log',
    '*.swp', '*~', 'sandbox*', 'scripts*', 'bench*', '.ci*', 'requirements-dev.txt',
]


# Only the collection under test: not the working tree that scripts/test puts on the collections path.
CLEAN_ENV = dict((name, value) for name, value in os.environ.items()
                 if name not in ('ANSIBLE_COLLECTIONS_PATH', 'ANSIBLE_COLLECTIONS_PATHS') and not name.startswith('OS_'))


def run(*command, **kwargs):
    kwargs.setdefault('env', CLEAN_ENV)
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, **kwargs)


def used_tree(dest):
    """A copy of the working tree's files (tracked and new, as git sees them), with artefacts added."""
    listed = run('git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard', cwd=REPO).stdout
    for relative in sorted(set(filter(None, listed.split('\0')))):
        source = os.path.join(REPO, relative)
        if os.path.isfile(source):
            os.makedirs(os.path.join(dest, os.path.dirname(relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, relative))
    for relative in ARTEFACTS:
        os.makedirs(os.path.join(dest, os.path.dirname(relative)), exist_ok=True)
        with open(os.path.join(dest, relative), 'w') as artefact:
            artefact.write('artefact\n')
    return dest


@pytest.fixture(scope='module')
def tarball(tmp_path_factory):
    tree = used_tree(str(tmp_path_factory.mktemp('tree')))
    output = str(tmp_path_factory.mktemp('dist'))
    run(os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', output, tree)
    version = yaml.safe_load(open(os.path.join(REPO, 'galaxy.yml')))['version']
    return os.path.join(output, 'vmops-lifecycle-%s.tar.gz' % version)


@pytest.fixture(scope='module')
def installed(tarball, tmp_path_factory):
    """The collections path the tarball was installed into (offline: no dependencies)."""
    path = str(tmp_path_factory.mktemp('collections'))
    run(os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--offline', '--no-deps', '--force', '-p', path, tarball)
    return path


def test_tarball_holds_the_collection_and_no_artefact(tarball):
    with tarfile.open(tarball) as archive:
        names = [name[2:] if name.startswith('./') else name for name in archive.getnames()]
    top = {name.split('/')[0] for name in names}
    assert top <= ALLOWED_TOP, 'unexpected top-level entries: %s' % sorted(top - ALLOWED_TOP)
    assert REQUIRED <= set(names), 'missing: %s' % sorted(REQUIRED - set(names))
    leaked = sorted(name for name in names
                    if any(fnmatch.fnmatch(name, pattern) for pattern in ARTEFACT_PATTERNS))
    assert not leaked, 'artefacts in the tarball: %s' % leaked


def test_manifest_points_at_the_project(tarball):
    with tarfile.open(tarball) as archive:
        info = json.load(archive.extractfile('MANIFEST.json'))['collection_info']
    for key in ('repository', 'documentation', 'homepage', 'issues'):
        assert info[key].startswith('https://github.com/vmops/lifecycle'), (key, info[key])


# Execution environments ----------------------------------------------------------------------

EXAMPLES = os.path.join(REPO, 'docs', 'examples')


def builder_context(definition, dest):
    run(os.path.join(BIN, 'ansible-builder'), 'create', '-f', definition, '-c', dest,
        '--output-filename', 'Containerfile', cwd=EXAMPLES)
    return dest


def introspect(installed, context, dest):
    """What ansible-builder's builder stage would install: the collection's requirements read from
    its meta/execution-environment.yml, less the exclusions the definition put in the context."""
    command = [os.path.join(BIN, 'ansible-builder'), 'introspect', installed,
               '--write-pip', os.path.join(dest, 'pip.txt'), '--write-bindep', os.path.join(dest, 'bindep.txt')]
    for option, name in (('--exclude-pip-reqs', 'exclude-requirements.txt'),
                         ('--exclude-bindep-reqs', 'exclude-bindep.txt'),
                         ('--user-bindep', 'bindep.txt')):
        if os.path.exists(os.path.join(context, '_build', name)):
            command += [option, os.path.join(context, '_build', name)]
    run(*command)
    return ([line.split()[0] for line in open(os.path.join(dest, name)) if line.strip()]
            for name in ('pip.txt', 'bindep.txt'))


def test_execution_environment_for_both_backends(installed, tmp_path):
    context = builder_context('execution-environment.yml', str(tmp_path / 'context'))
    build = os.path.join(context, '_build')
    assert sorted(os.listdir(build)) == ['bindep.txt', 'requirements.yml', 'scripts']
    galaxy = yaml.safe_load(open(os.path.join(build, 'requirements.yml')))
    assert galaxy['collections'][0]['name'] == 'https://github.com/vmops/lifecycle.git'
    containerfile = open(os.path.join(context, 'Containerfile')).read()
    assert 'ansible-galaxy collection install' in containerfile and 'introspect' in containerfile
    pip, system = introspect(installed, context, str(tmp_path))
    assert sorted(pip) == ['libvirt-python>=9.0.0', 'openstacksdk>=1.0.0']
    assert {'libvirt-devel', 'libvirt-libs', 'libvirt-dev', 'libvirt0', 'openssh-clients'} <= set(system)


def test_execution_environment_for_openstack_leaves_libvirt_out(installed, tmp_path):
    context = builder_context('execution-environment-openstack.yml', str(tmp_path / 'context'))
    assert sorted(os.listdir(os.path.join(context, '_build'))) == [
        'exclude-bindep.txt', 'exclude-requirements.txt', 'requirements.yml', 'scripts']
    pip, system = introspect(installed, context, str(tmp_path))
    assert pip == ['openstacksdk>=1.0.0']
    assert not [name for name in system if 'libvirt' in name], system


def test_bindep_profiles_split_the_backends():
    from bindep.depends import Depends
    depends = Depends(open(os.path.join(REPO, 'bindep.txt')).read())
    for platform in ('platform:dpkg', 'platform:rpm'):
        assert depends.active_rules(['openstack', platform]) == []
        libvirt = [rule[0] for rule in depends.active_rules(['libvirt', platform])]
        assert {'libvirt-dev', 'libvirt0'} <= set(libvirt) or {'libvirt-devel', 'libvirt-libs'} <= set(libvirt)
        # ansible-builder installs the compile profile to build, the default one to run.
        built = [rule[0] for rule in depends.active_rules(['compile', platform])]
        ran = [rule[0] for rule in depends.active_rules(['default', platform])]
        assert sorted(built + ran) == sorted(libvirt)


# Without libvirt-python ----------------------------------------------------------------------

BLOCK_LIBVIRT = '''
import sys
class NoLibvirt(object):
    """A host without libvirt-python: importing it fails as if it were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('libvirt', 'libvirtmod', 'libvirt_qemu', 'libvirtmod_qemu'):
            raise ImportError('No module named %r (blocked by the test)' % name)
        return None
sys.meta_path.insert(0, NoLibvirt())
'''


@pytest.fixture(scope='module')
def without_libvirt(installed, tmp_path_factory):
    """Environment for a Python that imports the installed collection and cannot import libvirt."""
    site = str(tmp_path_factory.mktemp('site'))
    with open(os.path.join(site, 'sitecustomize.py'), 'w') as customize:
        customize.write(BLOCK_LIBVIRT)
    return dict(CLEAN_ENV, PYTHONPATH=os.pathsep.join([site, installed]))


def collection_files(installed, *folders):
    root = os.path.join(installed, 'ansible_collections', 'vmops', 'lifecycle')
    for folder in folders:
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if name.endswith('.py') and name != '__init__.py':
                yield ('ansible_collections.vmops.lifecycle.' + folder.replace('/', '.') + '.' + name[:-3],
                       os.path.join(root, folder, name))


def test_openstack_modules_import_without_libvirt(installed, without_libvirt):
    names = sorted(dict(collection_files(
        installed, 'plugins/modules', 'plugins/module_utils', 'plugins/module_utils/core',
        'plugins/module_utils/openstack')))
    script = ('import importlib, sys\n'
              'for name in %r:\n'
              '    importlib.import_module(name)\n'
              'from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import backend\n'
              'assert not backend.HAS_LIBRARY, "libvirt was not blocked"\n'
              'print(sorted(name for name in sys.modules if name.startswith("libvirt")))\n' % names)
    result = run(sys.executable, '-c', script, env=without_libvirt)
    assert result.stdout.strip().splitlines()[-1] == '[]'


def run_module(installed, env, name, args):
    path = dict(collection_files(installed, 'plugins/modules'))['ansible_collections.vmops.lifecycle.plugins.modules.' + name]
    # A failing module exits non-zero: its JSON answer is what the test reads.
    result = subprocess.run([sys.executable, path, json.dumps({'ANSIBLE_MODULE_ARGS': args})], check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    return json.loads(result.stdout)


def test_openstack_module_runs_without_libvirt(installed, without_libvirt):
    # A cloud whose endpoint refuses connections: the module gets as far as asking it.
    cloud = {'auth': {'auth_url': 'http://127.0.0.1:9/v3', 'username': 'u', 'password': 'p',
                      'project_name': 'p', 'user_domain_name': 'Default', 'project_domain_name': 'Default'}}
    result = run_module(installed, without_libvirt, 'instance_state',
                        {'name': 'web1', 'state': 'running', 'cloud': cloud, 'retry_budget': 0, 'timeout': 5})
    assert result['failed'] and 'libvirt' not in result['msg'], result
    assert 'Nova' in result['msg'] and '127.0.0.1:9' in result['msg'], result


def test_libvirt_module_says_what_is_missing(installed, without_libvirt):
    # The other side of the block: the libvirt backend asks for its library by name.
    result = run_module(installed, without_libvirt, 'instance_state',
                        {'name': 'web1', 'state': 'running', 'libvirt_uri': 'test:///default'})
    assert result['failed'] and 'libvirt-python' in result['msg'], result


# Version claims --------------------------------------------------------------------------------

def version_claims(node, where):
    """Every version_added in a DOCUMENTATION tree (the module's and each option's), with its place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'version_added':
                yield where, str(value)
            else:
                yield from version_claims(value, '%s.%s' % (where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from version_claims(value, '%s[%d]' % (where, index))


def test_no_module_claims_a_version_after_the_collection(installed):
    version = yaml.safe_load(open(os.path.join(REPO, 'galaxy.yml')))['version']
    claims = []
    for name, path in collection_files(installed, 'plugins/modules'):
        tree = ast.parse(open(path).read())
        documentation = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                         and [target.id for target in node.targets if isinstance(target, ast.Name)] == ['DOCUMENTATION']]
        claims += list(version_claims(yaml.safe_load(documentation[0]), name.rsplit('.', 1)[-1]))
    assert claims, 'no version_added found: the test reads nothing'
    newer = [(where, claimed) for where, claimed in claims
             if tuple(int(part) for part in claimed.split('.')) > tuple(int(part) for part in version.split('.'))]
    assert not newer, 'version_added after the collection version %s: %s' % (version, newer)
