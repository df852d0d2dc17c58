# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A drain's migrations on libvirt: one worker thread per move in flight.

Each migration blocks in libvirt, so each move runs in its own thread, on its own connections
(spawned from the run's kept connections: same retry budget, same call counter).  The thread
records what it did in its Job and says when it ended; the main thread polls nothing while it runs.

  live  migrateToURI3(migration_uri, params, LIVE | PEER2PEER [| PERSIST_DEST | UNDEFINE_SOURCE]
        [| NON_SHARED_DISK]); a suspended domain is first restored paused (its saved memory is a file
        of the source host), and saved again on the destination by the MoveBackend's finish().  The
        disks it copies get fresh sparse volumes on the destination first (storage.fresh_target_volume).
  cold  a running guest is shut down gracefully (never forced off), its disks are copied when not
        shared (storage.copy_volume), its definition moves (OFFLINE migration) and it is started on
        the destination.  When the copy or the offline migration fails, it is started again on the
        source.

A migration is never sent twice: when a connection drops under it, the worker reports what it knows
and names the host whose libvirtd went away (the source, when the worker's own connection died; the
destination, when its watch connection did, or when the source libvirtd says it lost its peer).  The
MoveBackend then reads where the domain is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, RequestFailed, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import checkpoints, power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import act, libvirt
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.storage import copy_volume, fresh_target_volume

DEFAULT_SHUTDOWN_TIMEOUT = 120
UNLIMITED_BANDWIDTH = (2 ** 63 - 1) // (1024 * 1024)    # MiB/s: libvirt's own "no limit"
# How long a worker gives the event loop to notice that a connection's socket closed.
DROP_GRACE = 1.0


class Job(object):
    """What a worker thread shares with the main thread for one move."""

    def __init__(self, kind):
        self.kind = kind
        self.handle = None
        self.thread = None
        self.ended = False
        self.error = None          # message when the move failed
        self.error_code = None
        self.failed_host = None    # label of the host whose libvirtd dropped the connection, if one did
        self.steps = []            # what the worker did, in order (for the report)
        self.cancelled = False     # set at the end of the run: a cold worker stops at its next step and undoes it
        self.watch = None          # the worker's connection to the destination while it runs: dead once that libvirtd is
        self.peer_lost_at = None   # when the main thread first found `watch` dead
        self.abort_sent = False
        self.abandoned = False     # the run stopped waiting for a source libvirtd that held on to the move

    def abandon(self, error, failed_host):
        """End the move for the main thread although the worker is still blocked in libvirt (it may return
        later; nothing it writes then is read)."""
        self.error, self.failed_host = error, failed_host
        self.abandoned = True
        self.ended = True

    def check_cancel(self):
        if self.cancelled:
            raise BackendError('given up at the end of the run')


class Migrator(object):
    """Starts and runs the migration workers of one drain (src, dst: the run's kept connections)."""

    def __init__(self, src, dst, migration_uri, bandwidth=None, shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT):
        self.src, self.dst = src, dst
        self.migration_uri = migration_uri
        self.bandwidth = bandwidth
        self.shutdown_timeout = shutdown_timeout
        self.jobs = []

    def start(self, handle, job):
        """Run the move of `handle` (its data holds `job`) in a thread of its own."""
        worker = {'live': self._live, 'cold': self._cold}[job.kind]
        job.handle = handle
        job.thread = threading.Thread(target=self._run, args=(worker, handle), name='vmops-move-%s' % handle.subject.name)
        job.thread.daemon = True
        self.jobs.append(job)
        job.thread.start()

    def params(self):
        params = {}
        if self.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(self.bandwidth)
        return params

    @staticmethod
    def live_flags(handle):
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        if handle.data['persistent']:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if handle.data['copy']:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        return flags

    # --- the thread

    def _run(self, worker, handle):
        job = handle.data['job']
        conns = {}
        try:
            # The destination's connection is opened first: if its libvirtd goes away during the move,
            # this connection is dead afterwards even if the daemon is back, which names the host.
            conns['destination'] = self.dst.spawn()
            job.watch = conns['destination']
            conns['source'] = self.src.spawn()
            worker(handle, conns['source'], conns['destination'])
        except RequestFailed as error:
            job.error, job.error_code = error.msg, error.details.get('libvirt_error_code')
            self._name_dropped(job, conns, error.details.get('service_message') or error.msg)
        except libvirt.libvirtError as error:
            job.error, job.error_code = error.get_error_message(), error.get_error_code()
            self._name_dropped(job, conns, job.error)
        except VmopsError as error:
            job.error = error.msg
        except Exception as error:  # pylint: disable=broad-except
            job.error = 'unexpected error: %r' % (error,)
        finally:
            job.watch = None
            for conn in conns.values():
                conn.close()
            job.ended = True

    def _name_dropped(self, job, conns, message):
        """Say whose libvirtd went away when the move failed on a connection: the source when the
        worker's own connection died, the destination when its watch connection did.  (A source
        libvirtd that lost its peer-to-peer connection to the destination answers with the same
        error codes over a connection that is alive: only the watch tells.)"""
        labels = {'source': self.src.label, 'destination': self.dst.label}
        limit = time.monotonic() + DROP_GRACE
        while True:
            dropped = [role for role in ('source', 'destination')
                       if role in conns and (conns[role].drops or not conns[role].alive())]
            if dropped or time.monotonic() >= limit or job.error_code not in _CONNECTION_ERRORS:
                break
            time.sleep(0.05)
        if not dropped:
            return
        role = dropped[0]
        job.failed_host = labels[role]
        job.error = ('the connection to the %s libvirtd (%s) dropped during the move (was libvirtd restarted?): %s'
                     % (role, labels[role], message))

    def _live(self, handle, src, dst):
        job = handle.data['job']
        dom = src.lookupByUUIDString(handle.id)
        if handle.data['state_before'] == states.SUSPENDED:
            # The saved memory image is a file of the source host: bring it back in memory (paused, the
            # guest does not run), move it live, and save it again on the destination (finish()).
            act(dom, 'createWithFlags', (libvirt.VIR_DOMAIN_START_PAUSED,), verify=dom.isActive)
            job.steps.append('restore paused')
        for path in handle.data['copy']:
            # A sparse volume of our own: libvirt's pre-creation would preallocate the whole disk.
            fresh_target_volume(src, dst, path, job.steps, handle.data['created'])
        captured = checkpoints.before_move(handle, dom)
        job.steps.append('migrate live%s' % (' with storage' if handle.data['copy'] else ''))
        handle.data['incoming_sent'] = True     # from here the destination may hold an incoming copy
        act(dom, 'migrateToURI3', (self.migration_uri, self.params(), self.live_flags(handle)))
        checkpoints.after_move(handle, dst, captured)

    def _cold(self, handle, src, dst):
        job = handle.data['job']
        dom = src.lookupByUUIDString(handle.id)
        was_running = handle.data['state_before'] == states.RUNNING
        captured = checkpoints.before_move(handle, dom)
        try:
            if was_running:
                self._shut_down(dom, handle)
            for path in handle.data['copy']:
                job.check_cancel()
                handle.data['bytes_copied'] = handle.data.get('bytes_copied', 0) + copy_volume(
                    src, dst, path, job.steps, job.check_cancel, handle.data['created'])
            job.check_cancel()
            job.steps.append('migrate offline')
            act(dom, 'migrateToURI3', (self.migration_uri, {}, libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PEER2PEER
                                       | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE))
        except Exception:
            if was_running:
                self.restart_on_source(dom, handle)
            raise
        if was_running:
            power.start(dst.lookupByUUIDString(handle.id))
            job.steps.append('start on the destination')
        checkpoints.after_move(handle, dst, captured)

    def _shut_down(self, dom, handle):
        """Ask the guest to power off (ACPI or agent) and wait; never force it."""
        job = handle.data['job']
        job.steps.append('shutdown')
        power.power_off(dom, handle.data.get('shutdown_timeout', self.shutdown_timeout), False, 'a cold move',
                        check=job.check_cancel, on_sent=lambda: handle.data.update(shutdown_sent=True))
        handle.data['shut_down'] = True

    def restart_on_source(self, dom, handle):
        """Put a domain the cold move shut down back as it was: running on the source (a new boot, which the
        report says).  A shutdown request cannot be taken back: a guest still on its way down is given
        the same time again to get there, then started."""
        job = handle.data['job']
        if not handle.data.get('shutdown_sent'):
            return
        try:
            if power.wait_off(dom, handle.data.get('shutdown_timeout', self.shutdown_timeout)):
                power.start(dom)
                job.steps.append('started again on the source')
            else:
                job.steps.append('still running on the source; the shutdown request may still power it off')
        except (libvirt.libvirtError, BackendError) as error:
            job.steps.append('starting it again on the source failed: %s'
                             % (error.get_error_message() if isinstance(error, libvirt.libvirtError) else error.msg))


_CONNECTION_ERRORS = ()
if libvirt is not None:
    _CONNECTION_ERRORS = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_RPC,
                          libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN)
