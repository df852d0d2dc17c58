# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draining a libvirt host: the libvirt side of host_evacuate (moves.MoveBackend).

The "host" is a libvirt URI: the module's source (`libvirt_uri`, or `host` when it is a URI) and a
destination `target_host` (the URI this controller reaches it with).  The source libvirtd reaches the
destination itself (peer to peer) at `migration_uri`, which defaults to `target_host`; they differ when
the controller talks to the hosts over local sockets or SSH while the hosts talk to each other over
TCP/TLS on a migration network.

Moves:
  live     running or paused domain: migrateToURI3 with LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE
           (the last two only for a persistent domain), plus NON_SHARED_DISK when the disks are not on
           storage both hosts share.  A paused domain stays paused.  A suspended domain (managed save)
           is restored paused, moved live and saved again on the destination.
  cold     stopped domain: its disks are copied through the storage-volume API (sparse streams, so remote
           URIs work) when the storage is not shared, then its definition moves (OFFLINE migration).
           As the fallback of an aborted live move of a running domain: the guest is shut down
           gracefully (never destroyed), moved as above and started again on the destination.
Each migration blocks in libvirt, so each in-flight move runs in its own thread on its own connection;
the main thread polls nothing while they run (the thread says when it ended) and reads the domain on
the destination once at the end.  abort = abortJob(); force_complete = pause the guest (memory and disk
stop changing, so the migration converges) and resume it on the destination.

Shared storage is never guessed: a disk counts as shared only when its pool is of a network type (netfs,
rbd, ...) or when the destination sees a file at the same path AND a probe volume created in the source
pool shows up in the destination pool at once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, ConnectionFailed, InvalidRequest)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import (
    HAS_LIBVIRT, _interpret, libvirt)

DEFAULT_SHUTDOWN_TIMEOUT = 120
PROBE_PREFIX = '.vmops-shared-probe-'
COPY_CHUNK = 4 * 1024 * 1024
CLOSE_WAIT = 60
UNLIMITED_BANDWIDTH = (2 ** 63 - 1) // (1024 * 1024)    # MiB/s: libvirt's own "no limit"
# Pool types whose volumes every host that defines the pool sees (no probe needed to say "shared").
SHARED_POOL_TYPES = ('netfs', 'gluster', 'rbd', 'sheepdog', 'iscsi-direct', 'vstorage')


def is_uri(text):
    return bool(text) and '://' in text


def validate_options(params):
    """Refuse what the libvirt backend cannot do, before connecting (module params as a dict)."""
    if params.get('mode', 'drain') == 'evacuate':
        raise InvalidRequest(
            'mode=evacuate is not available on libvirt: evacuation rebuilds instances of a dead host from a '
            'shared control plane (Nova), and libvirt hosts have none; the definitions and disks live on the '
            'dead host. Recover the host, or define the domains on another host from backups '
            '(vmops.lifecycle.instance_restore). A live host is emptied with mode=drain.')
    if not params.get('target_host'):
        raise InvalidRequest('target_host is required on libvirt (there is no scheduler to pick one): the '
                             'libvirt URI of the destination host as this controller reaches it, for example '
                             'qemu+ssh://root@host2/system; set migration_uri too if host1 reaches host2 by '
                             'another URI.')
    if not is_uri(params['target_host']):
        raise InvalidRequest("target_host must be a libvirt URI on libvirt (e.g. qemu+tcp://host2/system), "
                             "got '%s'." % params['target_host'])
    migration_uri = params.get('migration_uri')
    if migration_uri is not None and not is_uri(migration_uri):
        raise InvalidRequest("migration_uri must be a libvirt URI (e.g. qemu+tcp://10.0.0.2/system), got '%s'."
                             % migration_uri)
    if params.get('migration_bandwidth') is not None and params['migration_bandwidth'] < 1:
        raise InvalidRequest('migration_bandwidth is in MiB/s and must be at least 1, got %s.'
                             % params['migration_bandwidth'])
    if params.get('fenced') or params.get('force_down'):
        raise InvalidRequest('fenced and force_down apply to mode=evacuate on OpenStack only.')
    source = params.get('libvirt_uri') or (params.get('host') if is_uri(params.get('host')) else None)
    if source is None:
        raise InvalidRequest('On libvirt the source host is a libvirt URI: set libvirt_uri, or give host as a URI.')
    if source == params['target_host']:
        raise InvalidRequest('target_host is the URI of the host being emptied (%s).' % source)
    return source


class _Job(object):
    """What a worker thread shares with the main thread for one move."""

    def __init__(self, kind):
        self.kind = kind
        self.handle = None
        self.thread = None
        self.ended = False
        self.error = None          # message when the move failed
        self.error_code = None
        self.steps = []            # what the worker did, in order (for the report)
        self.cancelled = False     # set by close(): a cold worker stops at its next step and undoes it


class LibvirtMoves(moves.MoveBackend):
    """MoveBackend for libvirt: drains `source_uri` into `target_uri`."""

    name = 'libvirt'
    default_window = 1

    def __init__(self, source_uri, target_uri, migration_uri=None, bandwidth=None, source_label=None,
                 target_label=None, shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT, opener=None):
        self.source_uri = source_uri
        self.target_uri = target_uri
        self.migration_uri = migration_uri or target_uri
        self.bandwidth = bandwidth
        self.source_label = source_label or source_uri
        self.target_label = target_label or target_uri
        self.shutdown_timeout = shutdown_timeout
        self._open = opener or libvirt.open
        self._calls = 0
        self._calls_lock = threading.Lock()
        self._shared = {}          # directory -> (shared bool, how we know)
        self._refreshed = set()    # directories whose pools were refreshed in this run
        self._jobs = []
        self.src = self.dst = None
        if opener is None:
            libvirt.registerErrorHandler(lambda ctx, err: None, None)
        self.src = self._connect(source_uri, 'source')
        try:
            self.dst = self._connect(target_uri, 'target')
            self._check_distinct_hosts()
        except Exception:
            self.close()
            raise

    # --- plumbing

    def _connect(self, uri, role):
        try:
            conn = self._open(uri)
        except libvirt.libvirtError as error:
            raise ConnectionFailed('Cannot connect to the %s libvirt at %s: %s' % (role, uri, error.get_error_message()),
                                   uri=uri, libvirt_error_code=error.get_error_code())
        self._count()
        return conn

    def _count(self, calls=1):
        with self._calls_lock:
            self._calls += calls

    def _call(self, func, *args):
        """One libvirt call, counted."""
        self._count()
        return func(*args)

    def request_count(self):
        return self._calls

    def location(self):
        return '%s -> %s' % (self.source_uri, self.target_uri)

    def close(self):
        """Release the connections.  A move the core gave up on (still in flight at the end of the run) is
        left to libvirtd when it is a plain live migration (it goes on peer to peer; a rerun adopts it);
        one that needs us afterwards (a guest we paused, a suspended domain we restored, a cold move in
        this process) is aborted and its domain put back in the power state it started in."""
        for job in self._jobs:
            if job.ended or job.thread is None:
                continue
            handle = job.handle
            needs_us = job.kind == 'cold' or handle.data.get('paused_by_us') \
                or handle.data.get('state_before') == states.SUSPENDED
            if not needs_us:
                continue
            job.cancelled = True
            if job.kind == 'live' and self.src is not None:
                dom = self._lookup(self.src, handle.id)
                if dom is not None:
                    try:
                        self._call(dom.abortJob)
                        job.steps.append('aborted at the end of the run')
                    except libvirt.libvirtError:
                        pass
            job.thread.join(CLOSE_WAIT)
            if job.ended and self.src is not None:
                try:
                    self.finish(handle, self._status_after(handle, job.error))
                except (BackendError, libvirt.libvirtError):
                    pass
        for conn in (self.src, self.dst):
            if conn is not None:
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
        self.src = self.dst = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def _check_distinct_hosts(self):
        """Two URIs can name the same host; migrating a domain to its own host is refused up front."""
        uuids = []
        for conn in (self.src, self.dst):
            match = re.search(r'<host>\s*<uuid>([^<]+)</uuid>', self._call(conn.getCapabilities))
            uuids.append(match.group(1) if match else None)
        if uuids[0] and uuids[0] == uuids[1]:
            raise InvalidRequest('target_host %s is the same hypervisor as the source %s (host UUID %s).'
                                 % (self.target_uri, self.source_uri, uuids[0]))

    def source_hostname(self):
        return self._call(self.src.getHostname)

    def _lookup(self, conn, domain_id):
        try:
            return self._call(conn.lookupByUUIDString, domain_id)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise BackendError('Looking up domain %s failed: %s' % (domain_id, error.get_error_message()))

    def _observe(self, dom):
        """(core state, task, fault) of a domain; ABSENT when it is gone."""
        try:
            code, reason = self._call(dom.state)
            saved = code == libvirt.VIR_DOMAIN_SHUTOFF and self._call(dom.hasManagedSaveImage, 0)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return states.ABSENT, None, None
            raise
        return _interpret(code, reason, saved)

    # --- listing and planning

    def list_on_host(self, host):
        """Every domain defined or running on the source, from one getAllDomainStats call (+ a managed
        save check per shut-off domain, + a job check per active one to find a migration in flight)."""
        subjects = []
        flags = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BALLOON
        try:
            records = self._call(self.src.getAllDomainStats, flags, 0)
        except libvirt.libvirtError as error:
            raise BackendError('Listing the domains of %s failed: %s' % (self.source_uri, error.get_error_message()))
        for dom, stats in records:
            code, reason = stats.get('state.state'), stats.get('state.reason')
            saved = False
            details = {'libvirt_state': code, 'libvirt_reason': reason,
                       'memory_kib': stats.get('balloon.maximum') or stats.get('balloon.current')}
            try:
                if code == libvirt.VIR_DOMAIN_SHUTOFF:
                    saved = bool(self._call(dom.hasManagedSaveImage, 0))
                elif code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_BLOCKED):
                    job = self._call(dom.jobStats, 0)
                    if job.get('type', libvirt.VIR_DOMAIN_JOB_NONE) not in (
                            libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED,
                            libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED) \
                            and job.get('operation') == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                        details['move_in_flight'] = True
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue        # it left while we listed
                raise BackendError('Reading domain %s on %s failed: %s'
                                   % (dom.name(), self.source_uri, error.get_error_message()))
            state, task, fault = _interpret(code, reason, saved)
            if details.get('move_in_flight'):
                task = 'migrating'
            if fault:
                details['fault'] = fault
            subjects.append(moves.MoveSubject(dom.UUIDString(), dom.name(), state, task, self.source_label,
                                              False, details))
        subjects.sort(key=lambda subject: subject.name)
        return subjects

    def plan_move(self, subject, request):
        decision = moves.policy_decision(subject, request)
        if request.mode == 'evacuate':
            return moves.Decision(moves.FAIL, 'mode=evacuate is not available on libvirt')
        if decision.move == moves.COLD and subject.state == states.ERROR:
            return moves.Decision(moves.FAIL, 'a domain in error (%s) is not moved on libvirt: fix it, or set '
                                  'error_policy=skip' % subject.details.get('fault', 'error'))
        if decision.move not in (moves.LIVE, moves.COLD):
            return decision
        if subject.task and subject.task != 'migrating':
            return moves.Decision(moves.FAIL, 'busy (%s); run again once it settles' % subject.task)
        try:
            storage = self.storage_plan(self._lookup_dom(subject), request.block_migration, probe=False)
        except BackendError as error:
            return moves.Decision(moves.FAIL, error.msg)
        texts = [decision.note] if decision.note else []
        copied = [disk['path'] for disk in storage if disk['copy']]
        undecided = [disk for disk in storage if disk['copy'] is None]
        if copied:
            texts.append('disks copied: %s' % ', '.join(copied))
        for disk in undecided:
            texts.append('%s: %s' % (disk['path'], disk['why']))
        if storage and not copied and not undecided:
            texts.append('storage shared')
        return moves.Decision(decision.move, decision.reason, '; '.join(texts) or None)

    def _lookup_dom(self, subject):
        dom = self._lookup(self.src, subject.id)
        if dom is None:
            raise BackendError('%s is no longer on %s' % (subject.name, self.source_uri))
        return dom

    # --- storage

    def disks(self, dom):
        """Writable and read-only file/block disks of the domain: [{target, path, type, format, readonly}]."""
        tree = ET.fromstring(self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))
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

    def storage_plan(self, dom, block_migration, probe=True):
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
            if block_migration in (True, 'true', 'yes') or block_migration is True:
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
            self._call(self.dst.storageVolLookupByPath, path)
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
            volume = self._call(self.src.storageVolLookupByPath, path)
            pool = self._call(volume.storagePoolLookupByVolume)
            pool_type = ET.fromstring(self._call(pool.XMLDesc, 0)).get('type')
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
                pool = self._call(conn.storagePoolLookupByTargetPath, directory)
                if self._call(pool.isActive):
                    self._call(pool.refresh, 0)
            except libvirt.libvirtError:
                pass        # no pool for that directory there (or busy): the look-ups below say what is known

    def _probe(self, pool, directory):
        """Create a tiny volume in the source pool; shared if the destination's pool of that directory sees it."""
        name = PROBE_PREFIX + uuid.uuid4().hex[:12]
        xml = ("<volume><name>%s</name><capacity unit='bytes'>0</capacity>"
               "<target><format type='raw'/></target></volume>" % name)
        try:
            probe = self._call(pool.createXML, xml, 0)
        except libvirt.libvirtError as error:
            return None, 'cannot create a probe volume in the source pool: %s' % error.get_error_message()
        try:
            try:
                dst_pool = self._call(self.dst.storagePoolLookupByTargetPath, directory)
                self._call(dst_pool.refresh, 0)
                self._call(self.dst.storageVolLookupByPath, os.path.join(directory, name))
                return True, 'a probe file created on the source appeared on the destination'
            except libvirt.libvirtError:
                return False, 'a probe file created on the source did not appear on the destination'
        finally:
            try:
                self._call(probe.delete, 0)
            except libvirt.libvirtError:
                pass

    def _copy_volume(self, src_conn, dst_conn, path, job):
        """Copy one disk file to the same path on the destination with sparse streams; returns bytes sent."""
        src_vol = src_conn.storageVolLookupByPath(path)
        self._count()
        vol_xml = ET.fromstring(src_vol.XMLDesc(0))
        self._count()
        fmt = vol_xml.find('target/format')
        capacity = int(vol_xml.findtext('capacity'))
        dst_pool = dst_conn.storagePoolLookupByTargetPath(os.path.dirname(path))
        self._count()
        try:
            dst_vol = dst_conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            dst_vol = None
        self._count()
        if dst_vol is not None:
            user = self._target_user(dst_conn, path)
            if user:
                raise BackendError('the destination already has %s, used by its domain %s; not overwritten'
                                   % (path, user))
            # A file no domain of the destination uses (left by an earlier move away): replaced by a fresh
            # volume, because a sparse upload would leave its old bytes in the holes.
            dst_vol.delete(0)
            self._count()
            job.steps.append('replace an unused %s on the destination' % path)
        xml = ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='%s'/>"
               "</target></volume>" % (os.path.basename(path), capacity, fmt.get('type') if fmt is not None else 'raw'))
        dst_vol = dst_pool.createXML(xml, 0)
        self._count()
        job.steps.append('copy %s' % path)
        try:
            sent = _pipe_volume(src_conn, dst_conn, src_vol, dst_vol, lambda: _check_cancel(job))
            self._count(6)
        except Exception:
            try:
                dst_vol.delete(0)       # only our own, unfinished copy
            except libvirt.libvirtError:
                pass
            raise
        return sent

    def _target_user(self, dst_conn, path):
        """The name of a destination domain whose disks include `path`, else None."""
        self._count()
        for dom in dst_conn.listAllDomains(0):
            self._count()
            if path in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE):
                return dom.name()
        return None

    # --- moves

    def start_move(self, subject, move, target_host, options):
        if target_host and target_host not in (self.target_uri, self.target_label):
            raise BackendError('target_host %s is not the destination this run connected to (%s)'
                               % (target_host, self.target_uri))
        dom = self._lookup_dom(subject)
        state, task, _fault = self._observe(dom)
        if task:
            raise BackendError('%s is busy (%s)' % (subject.name, task))
        storage = self.storage_plan(dom, options.block_migration, probe=True)
        copy = [disk['path'] for disk in storage if disk['copy']]
        persistent = bool(self._call(dom.isPersistent))
        if move == moves.LIVE:
            if state not in (states.RUNNING, states.PAUSED, states.SUSPENDED):
                raise BackendError('%s is %s now; a live move needs it running, paused or suspended'
                                   % (subject.name, state))
            job = _Job('live')
            data = dict(job=job, state_before=state, copy=copy, persistent=persistent, paused_by_us=False)
            worker = self._live_worker
        elif move == moves.COLD:
            if state == states.PAUSED:
                raise BackendError('%s is paused: moving it cold would throw its memory away; it stays paused on %s'
                                   % (subject.name, self.source_label))
            if state == states.SUSPENDED:
                raise BackendError('%s is suspended (managed save): the saved memory image cannot move cold; it '
                                   'stays suspended on %s' % (subject.name, self.source_label))
            if state not in (states.RUNNING, states.STOPPED):
                raise BackendError('%s is %s: not moved cold' % (subject.name, state))
            if not persistent:
                raise BackendError('%s is transient: it has no definition to move cold' % subject.name)
            job = _Job('cold')
            data = dict(job=job, state_before=state, copy=copy, persistent=True,
                        shutdown_timeout=min(self.shutdown_timeout, options.deadline))
            worker = self._cold_worker
        else:
            raise BackendError('move %s is not available on libvirt' % move)
        handle = moves.MoveHandle(subject, move, self.target_label, **data)
        job.handle = handle
        job.thread = threading.Thread(target=self._run_worker, args=(worker, handle),
                                      name='vmops-move-%s' % subject.name)
        job.thread.daemon = True
        self._jobs.append(job)
        job.thread.start()
        return handle

    def _run_worker(self, worker, handle):
        job = handle.data['job']
        conns = []

        def connect(uri):
            conn = self._open(uri)
            self._count()
            conns.append(conn)
            return conn
        try:
            worker(handle, connect)
        except libvirt.libvirtError as error:
            job.error, job.error_code = error.get_error_message(), error.get_error_code()
        except BackendError as error:
            job.error = error.msg
        except Exception as error:  # pylint: disable=broad-except
            job.error = 'unexpected error: %r' % (error,)
        finally:
            for conn in conns:
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            job.ended = True

    def _migration_params(self):
        params = {}
        if self.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(self.bandwidth)
        return params

    def _live_flags(self, handle):
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        if handle.data['persistent']:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if handle.data['copy']:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        return flags

    def _live_worker(self, handle, connect):
        job = handle.data['job']
        conn = connect(self.source_uri)
        dom = conn.lookupByUUIDString(handle.id)
        self._count()
        if handle.data['state_before'] == states.SUSPENDED:
            # The saved memory image is a file of the source host: bring it back in memory (paused, the
            # guest does not run), move it live, and save it again on the destination (finish()).
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            self._count()
            job.steps.append('restore paused')
        flags = self._live_flags(handle)
        job.steps.append('migrate live%s' % (' with storage' if handle.data['copy'] else ''))
        self._count()
        dom.migrateToURI3(self.migration_uri, self._migration_params(), flags)

    def _cold_worker(self, handle, connect):
        job = handle.data['job']
        src = connect(self.source_uri)
        dom = src.lookupByUUIDString(handle.id)
        self._count()
        was_running = handle.data['state_before'] == states.RUNNING
        try:
            if was_running:
                self._shut_down(dom, handle)
            dst = connect(self.target_uri)
            for path in handle.data['copy']:
                _check_cancel(job)
                handle.data['bytes_copied'] = handle.data.get('bytes_copied', 0) + self._copy_volume(
                    src, dst, path, job)
            _check_cancel(job)
            job.steps.append('migrate offline')
            self._count()
            dom.migrateToURI3(self.migration_uri, {}, libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PEER2PEER
                              | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        except Exception:
            if was_running:
                self._restart_on_source(dom, handle)
            raise
        if was_running:
            moved = dst.lookupByUUIDString(handle.id)
            self._count(2)
            moved.create()
            job.steps.append('start on the destination')

    def _restart_on_source(self, dom, handle):
        """Put a domain the cold move shut down back as it was: running on the source (a new boot, which the
        report says).  A shutdown request cannot be taken back: a guest still on its way down is given
        the same time again to get there, then started."""
        job = handle.data['job']
        if not handle.data.get('shutdown_sent'):
            return
        limit = time.monotonic() + handle.data.get('shutdown_timeout', self.shutdown_timeout)
        try:
            while True:
                self._count()
                if dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF:
                    self._count()
                    dom.create()
                    job.steps.append('started again on the source')
                    return
                if time.monotonic() > limit:
                    job.steps.append('still running on the source; the shutdown request may still power it off')
                    return
                time.sleep(0.3)
        except libvirt.libvirtError as error:
            job.steps.append('starting it again on the source failed: %s' % error.get_error_message())

    def _shut_down(self, dom, handle):
        """Ask the guest to power off (ACPI or agent) and wait; never force it."""
        job = handle.data['job']
        timeout = handle.data.get('shutdown_timeout', self.shutdown_timeout)
        job.steps.append('shutdown')
        self._count()
        dom.shutdown()
        handle.data['shutdown_sent'] = True
        limit = time.monotonic() + timeout
        while True:
            self._count()
            if dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF:
                handle.data['shut_down'] = True
                return
            _check_cancel(job)
            if time.monotonic() > limit:
                raise BackendError('the guest did not shut down within %s s (does it ignore ACPI?); it was not '
                                   'forced off' % timeout)
            time.sleep(0.3)

    def adopt(self, subject):
        job = _Job('adopted')
        job.steps.append('followed a migration started earlier')
        return moves.MoveHandle(subject, moves.ADOPT, self.target_label, job=job, adopted=True,
                                state_before=subject.state, copy=[], persistent=True, paused_by_us=False)

    def poll(self, handles):
        """Threads say when their move ended (no libvirt call while they run); an ended move costs one
        look-up and state read on each side.  An adopted move is followed with one job read."""
        statuses = {}
        for handle in handles:
            job = handle.data['job']
            if handle.data.get('adopted'):
                status = self._poll_adopted(handle)
                if status is not None:
                    statuses[handle.id] = status
                continue
            if not job.ended:
                continue
            statuses[handle.id] = self._status_after(handle, job.error)
        return statuses

    def _poll_adopted(self, handle):
        dom = self._lookup(self.src, handle.id)
        if dom is not None:
            try:
                job = self._call(dom.jobStats, 0)
            except libvirt.libvirtError:
                job = {}
            active = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
            if job.get('type', libvirt.VIR_DOMAIN_JOB_NONE) in active:
                return None
        handle.data['job'].ended = True
        return self._status_after(handle, None, 'the migration started earlier ended without moving it')

    def _status_after(self, handle, error, still_there='the domain is still on the source'):
        """Where the domain is once its move ended."""
        on_target = self._lookup(self.dst, handle.id)
        on_source = self._lookup(self.src, handle.id)
        if on_target is not None and on_source is None and not error:
            state, _task, _fault = self._observe(on_target)
            return moves.MoveStatus(True, False, None, self.target_label, state)
        if on_source is not None:
            state, _task, _fault = self._observe(on_source)
            return moves.MoveStatus(False, True, error or still_there, self.source_label, state)
        if on_target is not None:
            state, _task, _fault = self._observe(on_target)
            return moves.MoveStatus(True, False, error, self.target_label, state)
        return moves.MoveStatus(False, True, '%s: the domain is on neither host' % (error or 'moved'), None,
                                states.ABSENT)

    def abort(self, handle):
        dom = self._lookup(self.src, handle.id)
        if dom is None:
            raise BackendError('%s already left the source' % handle.subject.name)
        try:
            self._call(dom.abortJob)
        except libvirt.libvirtError as error:
            raise BackendError('abortJob of %s failed: %s' % (handle.subject.name, error.get_error_message()))
        handle.data['job'].steps.append('abort')

    def force_complete(self, handle):
        """Pause the guest on the source: nothing changes any more, so memory and disks converge; the
        domain is resumed where it ends up (finish)."""
        dom = self._lookup(self.src, handle.id)
        if dom is None:
            raise BackendError('%s already left the source' % handle.subject.name)
        try:
            code = self._call(dom.state)[0]
            if code != libvirt.VIR_DOMAIN_PAUSED:
                self._call(dom.suspend)
                handle.data['paused_by_us'] = True
            if self.bandwidth:
                # A bandwidth cap would still hold the copy back: lift it for this migration.
                self._call(dom.migrateSetMaxSpeed, UNLIMITED_BANDWIDTH, 0)
        except libvirt.libvirtError as error:
            raise BackendError('pausing %s to complete its migration failed: %s'
                               % (handle.subject.name, error.get_error_message()))
        handle.data['job'].steps.append('paused to complete')

    def finish(self, handle, status):
        """Bring the domain back to the power state it started in, wherever it is now."""
        if handle.data.get('adopted'):
            return status._replace(message=_message(handle, status))
        wanted = handle.data['state_before']
        where = self.dst if status.done else self.src
        dom = self._lookup(where, handle.id)
        final = status
        if dom is not None:
            try:
                state, _task, _fault = self._observe(dom)
                if wanted == states.RUNNING and state == states.PAUSED:
                    self._call(dom.resume)
                    handle.data['job'].steps.append('resume')
                elif wanted == states.PAUSED and state == states.RUNNING:
                    self._call(dom.suspend)
                    handle.data['job'].steps.append('pause')
                elif wanted == states.SUSPENDED and state in (states.RUNNING, states.PAUSED):
                    self._call(dom.managedSave, libvirt.VIR_DOMAIN_SAVE_RUNNING)
                    handle.data['job'].steps.append('managed save')
                final_state, _task, _fault = self._observe(dom)
                final = status._replace(state=final_state)
            except libvirt.libvirtError as error:
                raise BackendError('bringing %s back to %s failed: %s'
                                   % (handle.subject.name, wanted, error.get_error_message()))
        if status.done:
            handle.data['stats'] = self._completed_stats(dom) if handle.move == moves.LIVE and dom else None
        return final._replace(message=_message(handle, final))

    def _completed_stats(self, dom):
        try:
            stats = self._call(dom.jobStats, libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        return dict((key, stats[key]) for key in ('time_elapsed', 'downtime', 'memory_processed', 'disk_processed',
                                                  'memory_iteration') if key in stats)

    def capacity(self, host, subjects):
        """Room on the destination: free memory against the domains that will run there, and for each
        destination pool whose volumes will be copied, available bytes against their capacity."""
        needed_kib = sum((s.details.get('memory_kib') or 0) for s in subjects
                         if s.state in (states.RUNNING, states.PAUSED, states.SUSPENDED))
        free = self._call(self.dst.getFreeMemory)
        entry = {'host': self.target_label, 'free': {'memory_mib': free // (1024 * 1024)},
                 'needed': {'memory_mib': needed_kib // 1024}}
        entry['fits'] = needed_kib * 1024 <= free
        return [entry]


def _message(handle, status):
    job = handle.data['job']
    parts = []
    if job.steps:
        parts.append(', '.join(job.steps))
    if handle.data.get('copy'):
        parts.append('%s: %s' % ('storage copied' if status.done else 'storage to copy', ', '.join(handle.data['copy'])))
    stats = handle.data.get('stats')
    if stats:
        parts.append('migration %.2f s, downtime %s ms, %s MiB memory sent' % (
            stats.get('time_elapsed', 0) / 1000.0, stats.get('downtime'),
            (stats.get('memory_processed') or 0) // (1024 * 1024)))
    if handle.data.get('shut_down') and status.done:
        parts.append('the guest was shut down and started again on the destination (a new boot)')
    if status.message and status.message not in parts:
        parts.insert(0, status.message)
    return '; '.join(parts) or None


def _check_cancel(job):
    if job.cancelled:
        raise BackendError('given up at the end of the run')


def _pipe_volume(src_conn, dst_conn, src_vol, dst_vol, check=None):
    """Stream a volume's bytes from one host to another; holes stay holes.  Returns the data bytes sent."""
    down = src_conn.newStream(0)
    up = dst_conn.newStream(0)
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


def open_backend(params):
    """The libvirt MoveBackend for host_evacuate's options (a dict); validate_options() first."""
    source = validate_options(params)
    backend = LibvirtMoves(source, params['target_host'], migration_uri=params.get('migration_uri'),
                           bandwidth=params.get('migration_bandwidth'),
                           source_label=params.get('host') or source, target_label=params['target_host'])
    host = params.get('host')
    if host and host != source:
        try:
            hostname = backend.source_hostname()
        except libvirt.libvirtError as error:
            backend.close()
            raise BackendError('Reading the host name of %s failed: %s' % (source, error.get_error_message()))
        if host not in (hostname, hostname.split('.')[0]):
            backend.close()
            raise InvalidRequest("host '%s' is not the hypervisor at %s, which calls itself '%s'; nothing was "
                                 "touched." % (host, source, hostname), hostname=hostname)
    return backend


__all__ = ['LibvirtMoves', 'open_backend', 'validate_options', 'HAS_LIBVIRT']
