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
