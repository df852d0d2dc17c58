# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A drain's disks on libvirt: which ones a move copies, and the copies of a cold move.

Shared storage is never guessed: a disk counts as shared only when its pool is of a network type
(netfs, rbd, ...) or when the destination sees a file at the same path AND a probe volume created in
the source pool shows up in the destination pool at once.  Before that, the pools of the disk's
directory are refreshed on both hosts (a `dir` pool lists only what it saw at its last refresh).

A cold move copies each disk through the storage-volume API (libvirt's offline migration cannot copy
storage): a fresh volume of the same name, capacity and format in the destination pool of the same
directory, filled by piping virStorageVolDownload into virStorageVolUpload with sparse streams, so
holes stay holes and remote URIs work.  A destination file that one of its domains uses is never
overwritten.

A live move that copies storage gets the same fresh, sparse volume on the destination before the
migration starts (fresh_target_volume).  libvirt would otherwise pre-create it itself with qcow2
metadata preallocation, which allocates the whole virtual size (a 48 MiB disk holding 0.3 MiB of data
arrived as 48.3 MiB); QEMU's mirror then writes only the data, and the copy stays as sparse as the
original.  The volumes a move created on the destination are listed in `created`, so that a move that
fails can delete them again (cleanup_created).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

PROBE_PREFIX = '.vmops-shared-probe-'
COPY_CHUNK = 4 * 1024 * 1024
# Pool types whose volumes every host that defines the pool sees (no probe needed to say "shared").
SHARED_POOL_TYPES = ('netfs', 'gluster', 'rbd', 'sheepdog', 'iscsi-direct', 'vstorage')


class StoragePlanner(object):
    """Which disks of a domain a move to `dst` copies (src, dst: the run's kept connections)."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self._shared = {}          # directory -> (shared bool, how we know)
        self._refreshed = set()    # directories whose pools were refreshed in this run

    def disks(self, dom):
        """Writable and read-only file/block disks of the domain: [{target, path, type, format, readonly}]."""
        tree = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        found = []
        for disk in tree.iterfind('./devices/disk'):
            source = disk.find('source')
            if source is None:
                continue        # an empty CD-ROM drive
            path = source.get('file') or source.get('dev')
            target = disk.find('target')
            driver = disk.find('driver')
            if not path:
                found.append({'target': target.get('dev') if target is not None else None, 'path': None,
                              'type': disk.get('type'), 'network': True})
                continue
            found.append({'target': target.get('dev') if target is not None else None, 'path': path,
                          'type': disk.get('type'), 'format': driver.get('type', 'raw') if driver is not None else 'raw',
                          'readonly': disk.find('readonly') is not None or disk.get('device') == 'cdrom',
                          'backing': disk.find('backingStore/source') is not None, 'network': False})
        return found

    def plan(self, dom, block_migration, probe=True):
        """Per disk: copy it or not.  Raises BackendError when the answer would risk the data.

        block_migration auto: copy exactly the disks the destination does not share.
        true: copy every writable disk (refused when a disk is shared: copying it onto itself destroys it).
        false: copy nothing (refused when a disk is not shared: the guest would run on another file).
        """
        plan = []
        for disk in self.disks(dom):
            if disk['network']:
                plan.append(dict(disk, copy=False, shared=True, why='network disk'))
                continue
            shared, why = self._shared_state(disk['path'], probe)
            if disk['readonly']:
                if shared is False and not self._target_has(disk['path']):
                    raise BackendError('read-only disk %s is missing on the destination; place it there first'
                                       % disk['path'])
                plan.append(dict(disk, copy=False, shared=shared, why='read-only: %s' % why))
                continue
            if block_migration in (True, 'true', 'yes'):
                if shared:
                    raise BackendError('block_migration=true but %s is shared with the destination (%s): copying '
                                       'it onto itself would destroy it' % (disk['path'], why))
                copy = True
            elif block_migration in (False, 'false', 'no'):
                if shared is False:
                    raise BackendError('block_migration=false but %s is not shared with the destination (%s): '
                                       'the guest would run on another file' % (disk['path'], why))
                if shared is None and probe:
                    raise BackendError('cannot tell whether %s is shared with the destination (%s)'
                                       % (disk['path'], why))
                copy = False
            else:
                if shared is None and probe:
                    raise BackendError('cannot tell whether %s is shared with the destination (%s); set '
                                       'block_migration to true or false' % (disk['path'], why))
                copy = None if shared is None else not shared     # None: the probe at start decides
            if copy and disk['backing']:
                raise BackendError('%s has a backing chain; copying chains is not supported (flatten it first)'
                                   % disk['path'])
            plan.append(dict(disk, copy=copy, shared=shared, why=why))
        return plan

    def _target_has(self, path):
        try:
            self.dst.storageVolLookupByPath(path)
            return True
        except libvirt.libvirtError:
            return False

    def _shared_state(self, path, probe):
        """(True|False|None, why) for one disk path.  None: not known without a probe (or at all)."""
        directory = os.path.dirname(path)
        if directory in self._shared:
            return self._shared[directory]
        self._refresh_pools(directory)
        try:
            volume = self.src.storageVolLookupByPath(path)
            pool = volume.storagePoolLookupByVolume()
            pool_type = ET.fromstring(pool.XMLDesc(0)).get('type')
        except libvirt.libvirtError:
            # Not in any pool of the source: nothing to probe with.
            answer = (None, '%s is in no storage pool of the source' % directory)
            if not self._target_has(path):
                answer = (False, 'the destination has no volume at %s' % path)
            return answer
        if pool_type in SHARED_POOL_TYPES:
            answer = (True, 'pool type %s' % pool_type)
        elif not self._target_has(path):
            answer = (False, 'the destination has no volume at this path')
        elif not probe:
            return None, 'the destination has a file at this path; a probe decides when the move starts'
        else:
            answer = self._probe(pool, directory)
        self._shared[directory] = answer
        return answer

    def _refresh_pools(self, directory):
        """A dir pool lists only what it saw at its last refresh: a file another host wrote on shared
        storage is missing from it until then, and "not on the destination" must not be a stale answer."""
        if directory in self._refreshed:
            return
        self._refreshed.add(directory)
        for conn in (self.src, self.dst):
            try:
                pool = conn.storagePoolLookupByTargetPath(directory)
                if pool.isActive():
                    pool.refresh(0)
            except libvirt.libvirtError:
                pass        # no pool for that directory there (or busy): the look-ups below say what is known

    def _probe(self, pool, directory):
        """Create a tiny volume in the source pool; shared if the destination's pool of that directory sees it."""
        name = PROBE_PREFIX + uuid.uuid4().hex[:12]
        xml = ("<volume><name>%s</name><capacity unit='bytes'>0</capacity>"
               "<target><format type='raw'/></target></volume>" % name)
        try:
            probe = pool.createXML(xml, 0)
        except libvirt.libvirtError as error:
            return None, 'cannot create a probe volume in the source pool: %s' % error.get_error_message()
        try:
            try:
                dst_pool = self.dst.storagePoolLookupByTargetPath(directory)
                dst_pool.refresh(0)
                self.dst.storageVolLookupByPath(os.path.join(directory, name))
                return True, 'a probe file created on the source appeared on the destination'
            except libvirt.libvirtError:
                return False, 'a probe file created on the source did not appear on the destination'
        finally:
            try:
                probe.delete(0)
            except libvirt.libvirtError:
                pass


def volume_shape(volume_xml, name):
    """The XML of an empty, sparse volume shaped like the one described: same capacity and format (and,
    for qcow2, the same compat level and features), nothing preallocated."""
    source = ET.fromstring(volume_xml)
    volume = ET.Element('volume')
    ET.SubElement(volume, 'name').text = name
    ET.SubElement(volume, 'capacity', unit='bytes').text = str(int(source.findtext('capacity')))
    ET.SubElement(volume, 'allocation', unit='bytes').text = '0'
    target = ET.SubElement(volume, 'target')
    fmt = source.find('target/format')
    ET.SubElement(target, 'format', type=fmt.get('type') if fmt is not None else 'raw')
    for extra in ('compat', 'features'):
        element = source.find('target/' + extra)
        if element is not None:
            target.append(element)
    return ET.tostring(volume, encoding='unicode')


def fresh_target_volume(src, dst, path, steps, created):
    """A fresh, sparse volume at `path` on the destination, shaped like the source's (src, dst: the
    worker's connections); returns (source volume, new volume).  A destination file that one of its
    domains uses is refused; one no domain uses (left by an earlier move away) is replaced, because a
    sparse copy into it would leave its old bytes in the holes.  The new path is added to `created`."""
    src_vol = src.storageVolLookupByPath(path)
    dst_pool = dst.storagePoolLookupByTargetPath(os.path.dirname(path))
    try:
        dst_vol = dst.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        dst_vol = None
    if dst_vol is not None:
        user = _target_user(dst, path)
        if user:
            raise BackendError('the destination already has %s, used by its domain %s; not overwritten'
                               % (path, user))
        dst_vol.delete(0)
        steps.append('replace an unused %s on the destination' % path)
    dst_vol = dst_pool.createXML(volume_shape(src_vol.XMLDesc(0), os.path.basename(path)), 0)
    created.append(path)
    return src_vol, dst_vol


def copy_volume(src, dst, path, steps, check=None, created=None):
    """Copy one disk file to the same path on the destination with sparse streams (src, dst: the
    worker's connections); `steps` gets what was done; returns the data bytes sent."""
    created = [] if created is None else created
    src_vol, dst_vol = fresh_target_volume(src, dst, path, steps, created)
    steps.append('copy %s' % path)
    try:
        return pipe_volume(src, dst, src_vol, dst_vol, check)
    except Exception:
        try:
            dst_vol.delete(0)       # only our own, unfinished copy
            created.remove(path)
        except (libvirt.libvirtError, VmopsError):
            pass                    # the destination went away: the move reports the file as left there
        raise


def cleanup_created(dst, paths):
    """Delete the volumes a failed move created on the destination, unless a destination domain uses one
    now.  Returns (deleted paths, {path: why it stays})."""
    deleted, kept = [], {}
    for path in paths:
        try:
            user = _target_user(dst, path)
            if user:
                kept[path] = 'used by its domain %s' % user
                continue
            dst.storageVolLookupByPath(path).delete(0)
            deleted.append(path)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                deleted.append(path)        # already gone
            else:
                kept[path] = error.get_error_message()
        except VmopsError as error:         # the destination cannot be reached
            kept[path] = error.msg
    return deleted, kept


def _target_user(dst, path):
    """The name of a destination domain whose disks include `path`, else None."""
    for dom in dst.listAllDomains(0):
        if path in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE):
            return dom.name()
    return None


def pipe_volume(src, dst, src_vol, dst_vol, check=None):
    """Stream a volume's bytes from one host to another; holes stay holes.  Returns the data bytes sent."""
    down = src.newStream(0)
    up = dst.newStream(0)
    src_vol.download(down, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
    dst_vol.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
    sent = 0
    try:
        while True:
            if check is not None:
                check()
            data = down.recvFlags(COPY_CHUNK, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
            if data == -3:
                up.sendHole(down.recvHole(0), 0)
                continue
            if isinstance(data, int):
                raise BackendError('reading %s failed (stream status %s)' % (src_vol.path(), data))
            if not data:
                break
            offset = 0
            while offset < len(data):
                offset += up.send(data[offset:])
            sent += len(data)
        down.finish()
        up.finish()
    except Exception:
        for stream in (down, up):
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
        raise
    return sent
