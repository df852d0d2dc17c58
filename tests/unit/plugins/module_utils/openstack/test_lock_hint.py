# -*- coding: utf-8 -*-
"""A member asked to change a server that an admin locked is told who can unlock it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytest.importorskip('openstack')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import StateRequest, build_plan  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceLocked  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import backend as openstack_backend  # noqa: E402
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeCloud  # noqa: E402


def locked_server(is_admin):
    details = {'locked': True, 'locked_reason': 'maintenance CHG-7',
               'unlock_hint': openstack_backend.unlock_hint(is_admin)}
    return Observation('web1', 'id-1', states.RUNNING, None, None, details)


def stop_request():
    return StateRequest(identifier='web1', wanted=states.STOPPED, hard=False, reboot_type=None, shutdown_timeout=None,
                        force_fallback=False, wait=True, timeout=60)


def test_a_member_is_told_that_only_an_admin_lifts_an_admins_lock():
    with pytest.raises(InstanceLocked) as caught:
        build_plan(openstack_backend.MODEL, locked_server(is_admin=False), stop_request())
    message = caught.value.msg
    assert 'locked (reason: maintenance CHG-7)' in message and 'nothing was done' in message
    assert 'only an admin can unlock it' in message and 'admin credentials' in message


def test_an_admin_is_told_to_unlock():
    with pytest.raises(InstanceLocked) as caught:
        build_plan(openstack_backend.MODEL, locked_server(is_admin=True), stop_request())
    assert 'Set locked=false to unlock it first.' in caught.value.msg and 'only an admin' not in caught.value.msg


def test_the_backend_reads_the_role_from_its_token():
    backend = FakeCloud({('GET', '/servers/id-1'): {'server': {
        'id': 'id-1', 'name': 'web1', 'status': 'ACTIVE', 'locked': True, 'locked_reason': 'x'}}})
    backend.caller_is_admin = lambda: False
    observation = backend.observe('id-1')
    assert 'only an admin can unlock it' in observation.details['unlock_hint']
