# -*- coding: utf-8 -*-
"""The parts of the libvirt snapshot driver that read what the hypervisor returned: which disks a
backup takes, and which points are part of a chain."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import snapshot as libvirt_snapshot

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
  </devices>
</domain>
"""


def test_every_real_disk_is_backed_up_and_only_those():
    disks = libvirt_snapshot._disks(ET.fromstring(DOMAIN))
    assert disks == [
        ('vda', '/var/lib/libvirt/images/a.qcow2', 'qcow2', True),
        ('vdb', 'rbd:volumes/volume-1', 'raw', True),
        ('sda', '/iso/x.iso', 'raw', False),
        ('vdc', '/dev/vg/ro', 'raw', False),
    ]


class ChainStore(object):
    """Two manifests in one domain's directory: a snapshot and a point of an instance_backup chain."""

    manifests = {
        'snap1': {'name': 'snap1', 'series': 'nightly', 'complete': True, 'disks': [], 'created_at': 'T1'},
        'point1': {'name': 'point1', 'series': 'nightly', 'complete': True, 'chain_format': 1,
                   'kind': 'incremental', 'parent': 'point0', 'disks': []},
    }

    def backups(self, domain):
        return sorted(self.manifests)

    def manifest(self, domain, backup):
        return self.manifests[backup], 'complete'

    def path(self, domain, backup=None):
        return '/backups/%s/%s' % (domain, backup)

    def location(self):
        return {'uri': 'qemu:///system', 'host': 'h1', 'root': '/backups'}


def test_a_point_of_an_incremental_chain_is_not_a_snapshot():
    # instance_snapshot's retention must never count (and delete) a chain's point of the same series
    snapshots = libvirt_snapshot.LibvirtSnapshots.__new__(libvirt_snapshot.LibvirtSnapshots)
    snapshots.store = ChainStore()
    assert [record['name'] for record in snapshots.series(None, 'dom', 'nightly')] == ['snap1']
