# -*- coding: utf-8 -*-
"""The parts of the snapshot drivers that read what the hypervisor or cloud returned: which disks a
libvirt backup takes, whether a guest agent can freeze, and how an OpenStack image becomes a record."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import snapshot as libvirt_snapshot
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import snapshot as openstack_snapshot
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK

DOMAIN = """
<domain type='qemu'>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/a.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/><source protocol='rbd' name='volumes/volume-1'/><target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sdb' bus='sata'/></disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/><source dev='/dev/vg/ro'/><target dev='vdc' bus='virtio'/><readonly/>
    </disk>
    %s
  </devices>
</domain>
"""
AGENT = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='%s'/></channel>"


def test_every_real_disk_is_backed_up_and_only_those():
    disks = libvirt_snapshot._disks(ET.fromstring(DOMAIN % ''))
    assert disks == [
        ('vda', '/var/lib/libvirt/images/a.qcow2', 'qcow2', True),
        ('vdb', 'rbd:volumes/volume-1', 'raw', True),
        ('sda', '/iso/x.iso', 'raw', False),
        ('vdc', '/dev/vg/ro', 'raw', False),
    ]


def test_guest_agent_detection():
    assert libvirt_snapshot._agent_connected(ET.fromstring(DOMAIN % (AGENT % 'connected')))
    assert not libvirt_snapshot._agent_connected(ET.fromstring(DOMAIN % (AGENT % 'disconnected')))
    assert not libvirt_snapshot._agent_connected(ET.fromstring(DOMAIN % ''))


class _Backend(object):
    model = OPENSTACK
    conn = None


def driver():
    return openstack_snapshot.OpenStackSnapshots(_Backend())


def test_volume_backed_image_record():
    image = {'id': 'img', 'name': 'db1-n1', 'status': 'active', 'size': 0, 'vmops_instance_id': 'srv',
             'vmops_series': 'n', 'vmops_complete': 'true', 'vmops_kind': 'volume_backed',
             'vmops_created_at': '2026-11-21T03:00:00.000001Z',
             'block_device_mapping': json.dumps([
                 {'device_name': '/dev/vda', 'snapshot_id': 's-root', 'volume_size': 2, 'boot_index': 0},
                 {'device_name': '/dev/vdb', 'snapshot_id': 's-data', 'volume_size': 5}]),
             'vmops_recorded': json.dumps({'boot': 'volume', 'flavor': 'm1'})}
    record = driver()._record(image)
    assert record['kind'] == 'volume_backed'
    assert [c['id_or_path'] for c in record['contains']] == ['s-root', 's-data']
    assert record['size_bytes'] == 7 * 1024 ** 3
    assert record['_snapshot_ids'] == ['s-root', 's-data']
    assert record['recorded'] == {'boot': 'volume', 'flavor': 'm1'}
    assert record['created_at'] == '2026-11-21T03:00:00.000001Z'
    assert driver()._complete(image)


def test_image_with_data_volume_snapshots_record():
    image = {'id': 'img', 'name': 'web1-set', 'status': 'active', 'size': 1000, 'vmops_instance_id': 'srv',
             'vmops_complete': 'true', 'vmops_kind': 'image', 'vmops_consistency': 'paused',
             'vmops_guest_paused_seconds': '2.250', 'vmops_quiesced': 'false',
             'vmops_volume_snapshots': json.dumps([{'device': '/dev/vdb', 'volume_id': 'v', 'snapshot_id': 's',
                                                    'size_gb': 1}])}
    record = driver()._record(image)
    assert [c['kind'] for c in record['contains']] == ['image', 'volume_snapshot']
    assert record['size_bytes'] == 1000 + 1024 ** 3
    assert record['guest_paused_seconds'] == 2.25
    assert record['consistency'] == 'paused' and record['quiesced'] is False


def test_completeness_and_ownership():
    ours_unfinished = {'id': 'i', 'status': 'active', 'vmops_instance_id': 'srv', 'vmops_complete': 'false'}
    ours_saving = {'id': 'i', 'status': 'saving', 'vmops_instance_id': 'srv', 'vmops_complete': 'true'}
    novas = {'id': 'i', 'status': 'active', 'instance_uuid': 'srv'}
    d = driver()
    assert not d._complete(ours_unfinished)
    assert not d._complete(ours_saving)
    assert d._complete(novas)
    assert d._belongs(novas, 'srv', 'web1')
    assert not d._belongs(novas, 'other', 'web1')
    gone = {'id': 'i', 'vmops_instance_id': 'srv', 'vmops_instance_name': 'web1'}
    assert d._belongs(gone, None, 'web1') and d._belongs(gone, None, 'srv') and not d._belongs(gone, None, 'db1')
