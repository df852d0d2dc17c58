# -*- coding: utf-8 -*-
"""The libvirt rescue definition (pure XML): disk layout, the rescue domain and its volume."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import rescue as libvirt_rescue
from ansible_collections.vmops.lifecycle.tests.unit.fakes import rescue_request


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


# A rescue or unrescue that fails once the guest was stopped puts it back -------------------------

import pytest  # noqa: E402

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline  # noqa: E402

UUID = '0b8c5e2e-2f5e-4f5b-9d43-5ad4b1f0c001'


def _refused(text):
    error = libvirt.libvirtError(text)
    error.err = (libvirt.VIR_ERR_INTERNAL_ERROR, 0, text, 0, None, None, None, 0, 0)
    return error


class Host(object):
    """One domain on one host: its definition, whether it runs, which definitions fail to start."""

    def __init__(self, xml=ORIGINAL, active=True):
        self.xml, self.active = xml, active
        self.fails = []             # predicates on the definition being started
        self.calls = []
        self.deleted = []

    # the connection
    def defineXML(self, xml):
        self.calls.append('define %s' % ('rescue' if 'rescue.qcow2' in xml else 'original'))
        self.xml = xml
        return Dom(self)

    def storageVolLookupByPath(self, path):
        return Volume(self, path)

    # the backend
    def find(self, identifier):
        return Dom(self)

    def observe(self, dom):
        return Observation('g1', UUID, states.RUNNING if self.active else states.STOPPED, None, None, {})

    def location(self):
        return 'test://h1'


class Dom(object):
    def __init__(self, host):
        self.host = host

    def isActive(self):
        return self.host.active

    def destroy(self):
        self.host.calls.append('destroy')
        self.host.active = False

    def shutdown(self):
        self.host.calls.append('shutdown')
        self.host.active = False

    def state(self):
        return [libvirt.VIR_DOMAIN_RUNNING if self.host.active else libvirt.VIR_DOMAIN_SHUTOFF, 1]

    def name(self):
        return 'g1'

    def create(self):
        if any(fails(self.host.xml) for fails in self.host.fails):
            self.host.calls.append('start failed')
            raise _refused("internal error: qemu unexpectedly closed the monitor: qemu: linux kernel too old")
        self.host.calls.append('start')
        self.host.active = True

    def XMLDesc(self, flags):
        return self.host.xml

    def metadata(self, kind, namespace, flags):
        if 'rescue.qcow2' not in self.host.xml:
            error = libvirt.libvirtError('no metadata')
            error.err = (libvirt.VIR_ERR_NO_DOMAIN_METADATA, 0, 'no metadata', 0, None, None, None, 0, 0)
            raise error
        record = ET.fromstring(self.host.xml).find('./metadata/{%s}rescue' % libvirt_rescue.RESCUE_NS)
        return ET.tostring(record, encoding='unicode')


class Volume(object):
    def __init__(self, host, path):
        self.host, self.path_ = host, path

    def path(self):
        return self.path_

    def delete(self, flags):
        self.host.deleted.append(self.path_)


class Pool(object):
    def __init__(self, host):
        self.host = host

    def refresh(self, flags):
        pass

    def storageVolLookupByName(self, name):
        raise _refused('no vol')

    def createXML(self, xml, flags):
        return Volume(self.host, '/img/g1.rescue.qcow2')


def rescuer(host):
    backend = host
    backend.conn = host
    return libvirt_rescue.LibvirtRescuer(backend)


def before(state=states.RUNNING, rescued=False):
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import RescueStatus
    return RescueStatus('g1', UUID, state, rescued)


def test_a_rescue_whose_guest_does_not_start_puts_the_guest_back_running():
    host = Host()
    host.fails.append(lambda xml: 'rescue.qcow2' in xml)
    prepared = dict(_prepared(), pool=Pool(host))
    with pytest.raises(BackendError) as info:
        rescuer(host).rescue(Dom(host), before(), prepared, rescue_request(shutdown_timeout=1), Deadline(30))
    assert 'Its original definition is back and it runs again' in info.value.msg
    assert host.calls[-3:] == ['start failed', 'define original', 'start'] and host.active
    assert host.deleted == ['/img/g1.rescue.qcow2'] and 'rescue.qcow2' not in host.xml


def test_a_rescue_of_a_stopped_guest_that_fails_leaves_it_stopped_as_before():
    host = Host(active=False)
    host.fails.append(lambda xml: 'rescue.qcow2' in xml)
    prepared = dict(_prepared(), pool=Pool(host))
    with pytest.raises(BackendError) as info:
        rescuer(host).rescue(Dom(host), before(states.STOPPED), prepared, rescue_request(), Deadline(30))
    assert 'it is stopped, as before' in info.value.msg and not host.active and 'rescue.qcow2' not in host.xml


def test_a_guest_that_cannot_be_put_back_is_said_to_be_off():
    host = Host()
    host.fails.append(lambda xml: True)
    prepared = dict(_prepared(), pool=Pool(host))
    with pytest.raises(BackendError) as info:
        rescuer(host).rescue(Dom(host), before(), prepared, rescue_request(shutdown_timeout=1), Deadline(30))
    assert 'putting it back failed too' in info.value.msg and 'g1 is SHUT OFF NOW' in info.value.msg


def test_an_unrescue_whose_guest_does_not_start_is_rescued_again():
    rescue_xml = libvirt_rescue._rescue_definition(_prepared(), '/img/g1.rescue.qcow2', rescue_request())
    host = Host(rescue_xml)
    host.fails.append(lambda xml: 'rescue.qcow2' not in xml)
    with pytest.raises(BackendError) as info:
        rescuer(host).unrescue(Dom(host), before(states.RESCUED, True), rescue_request(wanted='unrescued'),
                               Deadline(30))
    assert 'It is rescued again: its rescue guest runs' in info.value.msg
    assert host.calls == ['destroy', 'define original', 'start failed', 'define rescue', 'start']
    assert host.active and 'rescue.qcow2' in host.xml and host.deleted == []      # the rescue disk is kept


def test_a_rescue_kernel_the_host_does_not_have_is_refused_before_anything_changes(monkeypatch):
    class Probe(object):
        def __init__(self, conn):
            pass

        def stat(self, path):
            return (libvirt.VIR_STORAGE_VOL_FILE, 7000000) if path == '/k' else None

        def close(self):
            pass
    monkeypatch.setattr(libvirt_rescue, 'HostFiles', Probe)
    host = Host()
    with pytest.raises(InvalidRequest) as info:
        rescuer(host)._check_boot_files('The rescue guest of g1', ('rescue_kernel', '/k'), ('rescue_initrd', '/gone'))
    assert 'rescue_initrd /gone, which does not exist on test://h1' in info.value.msg and host.calls == []
