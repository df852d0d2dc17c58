# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore on libvirt: copy a backup made by instance_snapshot back over the domain's disks.

Backups are found and read with instance_snapshot's driver (snapshot.py: backup directories
`<root>/<domain>/<name>/` with a manifest in a backup store, backup_store.py, and internal
snapshots), through libvirt's storage API, so remote URIs work, and a store on another host is
read from wherever the domain is now (after a drain, or for a host that is gone).  A disk is
restored by deleting the domain's disk volume and writing the backup file into the same pool under
the same name: a clone (virStorageVolCreateXMLFrom) when the store is on the domain's host, else a
sparse stream from the store's host (converted there when the formats differ); the backup itself is
only read.  The domain is shut down first
(gracefully, its power cut after shutdown_timeout), and a managed save image is discarded: the
memory it holds belongs to the disks being replaced.  The domain's <metadata> then records the
snapshot it was restored from, which makes the restore idempotent.

A domain that no longer exists is defined again from the backup's domain.xml, with its disks
written back to the paths they had, when relaunch_missing is set: on any host, from a store on any
host.  A backup keeps no graphics password (snapshot.py); a domain defined again from one gets a
random password nobody knows on each such console, so that its console is never open without one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import secrets
import time
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backup_store import (
    DOMAIN_XML, INCOMPLETE, MISSING, chain_point, open_store)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.rescue import RESCUE_NS, shutdown_budget
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.snapshot import LibvirtSnapshots
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.restore import InstanceStatus, Restorer
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import newest_in_series
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until

RESTORE_NS = 'https://github.com/vmops-lifecycle/vmops.lifecycle/restore/1'
RESTORE_PREFIX = 'vmopsrestore'


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class LibvirtRestorer(Restorer):

    @classmethod
    def for_request(cls, backend, request):
        return cls(backend, store=open_store(backend, getattr(request, 'backup_uri', None),
                                             getattr(request, 'backup_pool', None), request.backup_dir))

    def __init__(self, backend, backup_dir=None, store=None):
        self.backend = backend
        self.conn = backend.conn
        self.snapshots = LibvirtSnapshots(backend, backup_dir, store)
        self.store = self.snapshots.store
        self.files = self.snapshots.local       # directories of the domain's own host
        self.backup_dir = self.store.root

    def _where(self):
        """Where the backups were looked for, for messages."""
        location = self.store.location()
        text = '%s on %s' % (self.store.root, location['host'] or location['uri'])
        if not self.snapshots.off_host:
            text += (' (the host of the domain; backups taken on another host, or kept elsewhere, are found by '
                     'giving backup_uri and backup_dir or backup_pool)')
        return text

    def status(self, dom):
        observation = self.backend.observe(dom)
        state = observation.state
        if self._metadata(dom, RESCUE_NS) is not None:
            state = states.RESCUED
        restored = self._metadata(dom, RESTORE_NS)
        restored_from = ET.fromstring(restored).get('snapshot') if restored else None
        return InstanceStatus(observation.name, observation.id, state, restored_from, False, None,
                              dict(observation.details, task=observation.task))

    def _metadata(self, dom, namespace):
        try:
            return dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise BackendError('Reading the metadata of %s failed: %s' % (dom.name(), error.get_error_message()))

    # The snapshot --------------------------------------------------------------------------

    def snapshot(self, dom, request):
        if request.series:
            record = newest_in_series(self.snapshots, dom, request.identifier, request.series)
            if record is None:
                raise InvalidRequest('Series %s has no verified snapshot of %s in %s (a backup counts once its manifest '
                                     'says complete); nothing was changed.'
                                     % (request.series, request.identifier, self._where()), series=request.series)
            return record
        if '/' in request.snapshot:
            return self._backup_at(request.snapshot)
        record = self.snapshots.get(dom, request.identifier, request.snapshot)
        if record is not None:
            return record
        if self.snapshots.incomplete(dom, request.identifier, request.snapshot):
            raise InvalidRequest('Backup %s of %s is not complete (its manifest is missing or does not say complete); '
                                 'it is never used. Nothing was changed.' % (request.snapshot, request.identifier))
        raise InvalidRequest('No snapshot %s of %s: no backup %s/%s in %s and no internal snapshot of that name. '
                             'Nothing was changed.' % (request.snapshot, request.identifier,
                                                       dom.name() if dom is not None else request.identifier,
                                                       request.snapshot, self._where()))

    def _backup_at(self, path):
        """A backup named by its directory in the store's host (any domain's): used to restore one domain from
        another's backup."""
        path = path.rstrip('/')
        manifest, state = self.store.manifest_at(path)
        if state == MISSING:
            raise InvalidRequest('Backup directory %s does not exist on %s; nothing was changed.'
                                 % (path, self.store.location()['host'] or self.store.location()['uri']))
        if chain_point(manifest):
            raise InvalidRequest('%s is a point of an incremental chain (its files hold only what changed since its '
                                 'parent); restore it with vmops.lifecycle.instance_backup state=restored. Nothing was '
                                 'changed.' % path)
        if state == INCOMPLETE:
            raise InvalidRequest('%s is not a complete backup (no manifest saying complete); nothing was changed.'
                                 % path)
        return self.snapshots.record_from_manifest(path, manifest)

    def owner(self, record):
        if record['kind'] == 'libvirt_internal':
            return record['_domain'].UUIDString()
        return record['manifest'].get('domain_uuid')

    # Restore -------------------------------------------------------------------------------

    def plan_restore(self, dom, before, record, request):
        if before.state == states.RESCUED:
            raise InvalidRequest('%s is rescued; unrescue it first (vmops.lifecycle.instance_rescue '
                                 'state=unrescued). Nothing was changed.' % before.name)
        steps = []
        if before.state in (states.RUNNING, states.PAUSED, states.ERROR):
            steps.append('power_off')
        if before.state == states.SUSPENDED:
            steps.append('discard_saved_state')
        copies = []
        if record['kind'] == 'libvirt_backup':
            copies = self._plan_copies(dom, before, record)
            steps.extend('copy_%s' % copy['target'] for copy in copies)
        else:
            steps.append('revert_internal_snapshot')
        steps.append('record_restored_from')
        wanted = self.wanted_power(before.state, request)
        if wanted is None:
            wanted = states.RUNNING if before.state in (states.RUNNING, states.PAUSED, states.SUSPENDED) \
                else states.STOPPED
        if wanted == states.RUNNING:
            steps.append('start')
        return {'action': 'disk_restore', 'copies': copies, 'steps': steps, 'power': None, 'start': wanted == 'running',
                'state_after': wanted}

    def _plan_copies(self, dom, before, record):
        manifest = record['manifest']
        tree = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        current = {}
        for disk in tree.iterfind('./devices/disk'):
            target, source, driver = disk.find('target'), disk.find('source'), disk.find('driver')
            if target is not None:
                current[target.get('dev')] = (source.get('file') if source is not None else None,
                                              driver.get('type', 'raw') if driver is not None else 'raw')
        entries = self.store.files_at(record['path'])
        copies = []
        for disk in manifest.get('disks', []):
            target = disk['target']
            if target not in current or not current[target][0]:
                raise InvalidRequest('The backup has disk %s, but %s has no file-backed disk %s now; nothing was '
                                     'changed.' % (target, before.name, target))
            if disk['file'] not in entries:
                raise InvalidRequest('Backup %s lacks its file %s; nothing was changed.' % (record['path'], disk['file']))
            path, fmt = current[target]
            try:
                volume = self.conn.storageVolLookupByPath(path)
                volume.storagePoolLookupByVolume()
            except libvirt.libvirtError:
                raise InvalidRequest('Disk %s of %s (%s) is in no libvirt storage pool; it cannot be restored '
                                     'through libvirt. Nothing was changed.' % (target, before.name, path))
            copies.append({'target': target, 'path': path, 'format': fmt, 'backup_file': disk['file'],
                           'capacity': disk.get('virtual_size_bytes') or entries[disk['file']][1]})
        return copies

    def restore(self, dom, before, record, plan, request, deadline):
        timings = {}
        started = time.monotonic()
        if 'power_off' in plan['steps']:
            timings['power_off'] = self._power_off(dom, before, request, deadline)
        if 'discard_saved_state' in plan['steps']:
            dom.managedSaveRemove(0)
        timings['power_off_seconds'] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        try:
            if record['kind'] == 'libvirt_backup':
                for copy in plan['copies']:
                    self._copy(record, copy)
            else:
                snap = dom.snapshotLookupByName(record['_snapshot_name'], 0)
                dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
                if dom.isActive():      # a snapshot with memory reverts to running: we start below if wanted
                    power.destroy(dom)
        except libvirt.libvirtError as error:
            raise BackendError('Restoring %s from %s failed: %s. The backup is untouched; run the restore again.'
                               % (before.name, record['id'], error.get_error_message()))
        timings['disk_restore_seconds'] = round(time.monotonic() - started, 3)
        self._mark(dom, record)
        if plan['start']:
            started = time.monotonic()
            power.start(dom)
            self._wait_running(dom, before.name, deadline)
            timings['start_seconds'] = round(time.monotonic() - started, 3)
        return self.status(dom), timings

    def _copy(self, record, copy):
        volume = self.conn.storageVolLookupByPath(copy['path'])
        pool = volume.storagePoolLookupByVolume()
        name = volume.name()
        volume.delete(0)
        self.store.get_disk(record['path'], copy['backup_file'], self.conn, pool, name, copy['format'],
                            copy['capacity'])

    def _mark(self, dom, record):
        element = ET.Element('restore', snapshot=record['id'], name=record['name'] or '',
                             created_at=record.get('created_at') or '', restored_at=_now())
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(element, encoding='unicode'),
                        RESTORE_PREFIX, RESTORE_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def _power_off(self, dom, before, request, deadline):
        # A paused guest is destroyed too: its disks are about to be replaced, nothing in it is kept.
        return power.power_off(dom, shutdown_budget(request, deadline), True, 'the restore',
                               destroy_at_once=before.state in (states.ERROR, states.PAUSED))

    def _wait_running(self, dom, name, deadline):
        wait_until(lambda: self.backend.observe(dom), lambda o: o.state == states.RUNNING and not o.task,
                   describe, 'domain %s to run' % name, deadline,
                   failure=lambda o: ('%s is %s' % (name, describe(o))) if o.state == states.ERROR else None)

    # Relaunch (define again from the backup) ------------------------------------------------

    def plan_relaunch(self, record, request):
        if record['kind'] != 'libvirt_backup':
            raise InvalidRequest('Snapshot %s is an internal snapshot; it went with its domain. Nothing was changed.'
                                 % record['name'])
        raw = self.store.read_at(record['path'], DOMAIN_XML)
        if not raw:
            raise InvalidRequest('Backup %s has no %s to define the domain from; nothing was changed.'
                                 % (record['path'], DOMAIN_XML))
        tree = ET.fromstring(raw.decode('utf-8'))
        entries = self.store.files_at(record['path'])
        copies = []
        for disk in record['manifest'].get('disks', []):
            directory, name = disk['source'].rsplit('/', 1)
            target_pool = self.files.pool(directory)
            if target_pool is None:
                raise InvalidRequest('Directory %s of disk %s does not exist on %s; nothing was changed.'
                                     % (directory, disk['target'], self.backend.location()))
            existing = self.files.listing(target_pool).get(name)
            if existing is not None and not request.force:
                raise InvalidRequest('%s already exists (the disk the domain had?); set force=true to overwrite it '
                                     'with the backup. Nothing was changed.' % disk['source'])
            copies.append({'target': disk['target'], 'path': disk['source'], 'pool_dir': directory, 'name': name,
                           'format': disk.get('source_format') or 'qcow2', 'backup_file': disk['file'],
                           'capacity': disk.get('virtual_size_bytes') or entries[disk['file']][1],
                           'exists': existing is not None})
        locked = _lock_consoles(tree, record.get('secrets_removed') or [])
        start = request.power_state != 'stopped'
        return {'action': 'relaunch', 'domain_xml': ET.tostring(tree, encoding='unicode'), 'copies': copies,
                'name': tree.findtext('name'), 'power': None, 'start': start,
                'steps': ['copy_%s' % copy['target'] for copy in copies] + ['define']
                + ['new_%s_password' % kind for kind in locked] + ['record_restored_from']
                + (['start'] if start else []), 'state_after': 'running' if start else 'stopped'}

    def relaunch(self, record, plan, request, deadline):
        timings = {}
        started = time.monotonic()
        for copy in plan['copies']:
            target_pool = self.files.pool(copy['pool_dir'])
            if copy['exists']:
                target_pool.storageVolLookupByName(copy['name']).delete(0)
            self.store.get_disk(record['path'], copy['backup_file'], self.conn, target_pool, copy['name'],
                                copy['format'], copy['capacity'])
        timings['disk_restore_seconds'] = round(time.monotonic() - started, 3)
        dom = self.conn.defineXML(plan['domain_xml'])
        self._mark(dom, record)
        if plan['start']:
            started = time.monotonic()
            power.start(dom)
            self._wait_running(dom, plan['name'], deadline)
            timings['start_seconds'] = round(time.monotonic() - started, 3)
        return self.status(dom), timings


def _lock_consoles(tree, secrets_removed):
    """A backup keeps no graphics password: give each such console of the definition a random one nobody
    knows (set a new one to use it), rather than define it open.  Returns the graphics types locked."""
    locked = []
    for graphics in tree.iter('graphics'):
        kind = graphics.get('type', '')
        if 'graphics %s passwd' % kind in secrets_removed and not graphics.get('passwd'):
            graphics.set('passwd', secrets.token_urlsafe(6))
            locked.append(kind)
    return locked
