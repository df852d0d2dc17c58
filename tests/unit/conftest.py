# -*- coding: utf-8 -*-
"""Make the collection importable as ansible_collections.vmops.lifecycle from a plain checkout, and
offer the shared fakes (tests/unit/fakes.py) as fixtures.

ansible-test does this by running from an ansible_collections/vmops/lifecycle tree; plain
`pytest tests/unit` from the checkout gets the same layout through a symlink in a temp dir.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import tempfile

import pytest

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


def _collection_parent():
    parts = COLLECTION_ROOT.split(os.sep)
    if parts[-3:-2] == ['ansible_collections']:
        return os.sep.join(parts[:-3])
    base = tempfile.mkdtemp(prefix='vmops-unit-')
    os.makedirs(os.path.join(base, 'ansible_collections', 'vmops'))
    os.symlink(COLLECTION_ROOT, os.path.join(base, 'ansible_collections', 'vmops', 'lifecycle'))
    return base


sys.path.insert(0, _collection_parent())

from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeClock  # noqa: E402


@pytest.fixture
def clock():
    """A fresh fake clock (tests/unit/fakes.py): time moves only when the code under test sleeps."""
    return FakeClock()
