# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt snapshots: push-mode backups of running domains, internal snapshots of stopped ones.

Running or paused domain: libvirt's backup API (virDomainBackupBegin, push mode). QEMU starts a
point-in-time copy of every disk (a copy-before-write filter keeps the old blocks of whatever
the guest overwrites until they are copied), so the guest is never paused: it keeps running
while the copy is written next to nothing it uses. Where a guest agent answers, the file
systems are frozen just around the start of the job (milliseconds), which is the only time the
guest waits; otherwise the copy is crash-consistent.

Stopped domain: an internal snapshot (qcow2) named after the snapshot, series recorded in its
description.

The files live on the hypervisor host under <backup_dir>/<domain>/<snapshot>/ and are reached
through libvirt's storage API (transient `dir` pools, volume upload/download), so a remote URI
works the same as a local one. The manifest is written last, after every copy was checked:
a directory without a manifest saying `complete: true` is an unfinished backup and is never used.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import time
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import DEFAULT_BACKUP_DIR, SnapshotDriver, iso_utc, now_utc
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until

MANIFEST = 'manifest.json'
DOMAIN_XML = 'domain.xml'
MANIFEST_FORMAT = 1
SERIES_TAG = 'vmops-series='
RECORDED_TAG = 'vmops-recorded='
AGENT_CHANNEL = 'org.qemu.guest_agent.0'


def _escape(text):
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace("'", '&apos;')


class HostFiles(object):
    """Files and directories on the hypervisor host, through libvirt's storage API.

    A directory is opened as a transient `dir` storage pool (an existing pool on that path is
    reused); the pools this object created are destroyed by close(), which leaves the files.
    """

    def __init__(self, conn):
        self.conn = conn
        self._created = []

    def close(self):
        while self._created:
            pool = self._created.pop()
            try:
                pool.destroy()
            except libvirt.libvirtError:
                pass

    def pool(self, path, create=False):
        """The pool of directory `path` (made, with its parents, when `create`), or None if missing."""
        try:
            pool = self.conn.storagePoolLookupByTargetPath(path)
            pool.refresh(0)
            return pool
        except libvirt.libvirtError:
            pass
        xml = ("<pool type='dir'><name>vmops-files-%s</name><target><path>%s</path>"
               "<permissions><mode>0755</mode></permissions></target></pool>" % (uuid.uuid4().hex[:12], _escape(path)))
        flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if create else 0
        try:
            pool = self.conn.storagePoolCreateXML(xml, flags)
        except libvirt.libvirtError as error:
            if not create:
                return None     # no such directory
            raise BackendError('Cannot create directory %s on the host: %s' % (path, error.get_error_message()))
        self._created.append(pool)
        return pool

    def listing(self, pool):
        """{name: (type, capacity, allocation, path)} of the files and directories in a pool."""
        entries = {}
        for volume in pool.listAllVolumes(0):
            kind, capacity, allocation = volume.info()
            entries[volume.name()] = (kind, capacity, allocation, volume.path())
        return entries

    def read(self, pool, name):
        try:
            volume = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None
        stream = self.conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        chunks = []
        while True:
            chunk = stream.recv(262144)
            if not chunk or not isinstance(chunk, bytes):
                break
            chunks.append(chunk)
        stream.finish()
        return b''.join(chunks)

    def write(self, pool, name, data):
        self.remove(pool, name)
        xml = ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity>"
               "<target><format type='raw'/></target></volume>" % (_escape(name), len(data)))
        volume = pool.createXML(xml, 0)
        stream = self.conn.newStream(0)
        volume.upload(stream, 0, len(data), 0)
        offset = 0
        while offset < len(data):
            sent = stream.send(data[offset:offset + 262144])
            offset += sent
        stream.finish()

    def remove(self, pool, name):
        try:
            volume = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return False
        volume.delete(0)
        return True

    def remove_dir(self, parent_path, name):
        """Delete directory parent/name and every file in it (files first, the manifest first of all)."""
        path = '%s/%s' % (parent_path, name)
        pool = self.pool(path)
        if pool is not None:
            entries = self.listing(pool)
            for entry in sorted(entries, key=lambda item: item != MANIFEST):
                self.remove(pool, entry)
            if pool in self._created:
                self._created.remove(pool)
                pool.destroy()
        parent = self.pool(parent_path)
        if parent is not None:
            self.remove(parent, name)


def _disks(tree):
    """[(target, source, format, backup)] of the domain's disks; only real disks are backed up."""
    disks = []
    for disk in tree.iterfind('./devices/disk'):
        target = disk.find('target')
        source = disk.find('source')
        driver = disk.find('driver')
        if target is None or source is None:
            continue
        where = source.get('file') or source.get('dev') or (
            '%s:%s' % (source.get('protocol'), source.get('name')) if source.get('protocol') else None)
        if where is None:
            continue
        backup = disk.get('device', 'disk') == 'disk' and disk.find('readonly') is None
        disks.append((target.get('dev'), where, driver.get('type') if driver is not None else 'raw', backup))
    return disks


def _agent_connected(tree):
    for channel in tree.iterfind('./devices/channel'):
        target = channel.find('target')
        if target is not None and target.get('name') == AGENT_CHANNEL:
            return target.get('state') == 'connected'
    return False


def _recorded(dom, tree):
    networks = []
    for interface in tree.iterfind('./devices/interface'):
        source = interface.find('source')
        if source is not None:
            networks.append(source.get('network') or source.get('bridge') or source.get('dev'))
    memory = tree.find('memory')
    vcpu = tree.find('vcpu')
    return {'instance_id': dom.UUIDString(), 'instance_name': dom.name(),
            'flavor': {'vcpus': int(vcpu.text) if vcpu is not None else None,
                       'memory_mib': int(memory.text) // 1024 if memory is not None else None},
            'networks': [net for net in networks if net], 'metadata': {}, 'key_name': None,
            'boot': 'image'}


class LibvirtSnapshots(SnapshotDriver):
    """instance_snapshot's driver for the libvirt backend (see snapshot.py for the verbs)."""

    @classmethod
    def for_request(cls, backend, request):
        return cls(backend, request.backup_dir or DEFAULT_BACKUP_DIR)

    def __init__(self, backend, backup_dir):
        self.backend = backend
        self.model = backend.model
        self.conn = backend.conn
        self.backup_dir = backup_dir.rstrip('/') or '/'
        self._calls_before = backend.request_count() or 0
        self.files = HostFiles(self.conn)

    @property
    def calls(self):
        """libvirt calls since this driver was made (the connection keeper counts every call)."""
        return (self.backend.request_count() or 0) - self._calls_before

    def close(self):
        self.files.close()

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.calls

    def find_instance(self, identifier):
        return self.backend.find(identifier)

    def observe(self, ref):
        return self.backend.observe(ref)

    def _domain_dir(self, ref, identifier):
        return '%s/%s' % (self.backup_dir, ref.name() if ref is not None else identifier)

    # Reading ---------------------------------------------------------------------------------

    def _backup(self, ref, identifier, name):
        """(record or None, leftover record or None) of backup `name` of the domain."""
        domain_dir = self._domain_dir(ref, identifier)
        path = '%s/%s' % (domain_dir, name)
        pool = self.files.pool(path)
        if pool is None:
            return None, None
        raw = self.files.read(pool, MANIFEST)
        manifest = None
        if raw:
            try:
                manifest = json.loads(raw.decode('utf-8'))
            except ValueError:
                manifest = None
        if not manifest or manifest.get('complete') is not True:
            return None, {'id': path, 'name': name, 'kind': 'libvirt_backup', 'status': 'incomplete',
                          '_dir': (domain_dir, name)}
        return self._record_from_manifest(path, manifest, domain_dir), None

    def _record_from_manifest(self, path, manifest, domain_dir):
        contains = [{'device': disk['target'], 'kind': 'disk', 'id_or_path': '%s/%s' % (path, disk['file']),
                     'size_bytes': disk.get('size_bytes')} for disk in manifest.get('disks', [])]
        return {
            'id': path, 'name': manifest['name'], 'series': manifest.get('series'), 'backend': 'libvirt',
            'kind': 'libvirt_backup', 'status': 'available',
            'size_bytes': sum(item['size_bytes'] or 0 for item in contains),
            'created_at': manifest.get('created_at'), 'quiesced': bool(manifest.get('quiesced')),
            'contains': contains, 'recorded': manifest.get('recorded') or {},
            'path': path, 'manifest': manifest, '_dir': (domain_dir, manifest['name']),
        }

    def _internal(self, ref, name):
        if ref is None:
            return None
        try:
            snap = ref.snapshotLookupByName(name, 0)
        except libvirt.libvirtError:
            return None
        return self._record_from_internal(ref, snap)

    def _record_from_internal(self, ref, snap):
        tree = ET.fromstring(snap.getXMLDesc(0))
        description = tree.findtext('description') or ''
        series, recorded = None, {}
        for line in description.splitlines():
            if line.startswith(SERIES_TAG):
                series = line[len(SERIES_TAG):] or None
            elif line.startswith(RECORDED_TAG):
                try:
                    recorded = json.loads(line[len(RECORDED_TAG):])
                except ValueError:
                    recorded = {}
        created = tree.findtext('creationTime')
        created_at = recorded.get('created_at') or (
            iso_utc(_from_epoch(int(created))) if created else None)
        contains = [{'device': disk.get('name'), 'kind': 'internal_snapshot',
                     'id_or_path': '%s@%s' % (disk.get('name'), tree.findtext('name')), 'size_bytes': None}
                    for disk in tree.iterfind('./disks/disk') if disk.get('snapshot') == 'internal']
        return {
            'id': '%s/%s' % (ref.name(), tree.findtext('name')), 'name': tree.findtext('name'), 'series': series,
            'backend': 'libvirt', 'kind': 'libvirt_internal', 'status': 'available', 'size_bytes': None,
            'created_at': created_at, 'quiesced': False, 'contains': contains,
            'recorded': recorded.get('recorded') or {}, '_domain': ref, '_snapshot_name': tree.findtext('name'),
        }

    def get(self, ref, identifier, name):
        record, _leftover = self._backup(ref, identifier, name)
        return record or self._internal(ref, name)

    def incomplete(self, ref, identifier, name):
        _record, leftover = self._backup(ref, identifier, name)
        return [leftover] if leftover else []

    def series(self, ref, identifier, series):
        records = []
        domain_dir = self._domain_dir(ref, identifier)
        pool = self.files.pool(domain_dir)
        if pool is not None:
            for entry, info in sorted(self.files.listing(pool).items()):
                if info[0] != libvirt.VIR_STORAGE_VOL_DIR:
                    continue
                record, _leftover = self._backup(ref, identifier, entry)
                if record is not None and record['series'] == series:
                    records.append(record)
        if ref is not None:
            for snap in ref.listAllSnapshots(0):
                record = self._record_from_internal(ref, snap)
                if record['series'] == series:
                    records.append(record)
        return records

    # Planning --------------------------------------------------------------------------------

    def plan(self, ref, request):
        observation = self.observe(ref)
        tree = ET.fromstring(ref.XMLDesc(0))
        disks = [disk for disk in _disks(tree) if disk[3]]
        if not disks:
            raise InvalidRequest('Domain %s has no disk to snapshot.' % ref.name())
        if observation.task:
            raise InvalidRequest('Domain %s is busy (%s); try again when it has settled.'
                                 % (ref.name(), observation.task))
        if observation.state in (states.RUNNING, states.PAUSED):
            agent = _agent_connected(tree)
            if request.quiesce == 'required' and not agent:
                raise InvalidRequest('quiesce=required, but domain %s has no connected guest agent '
                                     '(channel %s); use quiesce=auto for a crash-consistent copy.'
                                     % (ref.name(), AGENT_CHANNEL))
            return {'kind': 'libvirt_backup', 'quiesced': bool(agent and request.quiesce != 'off'),
                    'contains': [{'device': target, 'kind': 'disk', 'size_bytes': None,
                                  'id_or_path': '%s/%s/%s.qcow2' % (self._domain_dir(ref, None), '<name>', target)}
                                 for target, _source, _fmt, _backup in disks]}
        if observation.state == states.STOPPED:
            raw = [target for target, _source, fmt, _backup in disks if fmt != 'qcow2']
            if raw:
                raise InvalidRequest('Domain %s is stopped and disk(s) %s are not qcow2: internal snapshots need '
                                     'qcow2. Start the domain to take a backup instead.' % (ref.name(), ', '.join(raw)))
            return {'kind': 'libvirt_internal', 'quiesced': False,
                    'contains': [{'device': target, 'kind': 'internal_snapshot', 'size_bytes': None,
                                  'id_or_path': None} for target, _source, _fmt, _backup in disks]}
        raise InvalidRequest('Domain %s is %s: a snapshot needs it running, paused or stopped.'
                             % (ref.name(), observation.state))

    # Creating --------------------------------------------------------------------------------

    def create(self, ref, request, name, deadline):
        plan = self.plan(ref, request)
        if plan['kind'] == 'libvirt_internal':
            return self._create_internal(ref, request, name)
        return self._create_backup(ref, request, name, deadline)

    def _create_internal(self, ref, request, name):
        started = time.monotonic()
        tree = ET.fromstring(ref.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        extra = {'created_at': iso_utc(now_utc()), 'recorded': _recorded(ref, tree),
                 'metadata': dict(request.metadata or {})}
        description = '%s%s\n%s%s' % (SERIES_TAG, request.series or '', RECORDED_TAG, json.dumps(extra, sort_keys=True))
        xml = ('<domainsnapshot><name>%s</name><description>%s</description></domainsnapshot>'
               % (_escape(name), _escape(description)))
        try:
            snap = ref.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        except libvirt.libvirtError as error:
            raise BackendError('libvirt refused the internal snapshot %s of %s: %s'
                               % (name, ref.name(), error.get_error_message()))
        record = self._record_from_internal(ref, snap)
        return record, {'guest_paused_seconds': 0.0, 'snapshot_seconds': round(time.monotonic() - started, 3),
                        'libvirt_calls': self.calls}

    def _create_backup(self, ref, request, name, deadline):
        started = time.monotonic()
        live = ET.fromstring(ref.XMLDesc(0))
        inactive_xml = ref.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        domain_dir = self._domain_dir(ref, None)
        path = '%s/%s' % (domain_dir, name)
        disks = _disks(live)
        pool = self.files.pool(path, create=True)
        try:
            self.files.write(pool, DOMAIN_XML, inactive_xml.encode('utf-8'))
            job = self._run_backup(ref, request, path, disks, deadline)
            pool.refresh(0)
            entries = self.files.listing(pool)
            manifest_disks = []
            for target, source, fmt, backup in disks:
                if not backup:
                    continue
                file_name = '%s.qcow2' % target
                entry = entries.get(file_name)
                capacity = ref.blockInfo(target, 0)[0]
                if entry is None or entry[1] != capacity:
                    raise BackendError('Backup of %s disk %s is wrong: expected a %s-byte copy, found %s.'
                                       % (ref.name(), target, capacity, 'none' if entry is None else entry[1]))
                manifest_disks.append({'target': target, 'source': source, 'file': file_name, 'format': 'qcow2',
                                       'source_format': fmt, 'virtual_size_bytes': capacity, 'size_bytes': entry[2]})
            manifest = {
                'format': MANIFEST_FORMAT, 'name': name, 'series': request.series, 'domain_name': ref.name(),
                'domain_uuid': ref.UUIDString(), 'created_at': job['created_at'], 'quiesced': job['quiesced'],
                'guest_paused_seconds': job['guest_paused_seconds'], 'disks': manifest_disks,
                'metadata': dict(request.metadata or {}), 'recorded': _recorded(ref, live),
                'method': 'virDomainBackupBegin (push)', 'complete': True,
            }
            # Last: only now is the backup complete (and visible to retention and restore).
            self.files.write(pool, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode('utf-8'))
        except Exception:
            self._discard(domain_dir, name)
            raise
        record = self._record_from_manifest(path, manifest, domain_dir)
        timings = {'guest_paused_seconds': job['guest_paused_seconds'],
                   'backup_begin_seconds': job['begin_seconds'], 'copy_seconds': job['copy_seconds'],
                   'snapshot_seconds': round(time.monotonic() - started, 3), 'libvirt_calls': self.calls}
        if job.get('quiesce_error'):
            record['quiesce_error'] = job['quiesce_error']
        return record, timings

    def _discard(self, domain_dir, name):
        try:
            self.files.remove_dir(domain_dir, name)
        except (libvirt.libvirtError, BackendError):
            pass    # an unfinished directory without manifest is ignored anyway

    def _run_backup(self, ref, request, path, disks, deadline):
        elements = []
        for target, _source, _fmt, backup in disks:
            if backup:
                elements.append("<disk name='%s' backup='yes' type='file'><target file='%s/%s.qcow2'/>"
                                "<driver type='qcow2'/></disk>" % (_escape(target), _escape(path), _escape(target)))
            else:
                elements.append("<disk name='%s' backup='no'/>" % _escape(target))
        backup_xml = "<domainbackup mode='push'><disks>%s</disks></domainbackup>" % ''.join(elements)
        agent = request.quiesce != 'off' and _agent_connected(ET.fromstring(ref.XMLDesc(0)))
        frozen_at = thawed_at = None
        quiesce_error = None
        if agent:
            try:
                frozen_at = time.monotonic()
                ref.fsFreeze(None, 0)
            except libvirt.libvirtError as error:
                frozen_at = None
                if request.quiesce == 'required':
                    raise BackendError('quiesce=required, but the guest agent of %s did not freeze: %s'
                                       % (ref.name(), error.get_error_message()))
                quiesce_error = error.get_error_message()
        created_at = iso_utc(now_utc())
        begin = time.monotonic()
        try:
            ref.backupBegin(backup_xml, None, 0)
        except libvirt.libvirtError as error:
            raise BackendError('libvirt refused the backup of %s: %s' % (ref.name(), error.get_error_message()),
                               libvirt_error_code=error.get_error_code())
        finally:
            begun = time.monotonic()
            if frozen_at is not None:
                try:
                    ref.fsThaw(None, 0)
                finally:
                    thawed_at = time.monotonic()
        self._job_domain = ref
        try:
            wait_until(self._job, lambda job: job['done'], lambda job: job['text'],
                       'the backup job of %s' % ref.name(), deadline,
                       failure=lambda job: job.get('error'))
        except Exception:
            try:
                ref.abortJob()
            except libvirt.libvirtError:
                pass
            raise
        stats = self._last_job
        if not stats.get('success', True):
            raise BackendError('The backup job of %s failed: %s' % (ref.name(), stats.get('errmsg', 'no message')))
        return {'created_at': created_at, 'quiesced': frozen_at is not None,
                'guest_paused_seconds': round(thawed_at - frozen_at, 6) if frozen_at is not None else 0.0,
                'begin_seconds': round(begun - begin, 6), 'copy_seconds': round(time.monotonic() - begin, 3),
                'quiesce_error': quiesce_error}

    _job_domain = None
    _last_job = None

    def _job(self):
        """One poll of the domain's job: {'done', 'text', 'error'}."""
        dom = self._job_domain
        info = dom.jobInfo()
        if info[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            total, processed = info[7], info[8]
            return {'done': False, 'text': 'copying (%s of %s bytes)' % (processed, total)}
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        self._last_job = stats
        if stats.get('operation') not in (None, libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP):
            return {'done': True, 'text': 'finished'}
        if stats.get('success') is False:
            return {'done': False, 'text': 'failed', 'error': 'the backup job failed: %s'
                    % stats.get('errmsg', 'no message')}
        return {'done': True, 'text': 'finished'}

    # Deleting --------------------------------------------------------------------------------

    def delete(self, record, deadline):
        if record.get('kind') == 'libvirt_internal':
            try:
                record['_domain'].snapshotLookupByName(record['_snapshot_name'], 0).delete(0)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise BackendError('Deleting snapshot %s failed: %s' % (record['name'], error.get_error_message()))
            return
        domain_dir, name = record['_dir']
        try:
            self.files.remove_dir(domain_dir, name)
        except libvirt.libvirtError as error:
            raise BackendError('Deleting backup %s failed: %s' % (record['id'], error.get_error_message()))


def _from_epoch(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
