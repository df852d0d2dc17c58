# -*- coding: utf-8 -*-
"""Unit tests of instance_rescue's neutral core: validation, plans, check mode, idempotence and
refusals, against an in-memory rescuer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceLocked, InstanceNotFound, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import (
    RescueStatus, ensure_rescue, validate_rescue_request)
from ansible_collections.vmops.lifecycle.tests.unit.fakes import (
    NAMED_LIBVIRT as LIBVIRT, NAMED_OPENSTACK as OPENSTACK, FinderBackend, rescue_request)


@pytest.mark.parametrize('model, changes, message', [
    (OPENSTACK, dict(rescue_kernel='/k'), 'only apply to the libvirt backend'),
    (OPENSTACK, dict(shutdown_timeout=3), 'only apply to the libvirt backend'),
    (LIBVIRT, dict(admin_password='x'), 'only apply to the openstack backend'),
    (LIBVIRT, dict(wanted='unrescued', rescue_image='/i'), 'only apply to state=rescued'),
    (LIBVIRT, dict(rescue_initrd='/i'), 'rescue_initrd needs rescue_kernel'),
    (LIBVIRT, dict(rescue_disk_mib=0), 'positive number of MiB'),
    (LIBVIRT, dict(rescue_disk_mib=8, rescue_image='/i'), 'give one or the other'),
    (LIBVIRT, dict(timeout=0), 'timeout must be a positive'),
    (LIBVIRT, dict(wanted='running'), 'rescued or unrescued'),
])
def test_rescue_bad_input(model, changes, message):
    with pytest.raises(InvalidRequest) as raised:
        validate_rescue_request(model, rescue_request(**changes))
    assert message in raised.value.msg


class FakeRescuer(object):
    """An instance in memory: rescue/unrescue flip a flag; counts the actions."""

    def __init__(self, rescued=False, state=states.RUNNING, locked=False, refuse=None):
        self.rescued, self.state, self.locked, self.refuse = rescued, state, locked, refuse
        self.actions = []

    def _status(self):
        return RescueStatus('web1', 'id-1', states.RESCUED if self.rescued else self.state, self.rescued,
                            locked=self.locked, image='img' if self.rescued else None, stable_device=False,
                            disks=[{'target': 'vda', 'role': 'rescue'}] if self.rescued else [])

    def settled(self, ref, deadline):
        return self._status()

    def safe_status(self, ref):
        return self._status()

    def prepare(self, ref, status, request):
        if self.refuse:
            raise InvalidRequest(self.refuse)
        return {'image': 'img', 'stable_device': False, 'disks': [{'target': 'vda', 'role': 'rescue'}]}

    def check_unrescuable(self, ref, status):
        return None

    def rescue(self, ref, before, prepared, request, deadline):
        self.actions.append('rescue')
        self.rescued = True
        return self._status()._replace(steps={'power_off': 'shutdown'})

    def unrescue(self, ref, before, request, deadline):
        self.actions.append('unrescue')
        self.rescued = False
        self.state = states.RUNNING
        return self._status()


def test_rescue_check_mode_plans_and_touches_nothing():
    rescuer = FakeRescuer()
    result = ensure_rescue(FinderBackend(LIBVIRT), rescue_request(), check_mode=True, rescuer=rescuer)
    assert result['changed'] and result['instance']['plan'] == ['rescue'] and rescuer.actions == []
    assert result['rescue']['planned'] and result['diff'] == {'before': {'rescued': False}, 'after': {'rescued': True}}


def test_rescue_apply_then_repeat_is_unchanged():
    rescuer = FakeRescuer()
    first = ensure_rescue(FinderBackend(LIBVIRT), rescue_request(), rescuer=rescuer)
    assert first['changed'] and first['instance']['executed'][0]['power_off'] == 'shutdown'
    assert first['instance']['state'] == states.RESCUED and first['rescue']['image'] == 'img'
    second = ensure_rescue(FinderBackend(LIBVIRT), rescue_request(), rescuer=rescuer)
    assert not second['changed'] and rescuer.actions == ['rescue']


def test_unrescue_apply_then_repeat_is_unchanged():
    rescuer = FakeRescuer(rescued=True)
    first = ensure_rescue(FinderBackend(LIBVIRT), rescue_request(wanted='unrescued'), rescuer=rescuer)
    second = ensure_rescue(FinderBackend(LIBVIRT), rescue_request(wanted='unrescued'), rescuer=rescuer)
    assert first['changed'] and not second['changed'] and rescuer.actions == ['unrescue']
    assert first['instance']['state'] == states.RUNNING


def test_rescue_refusal_and_lock_change_nothing():
    refused = FakeRescuer(refuse='shelved; Nova cannot rescue')
    with pytest.raises(InvalidRequest):
        ensure_rescue(FinderBackend(OPENSTACK), rescue_request(), rescuer=refused)
    locked = FakeRescuer(locked=True)
    with pytest.raises(InstanceLocked):
        ensure_rescue(FinderBackend(OPENSTACK), rescue_request(), rescuer=locked)
    assert refused.actions == [] and locked.actions == []


def test_rescue_unknown_instance():
    with pytest.raises(InstanceNotFound):
        ensure_rescue(FinderBackend(LIBVIRT, exists=False), rescue_request(), rescuer=FakeRescuer())
