# -*- coding: utf-8 -*-
"""The planner, checked on every state pair of every backend against an independent search."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import UnreachableState
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.planner import plan_path

BACKENDS = [LIBVIRT, OPENSTACK]


def usable_edges(model, hard):
    return [e for e in model.transitions if e.source != e.target and (hard or not e.forced)]


def shortest_length_by_enumeration(model, current, wanted, hard):
    """Length of the shortest walk, by brute force over every sequence of edges (no BFS)."""
    if model.satisfies(current, wanted):
        return 0
    edges = usable_edges(model, hard)
    for length in range(1, 5):     # no plan of either backend is longer; the search is exhaustive to here
        for walk in itertools.product(edges, repeat=length):
            if walk[0].source == current and model.satisfies(walk[-1].target, wanted) and \
                    all(a.target == b.source for a, b in zip(walk, walk[1:])):
                return length
    return None


PAIRS = [(model, current, wanted, hard)
         for model in BACKENDS
         for current in sorted(model.states)
         for wanted in sorted(model.states)
         for hard in (False, True)]


@pytest.mark.parametrize('model,current,wanted,hard', PAIRS,
                         ids=['%s:%s->%s:%s' % (m.name, c, w, 'hard' if h else 'graceful') for m, c, w, h in PAIRS])
def test_every_pair_is_legal_and_shortest(model, current, wanted, hard):
    expected = shortest_length_by_enumeration(model, current, wanted, hard)
    if expected is None:
        with pytest.raises(UnreachableState) as caught:
            plan_path(model, current, wanted, hard=hard)
        assert model.name in caught.value.msg
        assert "'%s'" % current in caught.value.msg and "'%s'" % wanted in caught.value.msg
        return
    plan = plan_path(model, current, wanted, hard=hard)
    assert len(plan) == expected
    position = current
    for edge in plan:
        assert edge in model.transitions
        assert edge.source == position
        assert hard or not edge.forced, 'a graceful plan used forced %s' % (edge,)
        position = edge.target
    assert model.satisfies(position, wanted)


def verbs(plan):
    return [edge.verb for edge in plan]


@pytest.mark.parametrize('current,wanted,hard,expected', [
    ('suspended', 'paused', False, ['restore', 'pause']),
    ('paused', 'stopped', False, ['resume', 'shutdown']),
    ('paused', 'stopped', True, ['destroy']),
    ('running', 'stopped', False, ['shutdown']),
    ('running', 'stopped', True, ['destroy']),
    ('suspended', 'stopped', False, ['restore', 'shutdown']),
    ('suspended', 'stopped', True, ['discard_saved_state']),
    ('running', 'absent', False, ['shutdown', 'undefine']),
    ('suspended', 'absent', True, ['undefine_discarding_saved_state']),
    ('paused', 'suspended', False, ['managed_save']),
    ('stopped', 'paused', False, ['start', 'pause']),
    ('error', 'running', True, ['destroy', 'start']),
])
def test_libvirt_plans_operators_expect(current, wanted, hard, expected):
    assert verbs(plan_path(LIBVIRT, current, wanted, hard=hard)) == expected


@pytest.mark.parametrize('current,wanted,hard,expected', [
    ('shelved_offloaded', 'paused', False, ['unshelve', 'pause']),
    ('rescued', 'stopped', False, ['unrescue', 'stop']),
    ('paused', 'suspended', False, ['unpause', 'suspend']),
    ('suspended', 'shelved', False, ['shelve']),
    ('shelved', 'shelved_offloaded', False, ['shelve_offload']),
    ('shelved_offloaded', 'shelved', False, []),
    ('running', 'absent', False, ['delete']),
    ('error', 'running', True, ['reboot_hard']),
    ('error', 'absent', True, ['delete']),
])
def test_openstack_plans_operators_expect(current, wanted, hard, expected):
    assert verbs(plan_path(OPENSTACK, current, wanted, hard=hard)) == expected


def test_a_pending_resize_is_not_resolved_by_the_planner():
    with pytest.raises(UnreachableState):
        plan_path(OPENSTACK, 'resize_pending', 'running')


def test_graceful_never_discards_state_and_says_how_to_get_there():
    with pytest.raises(UnreachableState) as caught:
        plan_path(LIBVIRT, 'error', 'running')
    assert 'hard stop' in caught.value.msg


def test_unknown_state_names_backend_and_states():
    with pytest.raises(UnreachableState) as caught:
        plan_path(LIBVIRT, 'running', 'shelved')
    assert "libvirt backend has no wanted state 'shelved'" in caught.value.msg


def test_absent_is_a_dead_end_on_libvirt():
    with pytest.raises(UnreachableState) as caught:
        plan_path(LIBVIRT, 'absent', 'running')
    assert "cannot take an instance from 'absent' to 'running'" in caught.value.msg


def test_model_rejects_transitions_to_undeclared_states():
    with pytest.raises(ValueError):
        states.BackendModel('broken', ['running'], [states.transition('stop', 'running', 'stopped')])


def test_self_loops_are_actions_not_paths():
    assert LIBVIRT.action('reboot_soft', 'running').target == 'running'
    assert LIBVIRT.action('reboot_soft', 'paused') is None
    assert all(e.source != e.target for e in LIBVIRT.edges_from('running', hard=True))
