# -*- coding: utf-8 -*-
"""Planning a resize: idempotent on the flavor, two-phase with confirm/keep/revert."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.resize import (
    ResizeRequest, ensure_flavor, plan_resize, validate_resize_request)

SMALL = {'id': 'f2', 'name': 'vmops.small'}


def server(state, flavor):
    return Observation('app', 'id-1', state, None, None, {'flavor': flavor})


def request(flavor='vmops.small', finish='confirm'):
    return ResizeRequest('app', flavor, finish, True, 60)


@pytest.mark.parametrize('state,flavor,finish,expected', [
    ('running', 'vmops.tiny', 'confirm', ['resize', 'confirm_resize']),
    ('stopped', 'vmops.tiny', 'confirm', ['resize', 'confirm_resize']),
    ('running', 'vmops.tiny', 'keep', ['resize']),
    ('running', 'vmops.small', 'confirm', []),
    ('resize_pending', 'vmops.small', 'confirm', ['confirm_resize']),
    ('resize_pending', 'vmops.small', 'keep', []),
    ('resize_pending', 'vmops.small', 'revert', ['revert_resize']),
    ('running', 'vmops.tiny', 'revert', []),
])
def test_plans(state, flavor, finish, expected):
    assert plan_resize(server(state, flavor), request(finish=finish), SMALL) == expected


def test_a_pending_resize_to_another_flavor_must_be_settled_first():
    with pytest.raises(InvalidRequest) as caught:
        plan_resize(server('resize_pending', 'vmops.large'), request(), SMALL)
    assert 'waiting for confirm or revert' in caught.value.msg


def test_only_running_or_stopped_servers_resize():
    with pytest.raises(InvalidRequest) as caught:
        plan_resize(server('paused', 'vmops.tiny'), request(), SMALL)
    assert 'running or stopped servers only' in caught.value.msg


@pytest.mark.parametrize('model,req,message', [
    (LIBVIRT, request(), 'OpenStack backend only'),
    (OPENSTACK, request(flavor=None), 'flavor is required'),
    (OPENSTACK, ResizeRequest('app', 'x', 'confirm', True, 0), 'timeout must be'),
])
def test_bad_input(model, req, message):
    with pytest.raises(InvalidRequest) as caught:
        validate_resize_request(model, req)
    assert message in caught.value.msg


class FakeResizingNova(object):
    """Just enough of the OpenStack backend for ensure_flavor: resize lands in resize_pending,
    confirm and revert land back in the power state before the resize."""
    model = OPENSTACK

    def __init__(self, state, flavor):
        self.state, self.flavor, self.old = state, flavor, None
        self.power, self.calls = state, []

    def location(self):
        return 'fake nova'

    def request_count(self):
        return len(self.calls)

    def find(self, identifier):
        return identifier

    def find_flavor(self, identifier):
        return {'id': 'id-' + identifier, 'name': identifier}

    def observe(self, ref):
        return Observation(ref, 'id-1', self.state, None, None, {'flavor': self.flavor})

    def resize(self, ref, flavor_id):
        self.calls.append('resize')
        self.old, self.flavor, self.state = self.flavor, flavor_id[3:], 'resize_pending'

    def confirm_resize(self, ref):
        self.calls.append('confirm_resize')
        self.state = self.power

    def revert_resize(self, ref):
        self.calls.append('revert_resize')
        self.flavor, self.state = self.old, self.power


def test_keep_then_revert_lands_back_in_the_old_flavor_and_power_state():
    nova = FakeResizingNova('stopped', 'vmops.small')
    kept = ensure_flavor(nova, request(flavor='vmops.tiny', finish='keep'))
    assert kept['instance']['state'] == 'resize_pending'
    reverted = ensure_flavor(nova, request(flavor=None, finish='revert'))
    assert nova.calls == ['resize', 'revert_resize']
    assert (reverted['instance']['state'], reverted['instance']['flavor']) == ('stopped', 'vmops.small')


def test_keep_then_confirm_settles_the_pending_resize():
    nova = FakeResizingNova('running', 'vmops.small')
    ensure_flavor(nova, request(flavor='vmops.tiny', finish='keep'))
    confirmed = ensure_flavor(nova, request(flavor='vmops.tiny', finish='confirm'))
    assert nova.calls == ['resize', 'confirm_resize']
    assert (confirmed['instance']['state'], confirmed['instance']['flavor']) == ('running', 'vmops.tiny')
    assert ensure_flavor(nova, request(flavor='vmops.tiny'))['changed'] is False
