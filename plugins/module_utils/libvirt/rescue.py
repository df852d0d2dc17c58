# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rescue on libvirt, the way Nova's libvirt driver does it, done by hand.

Rescue: the guest is shut down, a rescue disk is created next to its first disk (a qcow2 overlay
on `rescue_image`, or a blank disk), and the domain is redefined so that the rescue disk is the
first disk and boots, with the domain's own disks attached behind it (vda becomes vdb ...).  The
original definition is kept inside the rescue definition, in the domain's <metadata> (element
`rescue` of namespace RESCUE_NS), so nothing outside libvirt has to be kept in step.  Then the
rescue guest is started.

Unrescue: the rescue guest is destroyed (it is disposable, as in Nova), the original definition
is defined again (same UUID, name and disks), the rescue disk is deleted and the guest started.

The domain's own disks are only ever attached, never written by this code.  A domain that boots
by direct kernel boot (like the sandbox guest) is rescued with the same kernel and initramfs, or
with rescue_kernel/rescue_initrd/rescue_cmdline; the rescue disk is then simply the first disk.

Before anything changes (check mode too), the files the rescue guest boots from are looked for on
the host, through its storage API (host_files.py: the host may be remote): the kernel and initramfs,
and the rescue image; an unrescue looks for the original definition's kernel and initramfs.  Once the
guest was stopped, a rescue or unrescue that fails puts it back as it was: rescue defines the
original again, deletes the rescue disk and starts the guest if it ran; unrescue defines the rescue
guest again and starts it.  When even that fails, the message says plainly that the guest is off.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import string
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rescue import RescueStatus, Rescuer
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import error_text, libvirt
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.host_files import HostFiles

RESCUE_NS = 'https://github.com/vmops-lifecycle/vmops.lifecycle/rescue/1'
RESCUE_PREFIX = 'vmopsrescue'
DEFAULT_RESCUE_DISK_MIB = 64
DEFAULT_SHUTDOWN_TIMEOUT = 60
# Putting a guest back after a failed rescue or unrescue gets at least this long, even past the run's timeout.
PUT_BACK_SECONDS = 60
RESCUE_SUFFIX = '.rescue.qcow2'


def _tag(name):
    return '{%s}%s' % (RESCUE_NS, name)


class LibvirtRescuer(Rescuer):

    def __init__(self, backend):
        self.backend = backend
        self.conn = backend.conn

    # Reading ---------------------------------------------------------------------------------

    def settled(self, dom, deadline):
        observation = self.backend.observe(dom)
        if observation.task:
            observation = wait_until(lambda: self.backend.observe(dom), lambda o: not o.task, describe,
                                     'domain %s to finish %s' % (observation.name, observation.task), deadline)
        return self.status(dom, observation)

    def safe_status(self, dom):
        try:
            return self.status(dom)
        except Exception:  # pylint: disable=broad-except
            return None     # reporting a failure must not fail again

    def status(self, dom, observation=None):
        observation = observation or self.backend.observe(dom)
        record = self._record(dom)
        if record is None:
            return RescueStatus(observation.name, observation.id, observation.state, False,
                                details=observation.details)
        state = states.RESCUED if observation.state == states.RUNNING else observation.state
        return RescueStatus(observation.name, observation.id, state, True, details=observation.details,
                            image=record.get('image'), stable_device=False, disks=record.get('disks', []))

    def _record(self, dom):
        """The rescue record in the persistent definition, or None when the domain is not rescued."""
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, RESCUE_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise BackendError('Reading the metadata of %s failed: %s' % (dom.name(), error.get_error_message()))
        element = ET.fromstring(text)
        original = element.find('original')
        disks = [dict(disk.attrib) for disk in element.findall('disk')]
        return {
            'original_xml': base64.b64decode(original.text).decode('utf-8') if original is not None else None,
            'rescue_disk': element.get('rescue_disk'), 'image': element.get('image'),
            'rescued_at': element.get('rescued_at'), 'disks': disks,
        }

    # Planning --------------------------------------------------------------------------------

    def prepare(self, dom, status, request):
        """Everything the rescue needs, read and checked before anything is touched."""
        if status.state not in (states.RUNNING, states.STOPPED, states.ERROR):
            raise InvalidRequest('%s is %s; rescue works on a running, stopped or crashed domain. Bring it to '
                                 'running or stopped first (vmops.lifecycle.instance_state).'
                                 % (status.name, status.state), state=status.state)
        if not dom.isPersistent():
            raise InvalidRequest('%s is a transient domain; rescue redefines the domain and needs a persistent one.'
                                 % status.name)
        original = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if original != dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE):
            raise InvalidRequest('The definition of %s holds secrets (e.g. a graphics password). The original '
                                 'definition is kept in the domain metadata during a rescue, which read-only '
                                 'clients can see; remove the secret first.' % status.name)
        tree = ET.fromstring(original)
        disks = [disk for disk in tree.findall('./devices/disk') if disk.get('device', 'disk') == 'disk']
        if not disks or disks[0].find('target') is None:
            raise InvalidRequest('%s has no disk to rescue.' % status.name)
        first_source = _source_file(disks[0])
        if first_source is None:
            raise InvalidRequest('The first disk of %s is not a file; rescue needs a file-backed first disk '
                                 '(the rescue disk is created next to it).' % status.name)
        pool = self._pool_of(first_source, status.name)
        os_element = tree.find('os')
        kernel_boot = os_element is not None and os_element.find('kernel') is not None
        if request.rescue_image is None and request.rescue_kernel is None and not kernel_boot:
            raise InvalidRequest('%s boots from its disk: give rescue_image (a bootable rescue disk) or '
                                 'rescue_kernel (direct kernel boot of the rescue guest).' % status.name)
        image = None
        if request.rescue_image is not None:
            image = self._image_volume(request.rescue_image)
        if kernel_boot or request.rescue_kernel is not None:
            self._check_boot_files(
                'The rescue guest of %s' % status.name,
                (('rescue_kernel', request.rescue_kernel) if request.rescue_kernel is not None
                 else ('kernel', os_element.findtext('kernel'))),
                (('rescue_initrd', request.rescue_initrd) if request.rescue_kernel is not None
                 else ('initrd', os_element.findtext('initrd'))))
        rescue_name = status.name + RESCUE_SUFFIX
        layout = _layout(disks, pool_path_dir(first_source) + '/' + rescue_name)
        return {
            'original_xml': original, 'pool': pool, 'rescue_name': rescue_name, 'image': request.rescue_image,
            'image_format': image[1] if image else None, 'image_capacity': image[0].info()[1] if image else None,
            'kernel_boot': kernel_boot or request.rescue_kernel is not None,
            'stable_device': False, 'disks': layout,
            'rescue_disk_mib': request.rescue_disk_mib or DEFAULT_RESCUE_DISK_MIB,
        }

    def check_unrescuable(self, dom, status):
        record = self._record(dom)
        if not record.get('original_xml'):
            raise BackendError('The rescue record of %s has no original definition; it cannot be restored '
                               'automatically. Inspect it with virsh metadata %s --uri %s.'
                               % (status.name, status.name, RESCUE_NS))
        os_element = ET.fromstring(record['original_xml']).find('os')
        if os_element is not None and os_element.findtext('kernel'):
            self._check_boot_files('The original definition of %s' % status.name,
                                   ('kernel', os_element.findtext('kernel')), ('initrd', os_element.findtext('initrd')))

    def _check_boot_files(self, what, *files):
        """Refuse, before anything changes, a kernel or initramfs the host does not have (as libvirt sees it)."""
        probe = HostFiles(self.conn)
        try:
            for option, path in files:
                if not path:
                    continue
                found = probe.stat(path)
                if found is None or found[0] != libvirt.VIR_STORAGE_VOL_FILE or not found[1]:
                    raise InvalidRequest('%s boots from %s %s, which %s on %s (as its libvirt sees it). Nothing was '
                                         'changed.' % (what, option, path, 'is not a file with data' if found
                                                       else 'does not exist', self.backend.location()))
        finally:
            probe.close()

    def _pool_of(self, path, name):
        try:
            return self.conn.storageVolLookupByPath(path).storagePoolLookupByVolume()
        except libvirt.libvirtError:
            raise InvalidRequest('The first disk of %s (%s) is in no libvirt storage pool; the rescue disk is '
                                 'created in the pool of that disk.' % (name, path))

    def _image_volume(self, path):
        try:
            volume = self.conn.storageVolLookupByPath(path)
            volume.storagePoolLookupByVolume().refresh(0)
            volume = self.conn.storageVolLookupByPath(path)     # still there once its pool looked again
        except libvirt.libvirtError:
            raise InvalidRequest('rescue_image %s is not a volume of a libvirt storage pool on %s (give its path '
                                 'as the host sees it). Nothing was changed.' % (path, self.backend.location()))
        fmt = ET.fromstring(volume.XMLDesc(0)).find('./target/format')
        return volume, (fmt.get('type') if fmt is not None else 'raw')

    # Acting ----------------------------------------------------------------------------------

    def rescue(self, dom, before, prepared, request, deadline):
        steps = {}
        steps['power_off'] = self._power_off(dom, before, request, deadline)
        pool = prepared['pool']
        volume = None
        try:
            self._delete_leftover(pool, prepared['rescue_name'])
            volume = pool.createXML(_volume_xml(prepared), 0)
            dom = self._boot(before, _rescue_definition(prepared, volume.path(), request), 'the rescue guest', deadline)
        except (libvirt.libvirtError, VmopsError) as error:
            raise BackendError('The rescue of %s failed: %s. %s' % (before.name, error_text(error), self._put_back(
                before, prepared['original_xml'], volume, _put_back_deadline(deadline))))
        return self.status(dom)._replace(steps=steps)

    def _boot(self, before, xml, what, deadline):
        """Define `xml` for the domain (after cutting the power of whatever of it still runs), start it and
        wait until it runs; returns the domain."""
        self._power_cut(before)
        self.conn.defineXML(xml)
        return self._start(before, what, deadline)

    def _power_cut(self, before):
        dom = self.backend.find(before.id)
        if dom is not None and dom.isActive():
            power.destroy(dom)

    def _start(self, before, what, deadline):
        dom = self.backend.find(before.id)
        power.start(dom)
        self._wait_running(dom, before.name, what, deadline)
        return dom

    def _put_back(self, before, original_xml, volume, deadline):
        """After a failed rescue: the original definition again, the rescue disk gone, and the guest started
        when it ran before.  Returns what the guest is now, in plain words."""
        defined = False
        try:
            self._power_cut(before)         # a rescue guest that started and then failed
            self.conn.defineXML(original_xml)
            defined = True
            if before.state == states.RUNNING:
                self._start(before, 'the guest', deadline)
        except (libvirt.libvirtError, VmopsError) as error:
            return ('%s; putting it back failed too (%s): %s is %s NOW, start it by hand once the cause is fixed.'
                    % ('Its original definition is back' if defined else 'Nothing was put back', error_text(error),
                       before.name, self._state_words(before.id)))
        finally:
            if defined and volume is not None:      # no definition uses it any more
                try:
                    volume.delete(0)
                except libvirt.libvirtError:
                    pass
        if before.state == states.RUNNING:
            return 'Its original definition is back and it runs again (a new boot).'
        return 'Its original definition is back; it is %s, as before.' % before.state

    def _state_words(self, domain_id):
        try:
            dom = self.backend.find(domain_id)
            observation = self.backend.observe(dom) if dom is not None else None
        except (libvirt.libvirtError, VmopsError):
            return 'in a state that cannot be read'
        if observation is None:
            return 'undefined'
        return {states.STOPPED: 'SHUT OFF'}.get(observation.state, observation.state)

    def unrescue(self, dom, before, request, deadline):
        record = self._record(dom)
        rescue_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        steps = {}
        if dom.isActive():
            steps['power_off'] = 'destroy'      # the rescue guest is disposable, as in Nova
        try:
            dom = self._boot(before, record['original_xml'], 'the guest', deadline)
        except (libvirt.libvirtError, VmopsError) as error:
            raise BackendError('The unrescue of %s failed: %s. %s' % (before.name, error_text(error), self._rescue_again(
                before, rescue_xml, _put_back_deadline(deadline))))
        if record.get('rescue_disk'):
            try:
                self.conn.storageVolLookupByPath(record['rescue_disk']).delete(0)
                steps['rescue_disk_deleted'] = record['rescue_disk']
            except libvirt.libvirtError:
                steps['rescue_disk_deleted'] = None     # already gone
        return self.status(dom)._replace(steps=steps)

    def _rescue_again(self, before, rescue_xml, deadline):
        """After a failed unrescue: the rescue definition again, its guest started (it ran before)."""
        try:
            self._boot(before, rescue_xml, 'the rescue guest', deadline)
        except (libvirt.libvirtError, VmopsError) as error:
            return ('Starting its rescue guest again failed too (%s): %s is %s NOW.'
                    % (error_text(error), before.name, self._state_words(before.id)))
        return 'It is rescued again: its rescue guest runs (a new boot), the rescue disk kept.'

    def _power_off(self, dom, before, request, deadline):
        # The power is cut when the guest does not go down in time, as Nova does (a guest in need of
        # rescue may not shut down); a crashed one at once.
        return power.power_off(dom, shutdown_budget(request, deadline), True, 'the rescue',
                               destroy_at_once=before.state == states.ERROR)

    def _delete_leftover(self, pool, name):
        try:
            pool.refresh(0)
            pool.storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError:
            pass    # none: the usual case

    def _wait_running(self, dom, name, what, deadline):
        def failure(observation):
            if observation.state in (states.ERROR, states.STOPPED):
                return '%s of %s is %s' % (what, name, describe(observation))
            return None
        wait_until(lambda: self.backend.observe(dom), lambda o: o.state == states.RUNNING and not o.task,
                   describe, '%s of %s to run' % (what, name), deadline, failure=failure)


def _put_back_deadline(deadline):
    return Deadline(max(deadline.remaining(), PUT_BACK_SECONDS))


def shutdown_budget(request, deadline):
    """How long a rescue or restore waits for the guest to shut down before the power is cut."""
    return Deadline(min(request.shutdown_timeout or DEFAULT_SHUTDOWN_TIMEOUT, deadline.remaining()))


def _source_file(disk):
    source = disk.find('source')
    if source is None:
        return None
    return source.get('file')


def pool_path_dir(path):
    return path.rsplit('/', 1)[0]


def _layout(disks, rescue_path):
    """The disks as the rescue guest sees them: the rescue disk first, the domain's disks after it.

    Disks on the first disk's bus prefix (vd, sd, hd) move one letter on; others keep their target.
    """
    first_target = disks[0].find('target').get('dev')
    prefix = next((known for known in ('xvd', 'vd', 'sd', 'hd') if first_target.startswith(known)), first_target[:-1])
    layout = [{'target': first_target, 'role': 'rescue', 'source': rescue_path}]
    index = 1
    for disk in disks:
        target = disk.find('target').get('dev')
        if target.startswith(prefix):
            new_target = prefix + _letters(index)
            index += 1
        else:
            new_target = target
        layout.append({'target': new_target, 'role': 'original', 'original_target': target,
                       'source': _source_file(disk) or ''})
    return layout


def _letters(index):
    """0 -> a, 25 -> z, 26 -> aa (libvirt's disk naming)."""
    letters = ''
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = string.ascii_lowercase[remainder] + letters
    return letters


def _volume_xml(prepared):
    volume = ET.Element('volume')
    ET.SubElement(volume, 'name').text = prepared['rescue_name']
    target = ET.SubElement(volume, 'target')
    ET.SubElement(target, 'format', type='qcow2')
    if prepared['image']:
        ET.SubElement(volume, 'capacity', unit='bytes').text = str(prepared['image_capacity'])
        backing = ET.SubElement(volume, 'backingStore')
        ET.SubElement(backing, 'path').text = prepared['image']
        ET.SubElement(backing, 'format', type=prepared['image_format'])
    else:
        ET.SubElement(volume, 'capacity', unit='MiB').text = str(prepared['rescue_disk_mib'])
    return ET.tostring(volume, encoding='unicode')


def _rescue_definition(prepared, rescue_path, request):
    """The rescue definition: the original with the rescue disk first, and the original kept in <metadata>."""
    tree = ET.fromstring(prepared['original_xml'])
    devices = tree.find('devices')
    disks = [disk for disk in devices.findall('disk') if disk.get('device', 'disk') == 'disk']
    first = disks[0]
    targets = dict((entry['original_target'], entry['target']) for entry in prepared['disks'][1:])
    for disk in disks:
        target = disk.find('target')
        target.set('dev', targets[target.get('dev')])
        for child in list(disk):
            if child.tag in ('address', 'boot', 'alias'):
                disk.remove(child)      # libvirt assigns new addresses; only the rescue disk boots
    for other in devices:
        for boot in other.findall('boot'):
            other.remove(boot)
    rescue = ET.Element('disk', type='file', device='disk')
    first_driver = first.find('driver')
    ET.SubElement(rescue, 'driver', name=first_driver.get('name', 'qemu') if first_driver is not None else 'qemu',
                  type='qcow2')
    ET.SubElement(rescue, 'source', file=rescue_path)
    ET.SubElement(rescue, 'target', dev=prepared['disks'][0]['target'], bus=first.find('target').get('bus', 'virtio'))
    os_element = tree.find('os')
    if request.rescue_kernel is not None:
        for name in ('kernel', 'initrd', 'cmdline'):
            for old in os_element.findall(name):
                os_element.remove(old)
        ET.SubElement(os_element, 'kernel').text = request.rescue_kernel
        if request.rescue_initrd:
            ET.SubElement(os_element, 'initrd').text = request.rescue_initrd
    if request.rescue_cmdline is not None:
        for old in os_element.findall('cmdline'):
            os_element.remove(old)
        ET.SubElement(os_element, 'cmdline').text = request.rescue_cmdline
    if not prepared['kernel_boot']:
        for boot in os_element.findall('boot'):
            os_element.remove(boot)
        ET.SubElement(rescue, 'boot', order='1')
    devices.insert(list(devices).index(first), rescue)
    metadata = tree.find('metadata')
    if metadata is None:
        metadata = ET.SubElement(tree, 'metadata')
    record = ET.SubElement(metadata, _tag('rescue'), rescue_disk=rescue_path,
                           rescued_at=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
    if prepared['image']:
        record.set('image', prepared['image'])
    for entry in prepared['disks']:
        ET.SubElement(record, 'disk', dict((key, str(value)) for key, value in entry.items()))
    ET.SubElement(record, 'original', encoding='base64').text = base64.b64encode(
        prepared['original_xml'].encode('utf-8')).decode('ascii')
    ET.register_namespace(RESCUE_PREFIX, RESCUE_NS)
    return ET.tostring(tree, encoding='unicode')
