# -*- coding: utf-8 -*-
"""Unit tests of instance_restore's neutral core: validation, plans, check mode, idempotence and
refusals, against an in-memory restorer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceNotFound, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.restore import (
    InstanceStatus, RestoreRequest, ensure_restored, validate_restore_request)
from ansible_collections.vmops.lifecycle.tests.unit.fakes import (
    NAMED_LIBVIRT as LIBVIRT, NAMED_OPENSTACK as OPENSTACK, FinderBackend)


def restore_request(**changes):
    base = dict(identifier='web1', snapshot='snap-a', series=None, relaunch_missing=False, power_state='keep',
                force=False, allow_other_instance=False, availability_zone=None, backup_dir=None,
                shutdown_timeout=None, wait=True, timeout=60)
    base.update(changes)
    return RestoreRequest(**base)


@pytest.mark.parametrize('model, changes, message', [
    (LIBVIRT, dict(series='s'), 'exactly one of snapshot'),
    (LIBVIRT, dict(snapshot=None), 'exactly one of snapshot'),
    (OPENSTACK, dict(backup_dir='/b'), 'only apply to the libvirt backend'),
    (LIBVIRT, dict(availability_zone='nova', relaunch_missing=True), 'only applies to the openstack backend'),
    (OPENSTACK, dict(availability_zone='nova'), 'set relaunch_missing'),
    (LIBVIRT, dict(backup_dir='rel'), 'absolute path'),
    (LIBVIRT, dict(power_state='paused'), 'power_state must be'),
])
def test_restore_bad_input(model, changes, message):
    with pytest.raises(InvalidRequest) as raised:
        validate_restore_request(model, restore_request(**changes))
    assert message in raised.value.msg


class FakeRestorer(object):
    def __init__(self, exists=True, owner='id-1', restored_from=None, state=states.RUNNING):
        self.exists, self.owner_id, self.restored_from, self.state = exists, owner, restored_from, state
        self.actions = []

    def close(self):
        pass

    def request_count(self):
        return None

    def find(self, identifier):
        return 'id-1' if self.exists else None

    def status(self, ref):
        return InstanceStatus('web1', 'id-1', self.state, self.restored_from, False, None, {})

    def snapshot(self, ref, request):
        if request.snapshot == 'nosuch':
            raise InvalidRequest('No snapshot nosuch')
        return {'id': 'snap-id', 'name': request.snapshot, 'kind': 'image', 'recorded': {'instance_name': 'web1'}}

    def owner(self, record):
        return self.owner_id

    def plan_power(self, ref, before, request):
        if request.power_state in ('keep', before.state):
            return {'power': None, 'steps': []}
        return {'power': request.power_state, 'steps': ['power_' + request.power_state],
                'state_after': request.power_state}

    def plan_restore(self, ref, before, record, request):
        return {'action': 'rebuild', 'steps': ['rebuild'], 'power': None, 'state_after': before.state}

    def restore(self, ref, before, record, plan, request, deadline):
        self.actions.append('rebuild')
        self.restored_from = record['id']
        return self.status(ref), {}

    def power(self, ref, before, plan, request, deadline):
        self.actions.append(plan['power'])
        self.state = plan['power']
        return self.status(ref), {}

    def plan_relaunch(self, record, request):
        return {'action': 'relaunch', 'steps': ['launch'], 'power': None, 'name': request.identifier}

    def relaunch(self, record, plan, request, deadline):
        self.actions.append('launch')
        self.exists, self.restored_from = True, record['id']
        return self.status('id-1'), {}


def test_restore_check_apply_repeat():
    restorer = FakeRestorer()
    check = ensure_restored(FinderBackend(OPENSTACK), restore_request(), check_mode=True, restorer=restorer)
    assert check['changed'] and check['action'] == 'rebuild' and restorer.actions == []
    applied = ensure_restored(FinderBackend(OPENSTACK), restore_request(), restorer=restorer)
    assert applied['changed'] and applied['instance']['restored_from'] == 'snap-id'
    again = ensure_restored(FinderBackend(OPENSTACK), restore_request(), restorer=restorer)
    assert not again['changed'] and again['action'] == 'none' and restorer.actions == ['rebuild']
    forced = ensure_restored(FinderBackend(OPENSTACK), restore_request(force=True), restorer=restorer)
    assert forced['changed'] and restorer.actions == ['rebuild', 'rebuild']


def test_already_restored_but_other_power_state_only_powers():
    restorer = FakeRestorer(restored_from='snap-id')
    result = ensure_restored(FinderBackend(OPENSTACK), restore_request(power_state='stopped'), restorer=restorer)
    assert result['changed'] and result['action'] == 'none' and restorer.actions == ['stopped']


def test_snapshot_of_another_instance_is_refused_unless_allowed():
    restorer = FakeRestorer(owner='id-other')
    with pytest.raises(InvalidRequest) as raised:
        ensure_restored(FinderBackend(OPENSTACK), restore_request(), restorer=restorer)
    assert 'another instance' in raised.value.msg and restorer.actions == []
    ensure_restored(FinderBackend(OPENSTACK), restore_request(allow_other_instance=True), restorer=restorer)
    assert restorer.actions == ['rebuild']


def test_missing_instance_needs_relaunch_missing():
    restorer = FakeRestorer(exists=False)
    with pytest.raises(InstanceNotFound):
        ensure_restored(FinderBackend(OPENSTACK), restore_request(), restorer=restorer)
    result = ensure_restored(FinderBackend(OPENSTACK), restore_request(relaunch_missing=True), restorer=restorer)
    assert result['action'] == 'relaunch' and restorer.actions == ['launch']


def test_relaunch_under_another_name_is_refused_unless_allowed():
    restorer = FakeRestorer(exists=False)
    with pytest.raises(InvalidRequest) as raised:
        ensure_restored(FinderBackend(OPENSTACK), restore_request(identifier='db9', relaunch_missing=True), restorer=restorer)
    assert 'not of db9' in raised.value.msg and restorer.actions == []


def test_unknown_snapshot_changes_nothing():
    restorer = FakeRestorer()
    with pytest.raises(InvalidRequest):
        ensure_restored(FinderBackend(OPENSTACK), restore_request(snapshot='nosuch'), restorer=restorer)
    assert restorer.actions == []
