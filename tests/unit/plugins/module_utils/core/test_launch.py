# -*- coding: utf-8 -*-
"""Launch requests are checked before anything is contacted."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.launch import LaunchRequest, validate_launch_request
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
    (LIBVIRT, launch(), 'OpenStack backend only'),
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
