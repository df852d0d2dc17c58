# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draining a libvirt host: the libvirt side of host_evacuate (moves.MoveBackend).

The "host" is a libvirt URI: the module's source (`libvirt_uri`, or `host` when it is a URI) and a
destination `target_host` (the URI this controller reaches it with).  The source libvirtd reaches the
destination itself (peer to peer) at `migration_uri`, which defaults to `target_host`; they differ when
the controller talks to the hosts over local sockets or SSH while the hosts talk to each other over
TCP/TLS on a migration network.

This file is the thin adapter the core drives; the parts it is made of:
  connection.py  one kept connection per host (reopened after a libvirtd restart, reads retried)
  storage.py     which disks a move copies (shared storage proved by a probe), and the copies
  migration.py   the worker threads (live and cold moves) and what they report
  whereabouts.py where a domain is once its move ended (both hosts read, `unknown` where one cannot
                 be), and what a failed move left on the destination
Moves: running or paused domain live; suspended (managed save) restored paused, moved live, saved
again; stopped domain cold.  The main thread polls nothing while a worker runs (the thread says when
it ended) and reads the domain on both hosts once at the end.  abort = abortJob(); force_complete =
pause the guest (memory and disk stop changing, so the migration converges) and resume it on the
destination.

A host that dies under the drain: its reads give up after retry_budget once (later ones try once), every
move that ended is still settled from what the other host says, a move not started yet fails alone ("not
started: ... cannot be reached"), and each entry has `places` ({host: state or unknown}).  A failed move
that left everything as it was (the domain where and as it was, nothing left on the destination) does not
count as a change.  A live move whose destination went away while the source libvirtd still holds it is
aborted, then given up on (PEER_LOST_*): the drain ends in bounded time and says so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, ConnectionFailed, InvalidRequest, RequestFailed)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import checkpoints, evacuation, whereabouts
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import (
    HAS_LIBRARY, _interpret, _uuid_or_none, host_uuid)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import (
    LibvirtConnection, libvirt, redact_uri)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.migration import (
    DEFAULT_SHUTDOWN_TIMEOUT, UNLIMITED_BANDWIDTH, Job, Migrator)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.storage import StoragePlanner

CLOSE_WAIT = 60
# A source libvirtd whose peer-to-peer destination died fails the migration within a second or two.  One
# has been seen to hold on to it instead (its cancel waited on QEMU, until the domain was destroyed): then
# the job is aborted PEER_LOST_ABORT s after the destination went away, and PEER_LOST_GIVE_UP s after it
# the run stops waiting and settles the move from what the hosts say.
PEER_LOST_ABORT = 10.0
PEER_LOST_GIVE_UP = 40.0


is_uri = evacuation.is_uri


def validate_options(params):
    """Refuse what the libvirt backend cannot do, before connecting (module params as a dict)."""
    if params.get('mode', 'drain') == 'evacuate':
        return evacuation.validate_options(params)
    for name in ('shared_storage', 'backup_uri', 'backup_pool', 'backup_dir'):
        if params.get(name):
            raise InvalidRequest('%s applies to mode=evacuate only on libvirt (a drain finds out which disks are '
                                 'shared itself).' % name)
    if not params.get('target_host'):
        raise InvalidRequest('target_host is required on libvirt (there is no scheduler to pick one): the '
                             'libvirt URI of the destination host as this controller reaches it, for example '
                             'qemu+ssh://root@host2/system; set migration_uri too if host1 reaches host2 by '
                             'another URI.')
    if not is_uri(params['target_host']):
        raise InvalidRequest("target_host must be a libvirt URI on libvirt (e.g. qemu+tcp://host2/system), "
                             "got '%s'." % redact_uri(params['target_host']))
    migration_uri = params.get('migration_uri')
    if migration_uri is not None and not is_uri(migration_uri):
        raise InvalidRequest("migration_uri must be a libvirt URI (e.g. qemu+tcp://10.0.0.2/system), got '%s'."
                             % redact_uri(migration_uri))
    if params.get('migration_bandwidth') is not None and params['migration_bandwidth'] < 1:
        raise InvalidRequest('migration_bandwidth is in MiB/s and must be at least 1, got %s.'
                             % params['migration_bandwidth'])
    if params.get('fenced') or params.get('force_down'):
        raise InvalidRequest('fenced and force_down apply to mode=evacuate on OpenStack only.')
    source = params.get('libvirt_uri') or (params.get('host') if is_uri(params.get('host')) else None)
    if source is None:
        raise InvalidRequest('On libvirt the source host is a libvirt URI: set libvirt_uri, or give host as a URI.')
    if source == params['target_host']:
        raise InvalidRequest('target_host is the URI of the host being emptied (%s).' % redact_uri(source))
    if migration_uri is not None and migration_uri == source:
        raise InvalidRequest('migration_uri is the URI of the host being emptied (%s): it must reach the '
                             'destination.' % redact_uri(source))
    return source


class LibvirtMoves(moves.MoveBackend):
    """MoveBackend for libvirt: drains `source_uri` into `target_uri`."""

    name = 'libvirt'
    default_window = 1

    def __init__(self, source_uri, target_uri, migration_uri=None, bandwidth=None, source_label=None,
                 target_label=None, shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT, opener=None, retry_budget=None,
                 deadline=None):
        self.source_uri = source_uri
        self.target_uri = target_uri
        self.migration_uri = migration_uri or target_uri
        self.bandwidth = bandwidth
        self.source_label = redact_uri(source_label or source_uri)
        self.target_label = redact_uri(target_label or target_uri)
        self.src = self.dst = None
        self.src = LibvirtConnection(source_uri, retry_budget, self.source_label, opener, role='source',
                                     deadline=deadline)
        try:
            self.dst = LibvirtConnection(target_uri, retry_budget, self.target_label, opener, role='target',
                                         counter=self.src.counter, deadline=deadline)
            self._check_distinct_hosts()
        except Exception:
            self.close()
            raise
        self.storage = StoragePlanner(self.src, self.dst)
        self.migrator = Migrator(self.src, self.dst, self.migration_uri, bandwidth, shutdown_timeout)

    # --- plumbing

    def request_count(self):
        return self.src.request_count() if self.src is not None else None

    def location(self):
        return '%s -> %s' % (redact_uri(self.source_uri), redact_uri(self.target_uri))

    def close(self):
        """Release the connections.  A move the core gave up on (still in flight at the end of the run) is
        left to libvirtd when it is a plain live migration (it goes on peer to peer; a rerun adopts it);
        one that needs us afterwards (a guest we paused, a suspended domain we restored, a cold move in
        this process) is aborted and its domain put back in the power state it started in."""
        migrator = getattr(self, 'migrator', None)      # None when the connections failed
        for job in migrator.jobs if migrator is not None else ():
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
                        dom.abortJob()
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
                conn.close()
        self.src = self.dst = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def _check_distinct_hosts(self):
        """Two URIs can name the same host; migrating a domain to its own host is refused up front."""
        uuids = [host_uuid(conn) for conn in (self.src, self.dst)]
        if uuids[0] and uuids[0] == uuids[1]:
            raise InvalidRequest('target_host %s is the same hypervisor as the source %s (host UUID %s).'
                                 % (self.target_label, self.source_label, uuids[0]))

    def source_hostname(self):
        return self.src.getHostname()

    def check_instances(self, names):
        """Refuse named instances that are on neither host (a typo must not be a silent no-op).  One already
        on the destination is fine: an earlier run moved it."""
        missing = [name for name in names or () if self._find(self.src, name) is None
                   and self._find(self.dst, name) is None]
        if missing:
            raise InvalidRequest('Nothing was moved: instances names %s, which %s on neither %s nor %s.'
                                 % (', '.join(missing), 'is' if len(missing) == 1 else 'are', self.source_label,
                                    self.target_label), not_found=missing)

    @staticmethod
    def _find(conn, identifier):
        """A domain by UUID or name, or None."""
        lookups = [(conn.lookupByName, identifier)]
        if _uuid_or_none(identifier):
            lookups.insert(0, (conn.lookupByUUIDString, _uuid_or_none(identifier)))
        for lookup, key in lookups:
            try:
                return lookup(key)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise BackendError('Looking up %s failed: %s' % (identifier, error.get_error_message()))
        return None

    def _lookup(self, conn, domain_id):
        try:
            return conn.lookupByUUIDString(domain_id)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise BackendError('Looking up domain %s failed: %s' % (domain_id, error.get_error_message()))

    def _lookup_dom(self, subject):
        dom = self._lookup(self.src, subject.id)
        if dom is None:
            raise BackendError('%s is no longer on %s' % (subject.name, self.source_label))
        return dom

    @staticmethod
    def _observe(dom):
        """(core state, task, fault) of a domain; ABSENT when it is gone."""
        try:
            code, reason = dom.state()
            saved = code == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage(0)
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
            records = self.src.getAllDomainStats(flags, 0)
        except libvirt.libvirtError as error:
            raise BackendError('Listing the domains of %s failed: %s' % (self.source_label, error.get_error_message()))
        for dom, stats in records:
            code, reason = stats.get('state.state'), stats.get('state.reason')
            saved = False
            details = {'libvirt_state': code, 'libvirt_reason': reason,
                       'memory_kib': stats.get('balloon.maximum') or stats.get('balloon.current')}
            try:
                if code == libvirt.VIR_DOMAIN_SHUTOFF:
                    saved = bool(dom.hasManagedSaveImage(0))
                elif code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_BLOCKED):
                    job = dom.jobStats(0)
                    if job.get('type', libvirt.VIR_DOMAIN_JOB_NONE) not in (
                            libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED,
                            libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED) \
                            and job.get('operation') == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                        details['move_in_flight'] = True
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue        # it left while we listed
                raise BackendError('Reading domain %s on %s failed: %s'
                                   % (dom.name(), self.source_label, error.get_error_message()))
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
            storage = self.storage.plan(self._lookup_dom(subject), request.block_migration, probe=False)
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

    # --- moves

    def start_move(self, subject, move, target_host, options):
        if target_host and target_host not in (self.target_uri, self.target_label):
            raise BackendError('target_host %s is not the destination this run connected to (%s)'
                               % (redact_uri(target_host), self.target_label))
        try:
            return self._start_move(subject, move, options)
        except (RequestFailed, ConnectionFailed) as error:
            # A host that went away: this move is not started (the others are still followed and settled).
            down = [label for label, conn in ((self.source_label, self.src), (self.target_label, self.dst))
                    if conn.unreachable]
            raise BackendError('not started: %s cannot be reached (%s)'
                               % (' and '.join(down) or 'a host', error.details.get('service_message') or error.msg),
                               unreachable=down, sent=error.details.get('sent') or 'no')

    def _start_move(self, subject, move, options):
        for conn in (self.src, self.dst):
            if conn.unreachable:
                conn.getLibVersion()        # one try: is it back?
        dom = self._lookup_dom(subject)
        state, task, _fault = self._observe(dom)
        if task:
            raise BackendError('%s is busy (%s)' % (subject.name, task))
        storage = self.storage.plan(dom, options.block_migration, probe=True)
        copy = [disk['path'] for disk in storage if disk['copy']]
        persistent = bool(dom.isPersistent())
        if move == moves.LIVE:
            if state not in (states.RUNNING, states.PAUSED, states.SUSPENDED):
                raise BackendError('%s is %s now; a live move needs it running, paused or suspended'
                                   % (subject.name, state))
            job = Job('live')
            data = dict(job=job, state_before=state, copy=copy, persistent=persistent, paused_by_us=False,
                        created=[])
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
            job = Job('cold')
            data = dict(job=job, state_before=state, copy=copy, persistent=True, created=[],
                        shutdown_timeout=min(self.migrator.shutdown_timeout, options.deadline))
        else:
            raise BackendError('move %s is not available on libvirt' % move)
        handle = moves.MoveHandle(subject, move, self.target_label, **data)
        self.migrator.start(handle, job)
        return handle

    def adopt(self, subject):
        job = Job('adopted')
        job.steps.append('followed a migration started earlier')
        handle = moves.MoveHandle(subject, moves.ADOPT, self.target_label, job=job, adopted=True,
                                  state_before=subject.state, copy=[], persistent=True, paused_by_us=False, created=[])
        # The run that started this migration is gone, and with it what it read of the checkpoints; the
        # source still holds their definitions while the migration runs (carried over in finish()).
        try:
            dom = self._lookup_dom(subject)
        except BackendError:
            dom = None
        handle.data['checkpoints'] = checkpoints.before_move(handle, dom) if dom is not None else []
        return handle

    def poll(self, handles):
        """Threads say when their move ended (no libvirt call while they run); an ended move costs one
        look-up and state read on each side.  An adopted move is followed with one job read.  Reads go
        through the kept connections: a libvirtd restart on either host is waited out (retry_budget), and
        a host that stays away is read as `unknown` (whereabouts.py): the poll itself never fails for it."""
        statuses = {}
        for handle in handles:
            job = handle.data['job']
            if handle.data.get('adopted'):
                status = self._poll_adopted(handle)
                if status is not None:
                    statuses[handle.id] = status
                continue
            if not job.ended:
                self._watch_destination(handle)
            if not job.ended:
                continue
            statuses[handle.id] = self._status_after(handle, job.error)
        return statuses

    def _watch_destination(self, handle):
        """A live move whose destination libvirtd went away (the worker's connection to it is dead) and that
        the source still holds: abortJob after PEER_LOST_ABORT s, and stop waiting after PEER_LOST_GIVE_UP s
        (the record then says that the source still holds the job).  The abort is sent from a thread of its
        own: a source stuck on its QEMU could block the call too."""
        job = handle.data['job']
        watch = job.watch
        if job.kind != 'live' or watch is None:
            return
        now = time.monotonic()
        if job.peer_lost_at is None:
            if not watch.alive():
                job.peer_lost_at = now
            return
        waited = now - job.peer_lost_at
        if waited >= PEER_LOST_ABORT and not job.abort_sent:
            job.abort_sent = True
            self._abort_in_background(handle)
        if waited >= PEER_LOST_GIVE_UP and not job.ended:
            job.abandon('the destination libvirtd (%s) went away during the move and the source libvirtd (%s) '
                        'still held the migration %d s later%s; the run stopped waiting for it'
                        % (self.target_label, self.source_label, waited,
                           ' despite abortJob' if job.abort_sent else ''), self.target_label)

    def _abort_in_background(self, handle):
        job = handle.data['job']

        def run():
            conn = None
            try:
                conn = self.src.spawn()
                conn.lookupByUUIDString(handle.id).abortJob()
                job.steps.append('abortJob (the destination libvirtd went away)')
            except (libvirt.libvirtError, BackendError, RequestFailed, ConnectionFailed) as error:
                job.steps.append('abortJob (the destination libvirtd went away) failed: %s' % (
                    error.get_error_message() if isinstance(error, libvirt.libvirtError) else error.msg))
            finally:
                if conn is not None:
                    conn.close()

        threading.Thread(target=run, name='vmops-abort-%s' % handle.subject.name, daemon=True).start()

    def _poll_adopted(self, handle):
        try:
            dom = self._lookup(self.src, handle.id)
            job = dom.jobStats(0) if dom is not None else {}
        except (libvirt.libvirtError, BackendError):
            job = {}            # ended, or the source cannot be read: the reads of both hosts say which
        active = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
        if job.get('type', libvirt.VIR_DOMAIN_JOB_NONE) in active:
            return None
        handle.data['job'].ended = True
        return self._status_after(handle, None, 'the migration started earlier ended without moving it')

    def _status_after(self, handle, error, still_there='the domain is still on the source'):
        """Where the domain is once its move ended, read on both hosts (whereabouts.py); a failed move's
        leftovers on the destination are removed, or reported when the destination cannot be read."""
        src = whereabouts.read_side(self.src, handle.id)
        dst = whereabouts.read_side(self.dst, handle.id)
        handle.data['places'] = whereabouts.places((self.source_label, self.target_label), (src, dst))
        status = whereabouts.settle(error, src, dst, self.source_label, self.target_label, still_there)
        notes = []
        if status.failed and not status.done and not handle.data.get('adopted'):
            notes = whereabouts.clean_destination(self.dst, handle, src, dst, self.target_label)
        if not notes and dst.where == whereabouts.UNKNOWN and status.host == self.source_label:
            notes = [whereabouts.unreachable(self.target_label, dst)]
        if notes:
            status = status._replace(message='%s; %s' % (status.message, '; '.join(notes)))
        return status

    def abort(self, handle):
        dom = self._lookup(self.src, handle.id)
        if dom is None:
            raise BackendError('%s already left the source' % handle.subject.name)
        try:
            dom.abortJob()
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
            code = dom.state()[0]
            if code != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()
                handle.data['paused_by_us'] = True
            if self.bandwidth:
                # A bandwidth cap would still hold the copy back: lift it for this migration.
                dom.migrateSetMaxSpeed(UNLIMITED_BANDWIDTH, 0)
        except libvirt.libvirtError as error:
            raise BackendError('pausing %s to complete its migration failed: %s'
                               % (handle.subject.name, error.get_error_message()))
        handle.data['job'].steps.append('paused to complete')

    def finish(self, handle, status):
        """Bring the domain back to the power state it started in, wherever it is now (not where that, or
        its state, is unknown).  A failed move that left everything as it was says so (changed False)."""
        if handle.data.get('adopted'):
            if status.done:
                checkpoints.after_move(handle, self.dst, handle.data['checkpoints'])
            return status._replace(message=_message(handle, status))
        wanted = handle.data['state_before']
        final = status
        dom = None
        if handle.data['job'].abandoned:
            # Its job still holds the domain: a resume or pause now would wait on that job, then fail.
            if status.host == self.source_label and status.state != states.UNKNOWN:
                final = status._replace(message='%s; it is %s there while the source libvirtd holds its migration '
                                        'job (virsh domjobinfo shows it): once that ends it is back as libvirt '
                                        'leaves it, which a rerun reads and moves' % (status.message, status.state))
        elif status.host is not None and status.state != states.UNKNOWN:
            where = self.dst if status.done else self.src
            try:
                dom = self._lookup(where, handle.id)
                if dom is not None:
                    final = status._replace(state=self._power_back(handle, dom, wanted))
            except (RequestFailed, ConnectionFailed) as error:
                final = status._replace(failed=True, state=states.UNKNOWN, message='%s; bringing it back to %s '
                                        'failed: %s cannot be reached (%s)' % (
                                            status.message or 'moved', wanted, status.host,
                                            error.details.get('service_message') or error.msg))
        if status.done:
            handle.data['stats'] = self._completed_stats(dom) if handle.move == moves.LIVE and dom else None
        if final.failed and not final.done:
            handle.data['changed'] = not self._left_as_it_was(handle, final)
        return final._replace(message=_message(handle, final))

    def _power_back(self, handle, dom, wanted):
        """Resume, pause or save the domain to get `wanted` again; returns its state after."""
        try:
            state, _task, _fault = self._observe(dom)
            if wanted == states.RUNNING and state == states.PAUSED:
                dom.resume()
                handle.data['job'].steps.append('resume')
            elif wanted == states.PAUSED and state == states.RUNNING:
                dom.suspend()
                handle.data['job'].steps.append('pause')
            elif wanted == states.SUSPENDED and state in (states.RUNNING, states.PAUSED):
                dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING)
                handle.data['job'].steps.append('managed save')
            return self._observe(dom)[0]
        except libvirt.libvirtError as error:
            raise BackendError('bringing %s back to %s failed: %s'
                               % (handle.subject.name, wanted, error.get_error_message()))

    def _left_as_it_was(self, handle, final):
        """A failed move changed nothing: the domain is on the source in its state, the guest was neither
        paused, restarted nor saved by the move, and nothing of it stays on the destination."""
        before = handle.data['state_before']
        if final.host != self.source_label or final.state != before or handle.data.get('left'):
            return False
        if handle.data.get('paused_by_us') or handle.data.get('shutdown_sent') or handle.data['job'].abandoned:
            return False
        if handle.data.get('created'):
            return False
        return (handle.move == moves.LIVE and before in (states.RUNNING, states.PAUSED)) or \
            (handle.move == moves.COLD and before == states.STOPPED)

    @staticmethod
    def _completed_stats(dom):
        try:
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        return dict((key, stats[key]) for key in ('time_elapsed', 'downtime', 'memory_processed', 'disk_processed',
                                                  'memory_iteration') if key in stats)

    def capacity(self, host, subjects):
        """Room on the destination: free memory against the domains that will run there, and for each
        destination pool whose volumes will be copied, available bytes against their capacity."""
        needed_kib = sum((s.details.get('memory_kib') or 0) for s in subjects
                         if s.state in (states.RUNNING, states.PAUSED, states.SUSPENDED))
        free = self.dst.getFreeMemory()
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


def open_backend(params):
    """The libvirt MoveBackend for host_evacuate's options (a dict); validate_options() first.  Named
    `instances` that are on neither host are refused here, before anything changes.  mode=evacuate gets the
    evacuation of a dead host (evacuation.py)."""
    if params.get('mode', 'drain') == 'evacuate':
        return evacuation.open_backend(params)
    source = validate_options(params)
    backend = LibvirtMoves(source, params['target_host'], migration_uri=params.get('migration_uri'),
                           bandwidth=params.get('migration_bandwidth'),
                           source_label=params.get('host') or source, target_label=params['target_host'],
                           retry_budget=params.get('retry_budget'),
                           deadline=Deadline(params['timeout']) if params.get('timeout') else None)
    try:
        host = params.get('host')
        if host and host != source:
            try:
                hostname = backend.source_hostname()
            except libvirt.libvirtError as error:
                raise BackendError('Reading the host name of %s failed: %s'
                                   % (backend.source_label, error.get_error_message()))
            if host not in (hostname, hostname.split('.')[0]):
                raise InvalidRequest("host '%s' is not the hypervisor at %s, which calls itself '%s'; nothing was "
                                     "touched." % (host, redact_uri(source), hostname), hostname=hostname)
        backend.check_instances(params.get('instances'))
    except Exception:
        backend.close()
        raise
    return backend


__all__ = ['LibvirtMoves', 'open_backend', 'validate_options', 'HAS_LIBRARY']
