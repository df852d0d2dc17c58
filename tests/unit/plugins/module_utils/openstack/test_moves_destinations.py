# -*- coding: utf-8 -*-
"""host_evacuate's destinations on Nova: every destination an enabled, up compute, and each move sent to its own."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytest.importorskip('openstack')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import moves as om  # noqa: E402
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeCloud  # noqa: E402

SERVICES = {('GET', '/os-services'): {'services': [
    {'id': 's1', 'host': 'fake1', 'binary': 'nova-compute', 'status': 'enabled', 'state': 'up'},
    {'id': 's2', 'host': 'fake2', 'binary': 'nova-compute', 'status': 'enabled', 'state': 'up'},
    {'id': 's3', 'host': 'fake3', 'binary': 'nova-compute', 'status': 'disabled', 'state': 'up',
     'disabled_reason': 'firmware'},
    {'id': 's4', 'host': 'fake4', 'binary': 'nova-compute', 'status': 'enabled', 'state': 'down'}]}}


def request(**kwargs):
    return moves.MoveRequest(host='fake1', **kwargs)


def test_enabled_up_destinations_pass():
    backend = om.OpenStackMoves({}, backend=FakeCloud(SERVICES))
    backend.check_targets(request(destinations={'vm1': 'fake2', 'vm2': 'fake2'}))
    assert not [entry for entry in backend.backend.compute.sent if entry[0] != 'GET']


@pytest.mark.parametrize('host, text', [
    ('fake3', 'destinations (vm1, vm2) fake3 cannot receive instances: it is disabled (firmware)'),
    ('fake4', 'destinations (vm1, vm2) fake4 cannot receive instances: its nova-compute service is down'),
    ('nosuch', 'destinations (vm1, vm2) nosuch is not a compute host'),
])
def test_a_destination_that_cannot_receive_is_refused_naming_its_instances(host, text):
    backend = om.OpenStackMoves({}, backend=FakeCloud(SERVICES))
    with pytest.raises(InvalidRequest) as caught:
        backend.check_targets(request(destinations={'vm1': host, 'vm2': host, 'vm3': 'fake2'}))
    assert text in caught.value.msg and 'Nothing was changed' in caught.value.msg


def test_each_move_names_its_own_host():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    ask = request(destinations={'vm1': 'fake2'})
    live = moves.MoveSubject('id-1', 'vm1', states.RUNNING, None, 'fake1', False, {})
    backend.start_move(live, moves.LIVE, ask.target_for(live), ask)
    assert backend.backend.compute.sent[-1][2] == {'os-migrateLive': {'host': 'fake2', 'block_migration': 'auto'}}
    cold = moves.MoveSubject('id-1', 'vm9', states.STOPPED, None, 'fake1', False, {})
    backend.start_move(cold, moves.COLD, ask.target_for(cold), ask)
    assert backend.backend.compute.sent[-1][2] == {'migrate': None}
