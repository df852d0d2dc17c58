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

The files live in a backup store (backup_store.py): <root>/<domain>/<snapshot>/ on the domain's own
host by default, or on another host, reached through libvirt's storage API (transient `dir` pools,
volume upload/download), so a remote URI works the same as a local one.  For a store on another
host, the backup job writes into a staging directory on the domain's host (STAGING_DIR, removed
afterwards) and each copy is streamed to the store (sparse); a stopped domain's disks are streamed
there as they are, since an internal snapshot lives inside the disk and would not outlive its host.
The manifest is written last, after every copy was checked: a directory without a manifest saying
`complete: true` is an unfinished backup and is never used.  The saved domain.xml holds no secrets
(a graphics password is left out, and the manifest's `secrets_removed` says so).
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
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import (
    DEFAULT_BACKUP_DIR, SnapshotDriver, iso_utc, now_utc)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backup_store import (
    DOMAIN_XML, INCOMPLETE, MANIFEST, MISSING, STAGING_DIR, BackupStore, chain_point, open_store)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt, redact_uri
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.host_files import HostFiles
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.quiesce import (
    AGENT_CHANNEL, agent_connected, run_quiesced)

MANIFEST_FORMAT = 1
SERIES_TAG = 'vmops-series='
RECORDED_TAG = 'vmops-recorded='


def _escape(text):
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace("'", '&apos;')


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
        return cls(backend, store=open_store(backend, getattr(request, 'backup_uri', None),
                                             getattr(request, 'backup_pool', None), request.backup_dir))

    def __init__(self, backend, backup_dir=None, store=None):
        self.backend = backend
        self.model = backend.model
        self.conn = backend.conn
        self.store = store or BackupStore(backend.conn, backup_dir or DEFAULT_BACKUP_DIR, backend.uri)
        self.backup_dir = self.store.root
        self.local = HostFiles(self.conn)       # the domain's own host: staging of off-host backups
        self._calls_before = self.calls_now()
        self._off_host = None

    def calls_now(self):
        calls = self.backend.request_count() or 0
        if self.store.conn is not self.conn:
            calls += self.store.conn.request_count() or 0
        return calls

    @property
    def calls(self):
        """libvirt calls since this driver was made (the connection keepers count every call)."""
        return self.calls_now() - self._calls_before

    @property
    def off_host(self):
        """Whether the store is on another host than the domain (backups are then staged and copied there)."""
        if self._off_host is None:
            self._off_host = not self.store.shares_host(self.conn)
        return self._off_host

    def close(self):
        self.local.close()
        self.store.close()

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.calls

    def find_instance(self, identifier):
        return self.backend.find(identifier)

    def observe(self, ref):
        return self.backend.observe(ref)

    @staticmethod
    def _domain(ref, identifier):
        return ref.name() if ref is not None else identifier

    # Reading ---------------------------------------------------------------------------------

    def _backup(self, ref, identifier, name):
        """(record or None, leftover record or None) of backup `name` of the domain."""
        domain = self._domain(ref, identifier)
        manifest, state = self.store.manifest(domain, name)
        if state == MISSING or chain_point(manifest):
            return None, None
        path = self.store.path(domain, name)
        if state == INCOMPLETE:
            return None, {'id': path, 'name': name, 'kind': 'libvirt_backup', 'status': 'incomplete',
                          '_dir': (self.store.path(domain), name)}
        return self.record_from_manifest(path, manifest), None

    def record_from_manifest(self, path, manifest):
        contains = [{'device': disk['target'], 'kind': 'disk', 'id_or_path': '%s/%s' % (path, disk['file']),
                     'size_bytes': disk.get('size_bytes')} for disk in manifest.get('disks', [])]
        return {
            'id': path, 'name': manifest['name'], 'series': manifest.get('series'), 'backend': 'libvirt',
            'kind': 'libvirt_backup', 'status': 'available',
            'size_bytes': sum(item['size_bytes'] or 0 for item in contains),
            'created_at': manifest.get('created_at'), 'quiesced': bool(manifest.get('quiesced')),
            'contains': contains, 'recorded': manifest.get('recorded') or {},
            'secrets_removed': manifest.get('secrets_removed') or [],
            'store': self.store.location(), 'path': path, 'manifest': manifest,
            '_dir': (path.rsplit('/', 1)[0], manifest['name']),
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
        for entry in self.store.backups(self._domain(ref, identifier)):
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
        where = self.store.path(ref.name(), '<name>')
        if observation.state in (states.RUNNING, states.PAUSED):
            agent = agent_connected(tree)
            if request.quiesce == 'required' and not agent:
                raise InvalidRequest('quiesce=required, but domain %s has no connected guest agent '
                                     '(channel %s); use quiesce=auto for a crash-consistent copy.'
                                     % (ref.name(), AGENT_CHANNEL))
            return {'kind': 'libvirt_backup', 'quiesced': bool(agent and request.quiesce != 'off'),
                    'store': self.store.location(),
                    'contains': [{'device': target, 'kind': 'disk', 'size_bytes': None,
                                  'id_or_path': '%s/%s.qcow2' % (where, target)}
                                 for target, _source, _fmt, _backup in disks]}
        if observation.state == states.STOPPED:
            if self.off_host:
                copies = self._stopped_copies(ref, disks)
                return {'kind': 'libvirt_backup', 'quiesced': False, 'store': self.store.location(),
                        'contains': [{'device': copy['target'], 'kind': 'disk', 'size_bytes': None,
                                      'id_or_path': '%s/%s' % (where, copy['file'])} for copy in copies]}
            raw = [target for target, _source, fmt, _backup in disks if fmt != 'qcow2']
            if raw:
                raise InvalidRequest('Domain %s is stopped and disk(s) %s are not qcow2: internal snapshots need '
                                     'qcow2. Start the domain to take a backup instead, or keep backups on another '
                                     'host (backup_uri).' % (ref.name(), ', '.join(raw)))
            return {'kind': 'libvirt_internal', 'quiesced': False,
                    'contains': [{'device': target, 'kind': 'internal_snapshot', 'size_bytes': None,
                                  'id_or_path': None} for target, _source, _fmt, _backup in disks]}
        raise InvalidRequest('Domain %s is %s: a snapshot needs it running, paused or stopped.'
                             % (ref.name(), observation.state))

    def _stopped_copies(self, ref, disks):
        """The disk files of a stopped domain copied as they are to a store on another host."""
        copies = []
        for target, source, fmt, _backup in disks:
            try:
                volume = self.conn.storageVolLookupByPath(source)
                backing = ET.fromstring(volume.XMLDesc(0)).find('backingStore/path')
            except libvirt.libvirtError:
                raise InvalidRequest('Domain %s is stopped and its disk %s (%s) is in no storage pool of its host: it '
                                     'cannot be copied to the backup store on another host. Start the domain to back '
                                     'it up with a backup job.' % (ref.name(), target, source))
            if backing is not None and backing.text:
                raise InvalidRequest('Domain %s is stopped and its disk %s has a backing file (%s): copying a chain '
                                     'to another host is not supported. Start the domain to back it up with a '
                                     'backup job (which writes a standalone copy).' % (ref.name(), target, backing.text))
            copies.append({'target': target, 'source': source, 'format': fmt, 'volume': volume,
                           'file': '%s.%s' % (target, 'qcow2' if fmt == 'qcow2' else fmt)})
        return copies

    # Creating --------------------------------------------------------------------------------

    def create(self, ref, request, name, deadline):
        plan = self.plan(ref, request)
        if plan['kind'] == 'libvirt_internal':
            return self._create_internal(ref, request, name)
        if self.observe(ref).state == states.STOPPED:
            return self._copy_stopped(ref, request, name)
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
        """A backup job into the store, or, for a store on another host, into a staging directory on the
        domain's host whose files are then streamed to the store."""
        started = time.monotonic()
        live = ET.fromstring(ref.XMLDesc(0))
        disks = _disks(live)
        domain = ref.name()
        staging = None
        try:
            if self.off_host:
                staging = '%s/%s-%s-%s' % (STAGING_DIR, domain, name, uuid.uuid4().hex[:8])
                self.local.pool(staging, create=True)
                target_dir = staging
            else:
                target_dir = self.store.open_backup(domain, name)
            job = self._run_backup(ref, request, target_dir, disks, deadline)
            transfer_started = time.monotonic()
            if staging is not None:
                staged = self.local.pool(staging)
                staged.refresh(0)
                for target, _source, _fmt, backup in disks:
                    if backup:
                        file_name = '%s.qcow2' % target
                        self.store.put_disk(domain, name, file_name, self.conn, staged.storageVolLookupByName(file_name))
            transfer_seconds = round(time.monotonic() - transfer_started, 3)
            manifest_disks = self._checked_disks(ref, domain, name, [
                (target, source, '%s.qcow2' % target, 'qcow2', fmt, ref.blockInfo(target, 0)[0])
                for target, source, fmt, backup in disks if backup])
            manifest = self._finish(ref, request, domain, name, manifest_disks, live, job, 'virDomainBackupBegin (push)')
        except Exception:
            self._discard(domain, name)
            raise
        finally:
            if staging is not None:
                self._drop_staging(staging)
        record = self.record_from_manifest(self.store.path(domain, name), manifest)
        timings = {'guest_paused_seconds': job['guest_paused_seconds'],
                   'backup_begin_seconds': job['begin_seconds'], 'copy_seconds': job['copy_seconds'],
                   'snapshot_seconds': round(time.monotonic() - started, 3), 'libvirt_calls': self.calls}
        if staging is not None:
            timings['transfer_seconds'] = transfer_seconds
        if job.get('quiesce_error'):
            record['quiesce_error'] = job['quiesce_error']
        return record, timings

    def _copy_stopped(self, ref, request, name):
        """A stopped domain's disks streamed as they are to a store on another host (its internal snapshots,
        which live in the disk, would not outlive the host)."""
        started = time.monotonic()
        domain = ref.name()
        live = ET.fromstring(ref.XMLDesc(0))
        copies = self._stopped_copies(ref, [disk for disk in _disks(live) if disk[3]])
        try:
            for copy in copies:
                self.store.put_disk(domain, name, copy['file'], self.conn, copy['volume'])
                if self.observe(ref).state != states.STOPPED:
                    raise BackendError('Domain %s was started while its disks were being copied; the copy is not '
                                       'consistent and was discarded.' % domain)
            manifest_disks = self._checked_disks(ref, domain, name, [
                (copy['target'], copy['source'], copy['file'], copy['format'], copy['format'],
                 copy['volume'].info()[1]) for copy in copies])
            job = {'created_at': iso_utc(now_utc()), 'quiesced': False, 'guest_paused_seconds': 0.0}
            manifest = self._finish(ref, request, domain, name, manifest_disks, live, job,
                                    'copy of a stopped domain\'s disks (storage API)')
        except Exception:
            self._discard(domain, name)
            raise
        record = self.record_from_manifest(self.store.path(domain, name), manifest)
        seconds = round(time.monotonic() - started, 3)
        return record, {'guest_paused_seconds': 0.0, 'transfer_seconds': seconds, 'snapshot_seconds': seconds,
                        'libvirt_calls': self.calls}

    def _checked_disks(self, ref, domain, name, disks):
        """The manifest's disks, once every file is in the store with the virtual size of its disk.
        disks: [(target, source, file, format, source format, capacity)]."""
        entries = self.store.files_of(domain, name)
        checked = []
        for target, source, file_name, fmt, source_format, capacity in disks:
            entry = entries.get(file_name)
            if entry is None or entry[1] != capacity:
                raise BackendError('Backup of %s disk %s is wrong: expected a %s-byte copy, found %s.'
                                   % (ref.name(), target, capacity, 'none' if entry is None else entry[1]))
            checked.append({'target': target, 'source': source, 'file': file_name, 'format': fmt,
                            'source_format': source_format, 'virtual_size_bytes': capacity, 'size_bytes': entry[2]})
        return checked

    def _finish(self, ref, request, domain, name, manifest_disks, live, job, method):
        """domain.xml (without secrets), then the manifest: only now is the backup complete."""
        definition, secrets_removed = _definition_without_secrets(ref)
        self.store.write(domain, name, DOMAIN_XML, definition.encode('utf-8'))
        manifest = {
            'format': MANIFEST_FORMAT, 'name': name, 'series': request.series, 'domain_name': domain,
            'domain_uuid': ref.UUIDString(), 'created_at': job['created_at'], 'quiesced': job['quiesced'],
            'guest_paused_seconds': job['guest_paused_seconds'], 'disks': manifest_disks,
            'metadata': dict(request.metadata or {}), 'recorded': _recorded(ref, live),
            'secrets_removed': secrets_removed, 'method': method, 'complete': True,
            # Where and how the domain was: what evacuating a dead host (evacuation.py) brings back.
            'host': {'hostname': self.conn.getHostname(), 'uri': redact_uri(self.backend.uri)},
            'power_state': self.observe(ref).state,
        }
        self.store.write(domain, name, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode('utf-8'))
        return manifest

    def _discard(self, domain, name):
        try:
            self.store.remove(domain, name)
        except (libvirt.libvirtError, BackendError):
            pass    # an unfinished directory without manifest is ignored anyway

    def _drop_staging(self, staging):
        try:
            self.local.remove_dir(*staging.rsplit('/', 1))
            self.local.remove_if_empty(*STAGING_DIR.rsplit('/', 1))
        except (libvirt.libvirtError, BackendError):
            pass

    def _run_backup(self, ref, request, path, disks, deadline):
        elements = []
        for target, _source, _fmt, backup in disks:
            if backup:
                elements.append("<disk name='%s' backup='yes' type='file'><target file='%s/%s.qcow2'/>"
                                "<driver type='qcow2'/></disk>" % (_escape(target), _escape(path), _escape(target)))
            else:
                elements.append("<disk name='%s' backup='no'/>" % _escape(target))
        backup_xml = "<domainbackup mode='push'><disks>%s</disks></domainbackup>" % ''.join(elements)
        agent = agent_connected(ET.fromstring(ref.XMLDesc(0)))
        created_at = iso_utc(now_utc())
        begin = time.monotonic()

        def begin_job():
            try:
                ref.backupBegin(backup_xml, None, 0)
            except libvirt.libvirtError as error:
                raise BackendError('libvirt refused the backup of %s: %s' % (ref.name(), error.get_error_message()),
                                   libvirt_error_code=error.get_error_code())

        frozen = run_quiesced(ref, request.quiesce, agent, begin_job)
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
        return {'created_at': created_at, 'quiesced': frozen['quiesced'],
                'guest_paused_seconds': frozen['frozen_seconds'] or 0.0,
                'frozen_filesystems': frozen['frozen_filesystems'],
                'begin_seconds': frozen['begin_seconds'], 'copy_seconds': round(time.monotonic() - begin, 3),
                'quiesce_error': frozen['quiesce_error']}

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
        parent, name = record['_dir']
        try:
            self.store.remove_at(parent, name)
        except libvirt.libvirtError as error:
            raise BackendError('Deleting backup %s failed: %s' % (record['id'], error.get_error_message()))


def _definition_without_secrets(dom):
    """The inactive definition as a backup keeps it: without secrets (libvirt leaves out graphics
    passwords unless asked for the secure XML), and what was left out."""
    plain = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    secure = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    if plain == secure:
        return plain, []
    removed = []
    for element in ET.fromstring(secure).iter():
        if 'passwd' in element.attrib:
            removed.append('%s %s passwd' % (element.tag, element.get('type', '')))
    return plain, removed or ['secrets of the secure definition']


def _from_epoch(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
