# -*- coding: utf-8 -*-
"""Unit tests of instance_rescue and instance_restore: validation, plans, check mode, idempotence,
refusals, and the libvirt rescue definition (pure XML), against in-memory rescuers/restorers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import rescue as libvirt_rescue
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceLocked, InstanceNotFound, InvalidRequest)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import (
    RescueRequest, RescueStatus, ensure_rescue, validate_rescue_request)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.restore import (
    InstanceStatus, RestoreRequest, ensure_restored, validate_restore_request)


class Model(object):
    def __init__(self, name):
        self.name = name


LIBVIRT, OPENSTACK = Model('libvirt'), Model('openstack')


def rescue_request(**changes):
    base = dict(identifier='web1', wanted='rescued', rescue_image=None, admin_password=None, rescue_kernel=None,
                rescue_initrd=None, rescue_cmdline=None, rescue_disk_mib=None, shutdown_timeout=None, wait=True,
                timeout=60)
    base.update(changes)
    return RescueRequest(**base)


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


class Backend(object):
    def __init__(self, model, exists=True):
        self.model = model
        self.exists = exists

    def find(self, identifier):
        return identifier if self.exists else None

    def location(self):
        return 'test://'

    def request_count(self):
        return None


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
    result = ensure_rescue(Backend(LIBVIRT), rescue_request(), check_mode=True, rescuer=rescuer)
    assert result['changed'] and result['instance']['plan'] == ['rescue'] and rescuer.actions == []
    assert result['rescue']['planned'] and result['diff'] == {'before': {'rescued': False}, 'after': {'rescued': True}}


def test_rescue_apply_then_repeat_is_unchanged():
    rescuer = FakeRescuer()
    first = ensure_rescue(Backend(LIBVIRT), rescue_request(), rescuer=rescuer)
    assert first['changed'] and first['instance']['executed'][0]['power_off'] == 'shutdown'
    assert first['instance']['state'] == states.RESCUED and first['rescue']['image'] == 'img'
    second = ensure_rescue(Backend(LIBVIRT), rescue_request(), rescuer=rescuer)
    assert not second['changed'] and rescuer.actions == ['rescue']


def test_unrescue_apply_then_repeat_is_unchanged():
    rescuer = FakeRescuer(rescued=True)
    first = ensure_rescue(Backend(LIBVIRT), rescue_request(wanted='unrescued'), rescuer=rescuer)
    second = ensure_rescue(Backend(LIBVIRT), rescue_request(wanted='unrescued'), rescuer=rescuer)
    assert first['changed'] and not second['changed'] and rescuer.actions == ['unrescue']
    assert first['instance']['state'] == states.RUNNING


def test_rescue_refusal_and_lock_change_nothing():
    refused = FakeRescuer(refuse='shelved; Nova cannot rescue')
    with pytest.raises(InvalidRequest):
        ensure_rescue(Backend(OPENSTACK), rescue_request(), rescuer=refused)
    locked = FakeRescuer(locked=True)
    with pytest.raises(InstanceLocked):
        ensure_rescue(Backend(OPENSTACK), rescue_request(), rescuer=locked)
    assert refused.actions == [] and locked.actions == []


def test_rescue_unknown_instance():
    with pytest.raises(InstanceNotFound):
        ensure_rescue(Backend(LIBVIRT, exists=False), rescue_request(), rescuer=FakeRescuer())


ORIGINAL = """<domain type='qemu'>
  <name>g1</name>
  <uuid>0b8c5e2e-2f5e-4f5b-9d43-5ad4b1f0c001</uuid>
  <os><type>hvm</type><kernel>/k</kernel><initrd>/i</initrd><cmdline>console=ttyS0</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/img/g1.qcow2'/><target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/img/g1-data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc' bus='ide'/></disk>
  </devices>
</domain>"""


def _prepared(kernel_boot=True, image=None):
    tree = ET.fromstring(ORIGINAL)
    disks = [d for d in tree.findall('./devices/disk') if d.get('device') == 'disk']
    return {'original_xml': ORIGINAL, 'rescue_name': 'g1.rescue.qcow2', 'image': image, 'image_format': 'qcow2',
            'image_capacity': 1024, 'kernel_boot': kernel_boot, 'stable_device': False, 'rescue_disk_mib': 64,
            'disks': libvirt_rescue._layout(disks, '/img/g1.rescue.qcow2')}


def test_layout_moves_the_domain_disks_one_letter_on():
    layout = _prepared()['disks']
    assert [(d['target'], d['role'], d.get('original_target')) for d in layout] == [
        ('vda', 'rescue', None), ('vdb', 'original', 'vda'), ('vdc', 'original', 'vdb')]


def test_letters_follow_libvirt_naming():
    assert [libvirt_rescue._letters(i) for i in (0, 1, 25, 26, 27)] == ['a', 'b', 'z', 'aa', 'ab']


def test_rescue_definition_keeps_the_original_and_boots_the_rescue_disk():
    xml = libvirt_rescue._rescue_definition(_prepared(), '/img/g1.rescue.qcow2',
                                            rescue_request(rescue_cmdline='console=ttyS0 rescue'))
    tree = ET.fromstring(xml)
    disks = tree.findall('./devices/disk')
    assert [(d.find('source').get('file'), d.find('target').get('dev')) for d in disks] == [
        ('/img/g1.rescue.qcow2', 'vda'), ('/img/g1.qcow2', 'vdb'), ('/img/g1-data.raw', 'vdc'), ('/iso/x.iso', 'hdc')]
    assert disks[1].find('address') is None     # libvirt assigns new addresses
    assert tree.findtext('./os/kernel') == '/k' and tree.findtext('./os/cmdline') == 'console=ttyS0 rescue'
    record = tree.find('./metadata/{%s}rescue' % libvirt_rescue.RESCUE_NS)
    assert base64.b64decode(record.find('original').text).decode() == ORIGINAL
    assert [d.get('target') for d in record.findall('disk')] == ['vda', 'vdb', 'vdc']


def test_rescue_definition_from_a_disk_boots_the_rescue_disk_first():
    xml = libvirt_rescue._rescue_definition(_prepared(kernel_boot=False, image='/img/rescue.qcow2'),
                                            '/img/g1.rescue.qcow2', rescue_request(rescue_image='/img/rescue.qcow2'))
    tree = ET.fromstring(xml)
    first = tree.findall('./devices/disk')[0]
    assert first.find('boot').get('order') == '1' and tree.find('./os/boot') is None
    assert tree.find('./metadata/{%s}rescue' % libvirt_rescue.RESCUE_NS).get('image') == '/img/rescue.qcow2'


def test_volume_xml_overlays_the_rescue_image():
    volume = ET.fromstring(libvirt_rescue._volume_xml(_prepared(image='/img/rescue.qcow2')))
    assert volume.findtext('./backingStore/path') == '/img/rescue.qcow2'
    blank = ET.fromstring(libvirt_rescue._volume_xml(_prepared()))
    assert blank.find('backingStore') is None and blank.findtext('capacity') == '64'


# instance_restore --------------------------------------------------------------------------

def restore_request(**changes):
    base = dict(identifier='web1', snapshot='snap-a', series=None, relaunch_missing=False, power_state='keep',
                force=False, allow_other_instance=False, availability_zone=None, backup_dir=None,
                shutdown_timeout=None, wait=True, timeout=60)
    base.update(changes)
    return RestoreRequest(**base)


@pytest.mark.parametrize('model, changes, message', [
    (LIBVIRT, dict(series='s'), 'exactly one of snapshot'),
    (LIBVIRT, dict(snapshot=None), 'exactly one of snapshot'),
    (OPENSTACK, dict(backup_dir='/b'), 'only apply to the libvirt backend'),
    (LIBVIRT, dict(availability_zone='nova', relaunch_missing=True), 'only applies to the openstack backend'),
    (OPENSTACK, dict(availability_zone='nova'), 'set relaunch_missing'),
    (LIBVIRT, dict(backup_dir='rel'), 'absolute path'),
    (LIBVIRT, dict(power_state='paused'), 'power_state must be'),
])
def test_restore_bad_input(model, changes, message):
    with pytest.raises(InvalidRequest) as raised:
        validate_restore_request(model, restore_request(**changes))
    assert message in raised.value.msg


class FakeRestorer(object):
    def __init__(self, exists=True, owner='id-1', restored_from=None, state=states.RUNNING):
        self.exists, self.owner_id, self.restored_from, self.state = exists, owner, restored_from, state
        self.actions = []

    def close(self):
        pass

    def request_count(self):
        return None

    def find(self, identifier):
        return 'id-1' if self.exists else None

    def status(self, ref):
        return InstanceStatus('web1', 'id-1', self.state, self.restored_from, False, None, {})

    def snapshot(self, ref, request):
        if request.snapshot == 'nosuch':
            raise InvalidRequest('No snapshot nosuch')
        return {'id': 'snap-id', 'name': request.snapshot, 'kind': 'image', 'recorded': {'instance_name': 'web1'}}

    def owner(self, record):
        return self.owner_id

    def plan_power(self, ref, before, request):
        if request.power_state in ('keep', before.state):
            return {'power': None, 'steps': []}
        return {'power': request.power_state, 'steps': ['power_' + request.power_state],
                'state_after': request.power_state}

    def plan_restore(self, ref, before, record, request):
        return {'action': 'rebuild', 'steps': ['rebuild'], 'power': None, 'state_after': before.state}

    def restore(self, ref, before, record, plan, request, deadline):
        self.actions.append('rebuild')
        self.restored_from = record['id']
        return self.status(ref), {}

    def power(self, ref, before, plan, request, deadline):
        self.actions.append(plan['power'])
        self.state = plan['power']
        return self.status(ref), {}

    def plan_relaunch(self, record, request):
        return {'action': 'relaunch', 'steps': ['launch'], 'power': None, 'name': request.identifier}

    def relaunch(self, record, plan, request, deadline):
        self.actions.append('launch')
        self.exists, self.restored_from = True, record['id']
        return self.status('id-1'), {}


def test_restore_check_apply_repeat():
    restorer = FakeRestorer()
    check = ensure_restored(Backend(OPENSTACK), restore_request(), check_mode=True, restorer=restorer)
    assert check['changed'] and check['action'] == 'rebuild' and restorer.actions == []
    applied = ensure_restored(Backend(OPENSTACK), restore_request(), restorer=restorer)
    assert applied['changed'] and applied['instance']['restored_from'] == 'snap-id'
    again = ensure_restored(Backend(OPENSTACK), restore_request(), restorer=restorer)
    assert not again['changed'] and again['action'] == 'none' and restorer.actions == ['rebuild']
    forced = ensure_restored(Backend(OPENSTACK), restore_request(force=True), restorer=restorer)
    assert forced['changed'] and restorer.actions == ['rebuild', 'rebuild']


def test_already_restored_but_other_power_state_only_powers():
    restorer = FakeRestorer(restored_from='snap-id')
    result = ensure_restored(Backend(OPENSTACK), restore_request(power_state='stopped'), restorer=restorer)
    assert result['changed'] and result['action'] == 'none' and restorer.actions == ['stopped']


def test_snapshot_of_another_instance_is_refused_unless_allowed():
    restorer = FakeRestorer(owner='id-other')
    with pytest.raises(InvalidRequest) as raised:
        ensure_restored(Backend(OPENSTACK), restore_request(), restorer=restorer)
    assert 'another instance' in raised.value.msg and restorer.actions == []
    ensure_restored(Backend(OPENSTACK), restore_request(allow_other_instance=True), restorer=restorer)
    assert restorer.actions == ['rebuild']


def test_missing_instance_needs_relaunch_missing():
    restorer = FakeRestorer(exists=False)
    with pytest.raises(InstanceNotFound):
        ensure_restored(Backend(OPENSTACK), restore_request(), restorer=restorer)
    result = ensure_restored(Backend(OPENSTACK), restore_request(relaunch_missing=True), restorer=restorer)
    assert result['action'] == 'relaunch' and restorer.actions == ['launch']


def test_relaunch_under_another_name_is_refused_unless_allowed():
    restorer = FakeRestorer(exists=False)
    with pytest.raises(InvalidRequest) as raised:
        ensure_restored(Backend(OPENSTACK), restore_request(identifier='db9', relaunch_missing=True), restorer=restorer)
    assert 'not of db9' in raised.value.msg and restorer.actions == []


def test_unknown_snapshot_changes_nothing():
    restorer = FakeRestorer()
    with pytest.raises(InvalidRequest):
        ensure_restored(Backend(OPENSTACK), restore_request(snapshot='nosuch'), restorer=restorer)
    assert restorer.actions == []
