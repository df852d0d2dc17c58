# -*- coding: utf-8 -*-
"""Launch requests are checked before anything is contacted."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.launch import (
    LaunchRequest, Launcher, ensure_launched, validate_launch_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK


def launch(**overrides):
    fields = dict(name='web1', image='debian', snapshot=None, volume=None, boot_volume_size=None,
                  delete_volume_on_termination=False, flavor='m1', networks=[], key_name=None, metadata=None,
                  availability_zone=None, keep_failed=False, wait=True, timeout=60)
    fields.update(overrides)
    return LaunchRequest(**fields)


def test_a_valid_request_passes():
    validate_launch_request(OPENSTACK, launch())
    validate_launch_request(OPENSTACK, launch(image=None, snapshot='web1-nightly', boot_volume_size=10))


@pytest.mark.parametrize('model,request_,message', [
    (LIBVIRT, launch(), 'flavor applies to the OpenStack backend only'),
    (LIBVIRT, launch(flavor=None), 'memory_mib is required on libvirt'),
    (LIBVIRT, launch(flavor=None, image=None, memory_mib=64, vcpus=1), 'image is required on libvirt'),
    (LIBVIRT, launch(flavor=None, memory_mib=64, vcpus=0), 'vcpus is required on libvirt and must be at least 1'),
    (LIBVIRT, launch(flavor=None, memory_mib=64, vcpus=1, disk_mode='thin'), 'disk_mode must be copy or overlay'),
    (OPENSTACK, launch(memory_mib=64), 'memory_mib applies to the libvirt backend only'),
    (OPENSTACK, launch(flavor=None), 'flavor is required on OpenStack'),
    (OPENSTACK, launch(image=None), 'exactly one of image, snapshot or volume to launch from (got none)'),
    (OPENSTACK, launch(volume='v1'), 'exactly one of image, snapshot or volume to launch from (got image, volume)'),
    (OPENSTACK, launch(image=None, volume='v1', boot_volume_size=5), 'boots from that volume as it is'),
    (OPENSTACK, launch(boot_volume_size=0), 'positive number of GB'),
    (OPENSTACK, launch(timeout=0), 'timeout must be'),
])
def test_bad_requests(model, request_, message):
    with pytest.raises(InvalidRequest) as caught:
        validate_launch_request(model, request_)
    assert message in caught.value.msg


def test_a_valid_libvirt_request_passes():
    validate_launch_request(LIBVIRT, launch(flavor=None, image='/var/lib/libvirt/images/base.qcow2', memory_mib=64,
                                            vcpus=1, disk_mode='copy', domain_type='qemu'))


class _Launcher(Launcher):
    created = []

    @classmethod
    def for_request(cls, backend, request):
        return cls()

    def plan(self, request):
        return {'name': request.name}

    def create(self, plan):
        self.created.append(plan['name'])
        return plan['name']

    def discard(self, ref):
        raise AssertionError('nothing to discard')


class _Backend(object):
    model = LIBVIRT

    def __init__(self, existing=()):
        self.existing = set(existing)

    def find(self, name):
        return name if name in self.existing else None

    def observe(self, ref):
        return Observation(ref, 'uuid-' + ref, 'running', None, None, {})

    def location(self):
        return 'test:///'

    def request_count(self):
        return 0


def test_a_launcher_plans_in_check_mode_creates_once_and_leaves_an_existing_one_alone():
    request = launch(flavor=None, image='/base.qcow2', memory_mib=64, vcpus=1)
    launcher = _Launcher()
    planned = ensure_launched(_Backend(), request, True, launcher)
    assert planned['changed'] and planned['request_body'] == {'name': 'web1'} and launcher.created == []
    made = ensure_launched(_Backend(), request, False, launcher)
    assert made['changed'] and made['instance']['id'] == 'uuid-web1' and launcher.created == ['web1']
    again = ensure_launched(_Backend(existing=['web1']), request, False, launcher)
    assert not again['changed'] and launcher.created == ['web1']
