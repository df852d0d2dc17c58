# -*- coding: utf-8 -*-
"""The parts of the libvirt chains that build what libvirt is sent and read what it returns: the backup and
checkpoint XML of a point, the increment's target file, the disk-format refusal. The real backup jobs are
proven by the integration target instance_backup_libvirt."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import incremental
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

DOMAIN = """
<domain type='qemu'><name>app1</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='/images/app1.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/>
    </disk>
  </devices>
</domain>
"""


class FakeDomain(object):
    def __init__(self):
        self.begun = None

    def name(self):
        return 'app1'

    def XMLDesc(self, flags=0):     # pylint: disable=unused-argument
        return DOMAIN

    def backupBegin(self, backup_xml, checkpoint_xml, flags):
        self.begun = (backup_xml, checkpoint_xml, flags)

    def jobInfo(self):
        return [libvirt.VIR_DOMAIN_JOB_NONE] + [0] * 11

    def jobStats(self, flags):      # pylint: disable=unused-argument
        return {'operation': libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP, 'success': True}


class FakeBackend(object):
    model = MODEL
    uri = 'qemu:///system'
    conn = None

    def __init__(self, state=states.RUNNING):
        self.state = state

    def request_count(self):
        return 0

    def observe(self, ref):
        return Observation('app1', 'uuid-1', self.state, None, None, {})


class FakeStore(object):
    def shares_host(self, conn):    # pylint: disable=unused-argument
        return True

    def path(self, domain, backup=None):
        return '/backups/%s/%s' % (domain, backup)


class FakeVolume(object):
    def __init__(self, compat):
        self.compat = compat

    def XMLDesc(self, flags=0):     # pylint: disable=unused-argument
        compat = '<compat>%s</compat>' % self.compat if self.compat else ''
        return "<volume><target><format type='qcow2'/>%s</target></volume>" % compat


def sets_with(compat=None, state=states.RUNNING):
    sets = incremental.LibvirtBackupSets(FakeBackend(state), FakeStore())
    sets._volume = lambda path: FakeVolume(compat)
    sets.deadline = Deadline(10)
    return sets


def test_an_increment_names_its_parent_checkpoint_and_creates_its_own_in_the_same_call():
    dom = FakeDomain()
    parent = {'name': 'p1', 'checkpoint': 'p1', 'path': '/backups/app1/p1'}
    job = sets_with('1.1')._run_job(dom, '/backups/app1/p2', [('vda', '/images/app1.qcow2', 'qcow2', 1024)], 'p2',
                                    parent, 'auto', ET.fromstring(DOMAIN))
    backup_xml, checkpoint_xml, flags = dom.begun
    backup = ET.fromstring(backup_xml)
    assert backup.get('mode') == 'push' and backup.findtext('incremental') == 'p1'
    assert [(d.get('name'), d.get('backup')) for d in backup.iterfind('disks/disk')] == [('vda', 'yes'), ('sda', 'no')]
    assert backup.find('disks/disk/target').get('file') == '/backups/app1/p2/vda.qcow2'
    checkpoint = ET.fromstring(checkpoint_xml)
    assert checkpoint.findtext('name') == 'p2'
    assert [(d.get('name'), d.get('checkpoint')) for d in checkpoint.iterfind('disks/disk')] == [
        ('vda', 'bitmap'), ('sda', 'no')]
    # The target files are made beforehand (an increment's backed by its parent's), so libvirt must reuse them.
    assert flags == libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL
    assert job['quiesced'] == 'crash-consistent'


def test_a_full_has_no_incremental_element():
    dom = FakeDomain()
    sets_with('1.1')._run_job(dom, '/b/p1', [('vda', '/images/app1.qcow2', 'qcow2', 1024)], 'p1', None, 'off',
                              ET.fromstring(DOMAIN))
    assert ET.fromstring(dom.begun[0]).find('incremental') is None


def test_an_increment_file_is_backed_by_the_parents_copy():
    volume = ET.fromstring(incremental._qcow2_xml('vda.qcow2', 1024, '/backups/app1/p1/vda.qcow2'))
    assert volume.findtext('backingStore/path') == '/backups/app1/p1/vda.qcow2'
    assert volume.find('backingStore/format').get('type') == 'qcow2'
    assert volume.findtext('target/compat') == '1.1'
    assert ET.fromstring(incremental._qcow2_xml('vda.qcow2', 1024)).find('backingStore') is None


@pytest.mark.parametrize('compat, words', [(None, 'qcow2 compat 0.10'), ('0.10', 'qcow2 compat 0.10')])
def test_a_disk_that_cannot_hold_a_checkpoint_is_refused_by_name(compat, words):
    with pytest.raises(InvalidRequest) as refused:
        sets_with(compat).check_take(FakeDomain(), 'full', None, 'auto')
    assert 'Disk vda of domain app1' in refused.value.msg and words in refused.value.msg
    assert refused.value.details['disk'] == 'vda'


def test_a_good_disk_is_planned_and_a_stopped_domain_refused():
    plan = sets_with('1.1').check_take(FakeDomain(), 'full', None, 'auto')
    assert plan['disks'] == [{'device': 'vda', 'file': '/backups/app1/<name>/vda.qcow2'}]
    with pytest.raises(InvalidRequest) as refused:
        sets_with('1.1', state=states.STOPPED).check_take(FakeDomain(), 'full', None, 'auto')
    assert 'running or paused' in refused.value.msg
