# -*- coding: utf-8 -*-
"""host_service's wait_for_placement: usable only when the service is enabled and up and Placement no
longer marks the host's providers COMPUTE_STATUS_DISABLED."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import placement, services

ENABLED_UP = {'host': 'fake1', 'status': 'enabled', 'state': 'up', 'forced_down': False}


class FakeRequests(object):
    """Placement answers the disabled trait for the first `marked` reads of fake1's provider."""

    def __init__(self, marked=0):
        self.marked = marked
        self.calls = []

    def json(self, service, method, path, **kwargs):
        self.calls.append((service, path, kwargs.get('microversion')))
        if path == '/os-hypervisors/detail':
            return {'hypervisors': [{'id': 'rp-1', 'hypervisor_hostname': 'fake1', 'service': {'host': 'fake1'}},
                                    {'id': 'rp-2', 'hypervisor_hostname': 'fake10', 'service': {'host': 'fake10'}}]}
        self.marked -= 1
        return {'traits': ['COMPUTE_STATUS_DISABLED'] if self.marked >= 0 else ['HW_CPU_X86_AVX']}


def test_usable_needs_an_enabled_up_service_and_no_disabled_trait():
    seen = placement.readiness(FakeRequests(marked=1), 'fake1', ENABLED_UP)
    assert not seen['usable']
    assert seen['providers'] == [{'id': 'rp-1', 'name': 'fake1', 'disabled_trait': True}]
    assert 'COMPUTE_STATUS_DISABLED' in seen['reasons'][0]
    requests = FakeRequests()
    assert placement.readiness(requests, 'fake1', ENABLED_UP)['usable']
    assert ('placement', '/resource_providers/rp-1/traits', '1.29') in requests.calls


def test_a_disabled_or_down_service_is_not_usable_whatever_placement_says():
    seen = placement.readiness(FakeRequests(), 'fake1', dict(ENABLED_UP, status='disabled', state='down'))
    assert not seen['usable'] and len(seen['reasons']) == 2


class FakeServices(object):
    def __init__(self, requests):
        self.backend = type('Backend', (), {'requests': requests})()

    def find(self, host, binary):
        return dict(ENABLED_UP)


def test_the_wait_ends_when_placement_clears_the_trait():
    requests = FakeRequests(marked=2)
    seen = services.placement_ready(FakeServices(requests), 'fake1', 'nova-compute', timeout=10)
    assert seen['usable'] and requests.marked < 0


def test_check_mode_looks_once():
    seen = services.placement_ready(FakeServices(FakeRequests(marked=5)), 'fake1', 'nova-compute', 10, wait=False)
    assert not seen['usable'] and seen['waited'] == 0.0


@pytest.mark.parametrize('params', [
    {'host': 'fake1', 'state': 'disabled', 'wait_for_placement': True},
    {'host': 'fake1', 'state': 'enabled', 'forced_down': True, 'fenced': True, 'wait_for_placement': True},
])
def test_wait_for_placement_needs_state_enabled(params):
    with pytest.raises(InvalidRequest, match='wait_for_placement'):
        services.validate_service_request(params)
