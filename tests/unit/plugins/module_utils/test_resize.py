# -*- coding: utf-8 -*-
"""Planning a resize: idempotent on the flavor, two-phase with confirm/keep/revert."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt_backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack_backend import MODEL as OPENSTACK
from ansible_collections.vmops.lifecycle.plugins.module_utils.resize import (
    ResizeRequest, plan_resize, validate_resize_request)

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
