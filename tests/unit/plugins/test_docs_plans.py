# -*- coding: utf-8 -*-
"""The plan tables in docs/instance_state.md are what the planner really does."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import UnreachableState
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.planner import plan_path

DOC = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'docs', 'instance_state.md')
ROWS = ['running', 'stopped', 'paused', 'suspended', 'absent', 'error']
COLUMNS = ['running', 'stopped', 'paused', 'suspended', 'absent']


def plan_table(model, hard):
    def cell(current, wanted):
        try:
            return ' → '.join(edge.verb for edge in plan_path(model, current, wanted, hard=hard)) or '—'
        except UnreachableState:
            return 'unreachable'
    lines = ['| from \\ to | %s |' % ' | '.join(COLUMNS), '|---|%s' % ('---|' * len(COLUMNS))]
    lines += ['| **%s** | %s |' % (row, ' | '.join(cell(row, column) for column in COLUMNS)) for row in ROWS]
    return '\n'.join(lines)


@pytest.mark.parametrize('hard,marker', [(False, 'graceful'), (True, 'hard')])
def test_documented_plans_match_the_planner(hard, marker):
    with open(DOC) as handle:
        text = handle.read()
    found = re.search(r'<!-- libvirt-plans:%s -->\n(.*?)\n<!-- end -->' % marker, text, re.S)
    assert found, 'docs/instance_state.md lacks the %s plan table' % marker
    assert found.group(1).strip() == plan_table(LIBVIRT, hard)
