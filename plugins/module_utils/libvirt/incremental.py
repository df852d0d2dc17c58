# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""instance_backup on libvirt: chains of checkpoints and push-mode backups (LibvirtBackupSets).

A point is a directory of the backup store (backup_store.py), `<root>/<domain>/<point>/`, holding one
qcow2 per disk, domain.xml and manifest.json. The manifest is written twice: first with
`complete: false` (so an unfinished point still says its series and can be cleaned up), last with
`complete: true` once every disk file was checked.

Each point's backup job also creates a libvirt checkpoint of the same name (a QEMU persistent dirty
bitmap per disk, hence qcow2 compat 1.1). An increment is a push-mode backup with `<incremental>` on
the parent's checkpoint, written into a qcow2 made beforehand whose backing file is the parent's copy
of the same disk: QEMU writes only the clusters that changed, the others read through to the parent.
So the chain in the store is a plain qcow2 backing chain, and restoring a point is one conversion of
its newest file on the store's host (libvirt's volume clone: qemu-img convert reads the whole chain)
onto a new standalone qcow2, checked afterwards (virtual size, format, no backing file).

Chains are written on the domain's own host (the store's host must be the domain's: a directory
every host mounts counts). A checkpoint's definition is metadata of the host that holds the domain:
host_evacuate redefines it on the destination (checkpoints.py); when it could not, or after a move done
elsewhere, `auto` takes a full and says why (broken_reason).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backup_chain import BackupSets, iso_utc, now_utc
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backup_store import (
    COMPLETE, DOMAIN_XML, MANIFEST, open_store)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt, redact_uri
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.host_files import HostFiles
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.quiesce import (
    AGENT_CHANNEL, agent_connected, run_quiesced)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.snapshot import (
    _definition_without_secrets, _disks, _escape)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.writeback import local_writeback

CHAIN_FORMAT = 1
RESTORED_TAG = 'vmops-restored-from='


def _xml(text):
    return _escape(str(text))


def backup_disks(tree):
    """[(target, source, format)] of the disks a point holds (writable disks with a source)."""
    return [(target, source, fmt) for target, source, fmt, backup in _disks(tree) if backup]


class LibvirtBackupSets(BackupSets):
    """instance_backup's backend for libvirt (the verbs: core/backup_chain.py)."""

    @classmethod
    def for_request(cls, backend, request):
        return cls(backend, open_store(backend, request.backup_uri, request.backup_pool, request.backup_dir))

    def __init__(self, backend, store):
        self.backend = backend
        self.model = backend.model
        self.conn = backend.conn
        self.store = store
        self.files = HostFiles(backend.conn)
        self._calls_before = backend.request_count() or 0

    def close(self):
        self.files.close()
        self.store.close()

    def location(self):
        return self.backend.location()

    def request_count(self):
        return (self.backend.request_count() or 0) - self._calls_before

    # Reading -------------------------------------------------------------------------------------

    def find_instance(self, identifier):
        return self.backend.find(identifier)

    def describe(self, instance):
        seen = self.backend.observe(instance)
        return {'name': seen.name, 'id': seen.id, 'state': seen.state, 'task': seen.task}

    def points(self, instance, series):
        domain = instance.name()
        found = []
        for name in self.store.backups(domain):
            manifest, state = self.store.manifest(domain, name)
            if not manifest or manifest.get('chain_format') is None or manifest.get('series') != series:
                continue    # not a point of this series (an instance_snapshot backup, another series)
            found.append(self._point(manifest, state == COMPLETE, self.store.path(domain, name)))
        return found

    @staticmethod
    def _point(manifest, complete, path):
        return {
            'name': manifest['name'], 'series': manifest['series'], 'instance': manifest.get('domain_uuid'),
            'kind': manifest.get('kind'), 'parent': manifest.get('parent'), 'taken_at': manifest.get('taken_at'),
            'complete': complete, 'checkpoint': manifest.get('checkpoint'), 'path': path,
            'quiesced': manifest.get('quiesced'), 'guest_frozen_ms': manifest.get('guest_frozen_ms'),
            'frozen_filesystems': manifest.get('frozen_filesystems'), 'quiesce_error': manifest.get('quiesce_error'),
            'host': manifest.get('host'),
            'disks': [{'device': disk['target'], 'file': disk['file'], 'size': disk.get('virtual_size_bytes'),
                       'bytes_written': disk.get('size_bytes'), 'backing': disk.get('backing')}
                      for disk in manifest.get('disks', [])],
            '_manifest': manifest,
        }

    def broken_reason(self, instance, point):
        try:
            instance.checkpointLookupByName(point['checkpoint'], 0)
        except libvirt.libvirtError:
            return ('checkpoint %s is not on host %s (the domain moved, or the checkpoint was removed)'
                    % (point['checkpoint'], self.conn.getHostname()))
        now = sorted(target for target, _source, _fmt in backup_disks(ET.fromstring(instance.XMLDesc(0))))
        then = sorted(disk['device'] for disk in point['disks'])
        if now != then:
            return 'the domain\'s disks changed since %s (%s then, %s now)' % (
                point['name'], ', '.join(then), ', '.join(now))
        return None

    # Checks before anything changes --------------------------------------------------------------

    def _same_host(self, what):
        if not self.store.shares_host(self.conn):
            raise InvalidRequest('instance_backup keeps chains on the domain\'s own host (or a directory every '
                                 'host mounts); the store named by backup_uri is on another host, so %s cannot be '
                                 'done. Nothing was changed.' % what)

    def _volume(self, path):
        """The storage volume of a file on the domain's host (a transient pool opens its directory)."""
        try:
            pool = self.conn.storageVolLookupByPath(path).storagePoolLookupByVolume()
            # A pool describes a volume as it was at its last refresh (or as it was created).
            pool.refresh(0)
            return pool.storageVolLookupByName(os.path.basename(path))
        except libvirt.libvirtError:
            pass
        pool = self.files.pool(os.path.dirname(path))
        if pool is None:
            return None
        try:
            return pool.storageVolLookupByName(os.path.basename(path))
        except libvirt.libvirtError:
            return None

    def check_take(self, instance, kind, parent, quiesce):
        self._same_host('a backup')
        seen = self.backend.observe(instance)
        if seen.task:
            raise InvalidRequest('Domain %s is busy (%s); try again when it has settled. Nothing was changed.'
                                 % (seen.name, seen.task))
        if seen.state not in (states.RUNNING, states.PAUSED):
            raise InvalidRequest('Domain %s is %s: checkpoints and backup jobs need it running or paused. '
                                 'Nothing was changed.' % (seen.name, seen.state))
        tree = ET.fromstring(instance.XMLDesc(0))
        disks = backup_disks(tree)
        if not disks:
            raise InvalidRequest('Domain %s has no disk to back up.' % seen.name)
        for target, source, fmt in disks:
            volume = self._volume(source)
            compat = None
            if volume is not None:
                # libvirt names the compat level of a qcow2 v3 only; a v2 image (compat 0.10) has none.
                compat = ET.fromstring(volume.XMLDesc(0)).findtext('target/compat') or '0.10'
            if fmt != 'qcow2' or compat != '1.1':
                raise InvalidRequest(
                    'Disk %s of domain %s (%s) is %s: checkpoints (persistent dirty bitmaps) need qcow2 compat 1.1. '
                    'Convert it while the domain is stopped (qemu-img amend -o compat=1.1 for an older qcow2). '
                    'Nothing was changed.' % (target, seen.name, source,
                                              'qcow2 compat %s' % compat if fmt == 'qcow2' else 'format %s' % fmt),
                    disk=target)
        agent = agent_connected(tree)
        if quiesce == 'required' and not agent:
            raise InvalidRequest('quiesce=required, but domain %s has no connected guest agent (channel %s); use '
                                 'quiesce=auto for a crash-consistent backup.' % (seen.name, AGENT_CHANNEL))
        where = self.store.path(instance.name(), '<name>')
        return {'disks': [{'device': target, 'file': '%s/%s.qcow2' % (where, target)} for target, _s, _f in disks],
                'quiesced': 'frozen' if agent and quiesce != 'off' else 'crash-consistent'}

    # Taking a point ------------------------------------------------------------------------------

    def take(self, instance, name, series, kind, parent, quiesce):
        domain = instance.name()
        path = self.store.open_backup(domain, name)
        live = ET.fromstring(instance.XMLDesc(0))
        disks = [(target, source, fmt, instance.blockInfo(target, 0)[0]) for target, source, fmt in backup_disks(live)]
        taken_at = iso_utc(now_utc())
        manifest = {'format': 1, 'chain_format': CHAIN_FORMAT, 'name': name, 'series': series, 'kind': kind,
                    'parent': parent['name'] if parent else None, 'checkpoint': name, 'domain_name': domain,
                    'domain_uuid': instance.UUIDString(), 'taken_at': taken_at, 'created_at': taken_at,
                    'complete': False, 'host': {'hostname': self.conn.getHostname(),
                                                'uri': redact_uri(self.backend.uri)}}
        try:
            self.store.write(domain, name, MANIFEST, _json(manifest))
            pool = self.files.pool(path)
            for target, _source, _fmt, capacity in disks:
                backing = '%s/%s.qcow2' % (parent['path'], target) if parent else None
                self.files.remove(pool, '%s.qcow2' % target)
                pool.createXML(_qcow2_xml('%s.qcow2' % target, capacity, backing), 0)
            job = self._run_job(instance, path, disks, name, parent, quiesce, live)
            manifest['disks'] = self._checked(instance, domain, name, disks, parent)
            definition, secrets_removed = _definition_without_secrets(instance)
            self.store.write(domain, name, DOMAIN_XML, definition.encode('utf-8'))
            manifest.update(complete=True, quiesced=job['quiesced'], guest_frozen_ms=job['frozen_ms'],
                            frozen_filesystems=job['frozen_filesystems'],
                            job_seconds=job['seconds'], secrets_removed=secrets_removed,
                            power_state=self.backend.observe(instance).state, method='virDomainBackupBegin (push, %s)'
                            % ('incremental on checkpoint %s' % parent['checkpoint'] if parent else 'full'))
            if job.get('quiesce_error'):
                manifest['quiesce_error'] = job['quiesce_error']
            self.store.write(domain, name, MANIFEST, _json(manifest))
        except Exception:
            self._undo(instance, domain, name)
            raise
        point = self._point(manifest, True, path)
        # What decides the guest's stall at the job's end (writeback.py); None when the host is remote.
        point['host_writeback'] = local_writeback(self.backend.uri)
        return point

    def _run_job(self, instance, path, disks, name, parent, quiesce, live):
        """The backup job and its checkpoint in one call, the guest frozen around its start when an agent
        answers (quiesce as instance_snapshot has it)."""
        elements = ''.join(
            "<disk name='%s' backup='yes' type='file'><target file='%s/%s.qcow2'/><driver type='qcow2'/></disk>"
            % (_xml(target), _xml(path), _xml(target)) for target, _source, _fmt, _capacity in disks)
        backed = set(target for target, _source, _fmt, _capacity in disks)
        skipped = ''.join("<disk name='%s' backup='no'/>" % _xml(target)
                          for target, _source, _fmt, _backup in _disks(live) if target not in backed)
        incremental = '<incremental>%s</incremental>' % _xml(parent['checkpoint']) if parent else ''
        backup_xml = "<domainbackup mode='push'>%s<disks>%s%s</disks></domainbackup>" % (incremental, elements, skipped)
        checkpoint_xml = ("<domaincheckpoint><name>%s</name><description>vmops.lifecycle instance_backup</description>"
                          "<disks>%s%s</disks></domaincheckpoint>" % (
                              _xml(name), ''.join("<disk name='%s' checkpoint='bitmap'/>" % _xml(t) for t in sorted(backed)),
                              ''.join("<disk name='%s' checkpoint='no'/>" % _xml(target)
                                      for target, _s, _f, _b in _disks(live) if target not in backed)))
        started = time.monotonic()

        def begin_job():
            try:
                instance.backupBegin(backup_xml, checkpoint_xml, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
            except libvirt.libvirtError as error:
                raise BackendError('libvirt refused the backup of %s: %s' % (instance.name(), error.get_error_message()),
                                   libvirt_error_code=error.get_error_code())

        frozen = run_quiesced(instance, quiesce, agent_connected(live), begin_job)
        try:
            wait_until(lambda: self._job(instance), lambda job: job['done'], lambda job: job['text'],
                       'the backup job of %s' % instance.name(), self.deadline.remaining(),
                       failure=lambda job: job.get('error'))
        except Exception:
            try:
                instance.abortJob()
            except libvirt.libvirtError:
                pass
            raise
        return {'quiesced': 'frozen' if frozen['quiesced'] else 'crash-consistent',
                'frozen_ms': round(frozen['frozen_seconds'] * 1000, 1) if frozen['quiesced'] else None,
                'frozen_filesystems': frozen['frozen_filesystems'],
                'seconds': round(time.monotonic() - started, 3), 'quiesce_error': frozen['quiesce_error']}

    @staticmethod
    def _job(instance):
        info = instance.jobInfo()
        if info[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            return {'done': False, 'text': 'copying (%s of %s bytes)' % (info[8], info[7])}
        stats = instance.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if stats.get('operation') == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP and stats.get('success') is False:
            return {'done': False, 'text': 'failed',
                    'error': 'the backup job failed: %s' % stats.get('errmsg', 'no message')}
        return {'done': True, 'text': 'finished'}

    def _checked(self, instance, domain, name, disks, parent):
        """The manifest's disks, once every file is in the store with its disk's virtual size and, for an
        increment, the parent's file as its backing file."""
        entries = self.store.files_of(domain, name)
        checked = []
        for target, source, fmt, capacity in disks:
            file_name = '%s.qcow2' % target
            entry = entries.get(file_name)
            if entry is None or entry[1] != capacity:
                raise BackendError('Backup of %s disk %s is wrong: expected a %s-byte image, found %s.'
                                   % (instance.name(), target, capacity, 'none' if entry is None else entry[1]))
            backing = ET.fromstring(self.store.volume(self.store.path(domain, name), file_name).XMLDesc(0)).findtext(
                'backingStore/path')
            wanted = '%s/%s' % (parent['path'], file_name) if parent else None
            if backing != wanted:
                raise BackendError('Backup of %s disk %s has backing file %s, expected %s.'
                                   % (instance.name(), target, backing, wanted))
            checked.append({'target': target, 'source': source, 'file': file_name, 'format': 'qcow2',
                            'source_format': fmt, 'virtual_size_bytes': capacity, 'size_bytes': entry[2],
                            'backing': backing})
        return checked

    def _undo(self, instance, domain, name):
        """A failed point leaves nothing: its checkpoint (its bitmap merges back into the parent's) and its
        directory."""
        try:
            instance.checkpointLookupByName(name, 0).delete(0)
        except libvirt.libvirtError:
            pass
        try:
            self.store.remove(domain, name)
        except (libvirt.libvirtError, BackendError):
            pass    # a directory without a complete manifest is never used, and is cleaned up later

    # Deleting ------------------------------------------------------------------------------------

    def delete(self, point):
        parent_dir, name = point['path'].rsplit('/', 1)
        try:
            self.store.remove_at(parent_dir, name)
        except libvirt.libvirtError as error:
            raise BackendError('Deleting backup point %s failed: %s' % (point['path'], error.get_error_message()))
        # Its checkpoint goes too: every checkpoint keeps a bitmap that each guest write updates.
        if point.get('checkpoint') and point.get('instance'):
            try:
                domain = self.conn.lookupByUUIDString(point['instance'])
                domain.checkpointLookupByName(point['checkpoint'], 0).delete(0)
            except libvirt.libvirtError:
                pass

    # Restoring -----------------------------------------------------------------------------------

    def check_restore(self, chain, target):
        self._same_host('a restore')
        newest = chain[-1]
        instance = target['instance']
        for link in chain:
            entries = self.store.files_at(link['path'])
            for disk in link['disks']:
                if disk['file'] not in entries:
                    raise InvalidRequest('Backup point %s lacks %s: the chain cannot be restored. Nothing was changed.'
                                         % (link['name'], disk['file']), missing=link['name'])
        origin = '%s/%s/%s' % (newest['instance'], newest['series'], newest['name'])
        if target['restore_as']:
            try:
                existing = self.conn.lookupByName(target['restore_as'])
            except libvirt.libvirtError:
                existing = None
            if existing is not None:
                description = ET.fromstring(existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext(
                    'description') or ''
                if RESTORED_TAG + origin in description:
                    return {'done': True, 'restore_as': target['restore_as'], 'domain': existing.UUIDString()}
                raise InvalidRequest('restore_as %s: a domain of that name exists and was not restored from %s. '
                                     'Nothing was changed.' % (target['restore_as'], newest['name']))
            return {'restore_as': target['restore_as'], 'disks': self._restore_paths(instance, newest, target)}
        seen = self.backend.observe(instance)
        if seen.state != states.STOPPED:
            raise InvalidRequest('Restoring %s into domain %s itself needs it stopped; it is %s. Stop it, or restore '
                                 'to a new domain (restore_as). Nothing was changed.'
                                 % (newest['name'], seen.name, seen.state))
        return {'restore_as': None, 'disks': self._restore_paths(instance, newest, target)}

    def _restore_paths(self, instance, newest, target):
        """{device: path} of the disks a restore writes (next to the domain's own disks)."""
        sources = dict((t, source) for t, source, _fmt in backup_disks(ET.fromstring(instance.XMLDesc(0))))
        paths = {}
        for disk in newest['disks']:
            source = sources.get(disk['device'])
            if source is None:
                raise InvalidRequest('Domain %s has no disk %s any more; restore to a new domain instead.'
                                     % (instance.name(), disk['device']))
            if target['restore_as']:
                paths[disk['device']] = '%s/%s.%s.qcow2' % (os.path.dirname(source), target['restore_as'],
                                                            disk['device'])
            else:
                paths[disk['device']] = source
        return paths

    def restore(self, chain, target):
        newest = chain[-1]
        instance = target['instance']
        paths = self._restore_paths(instance, newest, target)
        written = []
        for disk in newest['disks']:
            path = paths[disk['device']]
            directory, file_name = os.path.split(path)
            pool = self.files.pool(directory)
            source = self.store.volume(newest['path'], disk['file'])
            started = time.monotonic()
            if target['restore_as']:
                self.files.remove(pool, file_name)
                volume = pool.createXMLFrom(_qcow2_xml(file_name, disk['size']), source, 0)
            else:
                # The assembled image is made beside the disk first: the disk is replaced only once it exists.
                staged_name = '.%s.vmops-restore' % file_name
                self.files.remove(pool, staged_name)
                staged = pool.createXMLFrom(_qcow2_xml(staged_name, disk['size']), source, 0)
                self.files.remove(pool, file_name)
                volume = pool.createXMLFrom(_qcow2_xml(file_name, disk['size']), staged, 0)
                staged.delete(0)
            written.append(self._verified(volume, disk, path, round(time.monotonic() - started, 3)))
        made = {'restore_as': target['restore_as'], 'disks': written, 'chain': [link['name'] for link in chain]}
        if target['restore_as']:
            made['domain'] = self._define_copy(instance, newest, target['restore_as'], paths)
        else:
            # The disk no longer matches any checkpoint: drop them, so the next backup is a full that says why.
            for checkpoint in instance.listAllCheckpoints(0):
                try:
                    checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
                except libvirt.libvirtError:
                    pass
            made['domain'] = instance.UUIDString()
        return made

    @staticmethod
    def _verified(volume, disk, path, seconds):
        """The restored image, read back: standalone qcow2 of the point's virtual size."""
        xml = ET.fromstring(volume.XMLDesc(0))
        capacity = volume.info()[1]
        fmt = xml.find('target/format').get('type') if xml.find('target/format') is not None else None
        backing = xml.findtext('backingStore/path')
        if capacity != disk['size'] or fmt != 'qcow2' or backing:
            raise BackendError('The restored image %s is wrong: %s bytes (expected %s), format %s, backing file %s.'
                               % (path, capacity, disk['size'], fmt, backing))
        return {'device': disk['device'], 'path': path, 'virtual_size_bytes': capacity,
                'allocation_bytes': volume.info()[2], 'seconds': seconds}

    def _define_copy(self, instance, newest, restore_as, paths):
        """A new domain from the point's definition: the restored disks, a new name and UUID, no MAC addresses
        (libvirt makes new ones), and its origin in the description. It is defined, not started."""
        xml = self.store.read_at(newest['path'], DOMAIN_XML)
        tree = ET.fromstring(xml.decode('utf-8') if xml else instance.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        tree.find('name').text = restore_as
        for element in tree.findall('uuid'):
            tree.remove(element)
        for interface in tree.iterfind('./devices/interface'):
            for mac in interface.findall('mac'):
                interface.remove(mac)
        for disk in tree.iterfind('./devices/disk'):
            device = disk.find('target').get('dev') if disk.find('target') is not None else None
            if device in paths:
                disk.find('source').set('file', paths[device])
                driver = disk.find('driver')
                if driver is not None:
                    driver.set('type', 'qcow2')
                for backing in disk.findall('backingStore'):
                    disk.remove(backing)
        description = tree.find('description')
        if description is None:
            description = ET.SubElement(tree, 'description')
        description.text = '%s%s/%s/%s' % (RESTORED_TAG, newest['instance'], newest['series'], newest['name'])
        try:
            return self.conn.defineXML(ET.tostring(tree, encoding='unicode')).UUIDString()
        except libvirt.libvirtError as error:
            raise BackendError('Defining %s from point %s failed: %s' % (restore_as, newest['name'],
                                                                         error.get_error_message()))


def _qcow2_xml(name, capacity, backing=None):
    backing_xml = ("<backingStore><path>%s</path><format type='qcow2'/></backingStore>" % _xml(backing)
                   if backing else '')
    return ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='qcow2'/>"
            "<compat>1.1</compat><permissions><mode>0600</mode></permissions></target>%s</volume>"
            % (_xml(name), capacity, backing_xml))


def _json(data):
    return json.dumps(data, indent=1, sort_keys=True).encode('utf-8')
