# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Launch on libvirt: a new domain from a base disk image (instance_launch's libvirt driver, core/launch.py).

The base image is a volume of one of the host's storage pools, named by its path as the host sees it.  The
domain's disk `<name>.qcow2` is made in that pool (or `pool`) through the storage API: a qcow2 overlay whose
backing file is the base (`disk_mode: overlay`, the default: instant, the base must stay), or a full copy
(`copy`: a clone of the base, in its format).  The domain gets `memory_mib`, `vcpus`, one virtio NIC per
libvirt network of `networks`, a virtio disk and a serial console; it is defined, then started.  Nothing is
created before every name was resolved, and a launch that fails is removed with its disk.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.launch import Launcher
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

DEFAULT_DISK_MODE = 'overlay'
DEFAULT_DOMAIN_TYPE = 'kvm'


class LibvirtLauncher(Launcher):

    @classmethod
    def for_request(cls, backend, request):
        return cls(backend)

    def __init__(self, backend):
        self.backend = backend
        self.conn = backend.conn

    def _message(self, error):
        return error.get_error_message() or str(error)

    def plan(self, request):
        where = self.backend.location()
        try:
            base = self.conn.storageVolLookupByPath(request.image)
            base_pool = base.storagePoolLookupByVolume()
        except libvirt.libvirtError:
            raise InvalidRequest('image %s is not a volume of any storage pool of %s; give the path of a base disk '
                                 'image in one of its pools. Nothing was changed.' % (request.image, where))
        tree = ET.fromstring(base.XMLDesc(0))
        base_format = tree.find('target/format').get('type') if tree.find('target/format') is not None else 'raw'
        try:
            pool = self.conn.storagePoolLookupByName(request.pool) if request.pool else base_pool
            pool_path = ET.fromstring(pool.XMLDesc(0)).findtext('target/path')
        except libvirt.libvirtError as error:
            raise InvalidRequest('pool %s: %s; nothing was changed.' % (request.pool, self._message(error)))
        mode = request.disk_mode or DEFAULT_DISK_MODE
        disk_format = 'qcow2' if mode == 'overlay' else base_format
        disk_name = '%s.%s' % (request.name, 'qcow2' if disk_format == 'qcow2' else 'img')
        try:
            pool.storageVolLookupByName(disk_name)
            raise InvalidRequest('%s already exists in pool %s of %s (a disk of another domain?); remove it or choose '
                                 'another name. Nothing was changed.' % (disk_name, pool.name(), where))
        except libvirt.libvirtError:
            pass
        for network in request.networks or []:
            try:
                self.conn.networkLookupByName(network)
            except libvirt.libvirtError:
                raise InvalidRequest('network %s does not exist on %s; nothing was changed.' % (network, where))
        return {'name': request.name, 'image': request.image, 'image_format': base_format,
                'capacity_bytes': base.info()[1], 'pool': pool.name(), 'disk_mode': mode, 'disk_format': disk_format,
                'disk': '%s/%s' % (pool_path.rstrip('/'), disk_name), 'memory_mib': request.memory_mib,
                'vcpus': request.vcpus, 'networks': list(request.networks or []),
                'domain_type': request.domain_type or DEFAULT_DOMAIN_TYPE}

    def create(self, plan):
        pool = self.conn.storagePoolLookupByName(plan['pool'])
        disk_name = plan['disk'].rsplit('/', 1)[1]
        try:
            base = self.conn.storageVolLookupByPath(plan['image'])
            if plan['disk_mode'] == 'overlay':
                volume = pool.createXML(_volume_xml(disk_name, plan, backing=True), 0)
            else:
                volume = pool.createXMLFrom(_volume_xml(disk_name, plan, backing=False), base, 0)
        except libvirt.libvirtError as error:
            raise BackendError('Creating the disk %s of %s failed: %s; nothing was left behind.'
                               % (plan['disk'], plan['name'], self._message(error)))
        try:
            dom = self.conn.defineXML(_domain_xml(plan, volume.path()))
        except libvirt.libvirtError as error:
            volume.delete(0)
            raise BackendError('Defining %s failed: %s; its disk was removed again.'
                               % (plan['name'], self._message(error)))
        try:
            power.start(dom)
        except libvirt.libvirtError as error:
            self.discard(dom)
            raise BackendError('Starting %s failed: %s; the domain and its disk were removed again.'
                               % (plan['name'], self._message(error)))
        return dom

    def discard(self, ref):
        """Power off, undefine and delete the disk of a domain this launch made."""
        disks = [source.get('file') for source in ET.fromstring(ref.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                 .iterfind('./devices/disk/source') if source.get('file')]
        if ref.isActive():
            power.destroy(ref)
        ref.undefine()
        for path in disks:
            try:
                self.conn.storageVolLookupByPath(path).delete(0)
            except libvirt.libvirtError:
                pass


def _volume_xml(name, plan, backing):
    volume = ET.Element('volume')
    ET.SubElement(volume, 'name').text = name
    ET.SubElement(volume, 'capacity', unit='bytes').text = str(plan['capacity_bytes'])
    ET.SubElement(ET.SubElement(volume, 'target'), 'format', type=plan['disk_format'])
    if backing:
        store = ET.SubElement(volume, 'backingStore')
        ET.SubElement(store, 'path').text = plan['image']
        ET.SubElement(store, 'format', type=plan['image_format'])
    return ET.tostring(volume, encoding='unicode')


def _domain_xml(plan, disk_path):
    domain = ET.Element('domain', type=plan['domain_type'])
    ET.SubElement(domain, 'name').text = plan['name']
    ET.SubElement(domain, 'memory', unit='MiB').text = str(plan['memory_mib'])
    ET.SubElement(domain, 'vcpu').text = str(plan['vcpus'])
    os_element = ET.SubElement(domain, 'os')
    ET.SubElement(os_element, 'type').text = 'hvm'
    ET.SubElement(os_element, 'boot', dev='hd')
    ET.SubElement(ET.SubElement(domain, 'features'), 'acpi')
    devices = ET.SubElement(domain, 'devices')
    disk = ET.SubElement(devices, 'disk', type='file', device='disk')
    ET.SubElement(disk, 'driver', name='qemu', type=plan['disk_format'])
    ET.SubElement(disk, 'source', file=disk_path)
    ET.SubElement(disk, 'target', dev='vda', bus='virtio')
    for network in plan['networks']:
        interface = ET.SubElement(devices, 'interface', type='network')
        ET.SubElement(interface, 'source', network=network)
        ET.SubElement(interface, 'model', type='virtio')
    ET.SubElement(devices, 'serial', type='pty')
    ET.SubElement(devices, 'console', type='pty')
    return ET.tostring(domain, encoding='unicode')
