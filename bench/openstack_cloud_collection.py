"""Install openstack.cloud for the benchmarks that compare against it, into a path only they use.

ansible-galaxy cannot reach its server from the sandbox machines, but the `ansible` package on PyPI
bundles openstack.cloud.  Its newest wheel for Python 3.11 carries openstack.cloud 2.5.0, which fails
with openstacksdk 4.x ("module 'openstack' has no attribute 'version'"); ansible 13.8.0 (a
py3-none-any wheel that declares Python >= 3.12) carries 2.6.0, which works.  So: download that one
wheel with pip (no dependencies, checked against a pinned SHA-256) and unpack only
ansible_collections/openstack/cloud from it.  Nothing is installed into the venv, and the
collection's own path (.build/collections) is not touched.

Idempotent and cached: the wheel is kept in .build/bench-cache, the collection in
.build/bench-collections; a second run only reads the collection's MANIFEST.json.

Usage:
  .venv/bin/python bench/openstack_cloud_collection.py      # prints the collections path
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'bench-collections')
CACHE = os.path.join(REPO, '.build', 'bench-cache')

ANSIBLE_VERSION = '13.8.0'
WHEEL = 'ansible-%s-py3-none-any.whl' % ANSIBLE_VERSION
WHEEL_SHA256 = 'daf9c9a2850bbc6c098ba3368aeba99d4ae37c90bca47f974dc19342c0571361'
COLLECTION_VERSION = '2.6.0'
MEMBER_PREFIX = 'ansible_collections/openstack/cloud/'


def installed_version(collections=COLLECTIONS):
    manifest = os.path.join(collections, MEMBER_PREFIX, 'MANIFEST.json')
    try:
        with open(manifest) as handle:
            return json.load(handle)['collection_info']['version']
    except (OSError, ValueError, KeyError):
        return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _wheel(cache=CACHE):
    path = os.path.join(cache, WHEEL)
    if os.path.exists(path) and _sha256(path) == WHEEL_SHA256:
        return path
    os.makedirs(cache, exist_ok=True)
    download = tempfile.mkdtemp(prefix='download-', dir=cache)
    try:
        # --python-version 3.12: the wheel is py3-none-any but declares Requires-Python >= 3.12; it is
        # only unpacked here, never installed or imported by this interpreter.
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:',
                        '--python-version', '3.12', '--dest', download, 'ansible==%s' % ANSIBLE_VERSION],
                       check=True)
        fetched = os.path.join(download, WHEEL)
        found = _sha256(fetched)
        if found != WHEEL_SHA256:
            raise RuntimeError('%s: SHA-256 %s, expected %s' % (WHEEL, found, WHEEL_SHA256))
        os.replace(fetched, path)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return path


def ensure(collections=COLLECTIONS, cache=CACHE):
    """The collections path holding openstack.cloud COLLECTION_VERSION (installed if missing)."""
    if installed_version(collections) == COLLECTION_VERSION:
        return collections
    wheel = _wheel(cache)
    target = os.path.join(collections, 'ansible_collections', 'openstack')
    os.makedirs(target, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.unpack-', dir=target)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [name for name in archive.namelist() if name.startswith(MEMBER_PREFIX)]
            archive.extractall(staging, members)
        final = os.path.join(target, 'cloud')
        shutil.rmtree(final, ignore_errors=True)
        os.replace(os.path.join(staging, MEMBER_PREFIX), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    version = installed_version(collections)
    if version != COLLECTION_VERSION:
        raise RuntimeError('unpacked openstack.cloud %s from %s, expected %s' % (version, WHEEL, COLLECTION_VERSION))
    return collections


if __name__ == '__main__':
    print(ensure())
