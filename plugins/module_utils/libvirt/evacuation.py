# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evacuating a dead libvirt host: host_evacuate mode=evacuate on libvirt (a moves.MoveBackend).

libvirt keeps no record of a dead host's domains anywhere else, so the evacuation works from what
outlives the host: the backup store that instance_snapshot writes (backup_store.py), and shared storage.

  * The dead host (`libvirt_uri`, or `host` as a URI) is contacted once, by a probe bounded to
    PROBE_SECONDS: a host that answers is refused before anything changes (drain it instead).  The caller
    must say `fenced: true` (its guests are off); nothing here can check that.
  * The domains: those of the store whose newest complete manifest records the dead host (its URI, or its
    host name when `host` is a name), or those of `instances` (each must have one).  One already defined on
    the target is skipped (an earlier run brought it up).
  * Each is brought up on `target_host`: with `shared_storage` and every disk path of its definition present
    on the target, the definition is defined there as it is; otherwise its newest verified backup is written
    to the target through its storage API and defined (restore.py's relaunch).  A disk path already taken on
    the target without `shared_storage` fails that domain alone: the file may be another domain's disk.
  * While it runs, the dead host is probed again every DeadHostWatch.every seconds (the core's SourceWatch): one
    that answers stops the run before the next domain (SOURCE_ALIVE), since its guests may run there too.
  * Then the power state the manifest recorded (or `power_state`): running started, paused started paused,
    stopped left off; suspended comes back stopped (its saved memory stayed on the dead host), said so.
  * The core drives it like any other move (core/drain*.py), one domain at a time: the same plan, check
    mode, record (each entry's `disk`, `data_as_of` and `steps`), totals and diff as an OpenStack evacuation.
    Nothing is ever deleted from the store.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
import xml.etree.ElementTree as ET

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import SOURCE_ALIVE, SourceWatch
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import LibvirtBackend
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backup_store import (
    COMPLETE, DOMAIN_XML, chain_point, open_store)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt, redact_uri
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.restore import LibvirtRestorer, _lock_consoles

# How long the dead host may take to answer the one probe (a powered-off host behind TCP never answers).
PROBE_SECONDS = 10.0
WATCH_PROBE_SECONDS = 3.0   # each probe of the watch, during the run
SHARED = 'shared'


def is_uri(text):
    return bool(text) and '://' in text


def validate_options(params):
    """Refuse what a libvirt evacuation cannot do, before connecting (module params as a dict); returns the
    dead host's URI."""
    if not params.get('fenced'):
        raise InvalidRequest('mode=evacuate on libvirt needs fenced=true: the domains are defined and started on '
                             'target_host from their backups, so the dead host must never run them again. Make sure '
                             'it is off (powered off or isolated), then say so. Nothing was changed.')
    if params.get('force_down'):
        raise InvalidRequest('force_down applies to OpenStack only: a libvirt host has no compute service to force '
                             'down.')
    for name in ('migration_uri', 'migration_bandwidth', 'reserved_host', 'destinations'):
        if params.get(name):
            raise InvalidRequest('%s does not apply to mode=evacuate on libvirt (nothing migrates off a dead host).'
                                 % name)
    target = params.get('target_host')
    if not target or not is_uri(target):
        raise InvalidRequest('target_host is required on libvirt and must be a libvirt URI: the host the domains '
                             'come up on, for example qemu+ssh://root@host2/system.')
    dead = params.get('libvirt_uri') or (params.get('host') if is_uri(params.get('host')) else None)
    if dead is None:
        raise InvalidRequest('On libvirt the dead host is named by its URI: set libvirt_uri, or give host as a URI.')
    if dead == target:
        raise InvalidRequest('target_host is the URI of the dead host (%s).' % redact_uri(dead))
    return dead


def probe(uri, seconds=PROBE_SECONDS, opener=None):
    """(answered, what happened): one read-only connection attempt to `uri`, bounded to `seconds` (the
    attempt runs in a thread of its own, left behind when it hangs)."""
    outcome = {}

    def attempt():
        try:
            conn = (opener or libvirt.openReadOnly)(uri)
            try:
                outcome['hostname'] = conn.getHostname()
            finally:
                conn.close()
        except libvirt.libvirtError as error:
            outcome['error'] = error.get_error_message()

    thread = threading.Thread(target=attempt, name='vmops-probe', daemon=True)
    thread.start()
    thread.join(seconds)
    if 'hostname' in outcome:
        return True, 'host name %s' % outcome['hostname']
    return False, outcome.get('error') or 'no answer within %s s' % seconds


class DeadHostWatch(SourceWatch):
    """The SourceWatch of a libvirt evacuation: the dead host must stay dead (a probe that gets an answer)."""

    every = 5.0

    def __init__(self, uri, label, prober=probe, clock=time.time):
        self.uri, self.label, self.prober, self.clock = uri, label, prober, clock

    def check(self):
        seen_at = self.clock()
        answered, said = self.prober(self.uri, WATCH_PROBE_SECONDS)
        if not answered:
            return None
        return (SOURCE_ALIVE, '%s answers again (%s): its domains may run there as well as on the target. Fence '
                'it (power it off or isolate it), then look at each domain brought up so far; nothing more is started, '
                'and a rerun skips what is already on the target' % (self.label, said), seen_at)


class _Relaunch(object):
    """What restore.py's relaunch reads of a request: the evacuation starts each domain itself."""
    power_state = 'stopped'
    force = False


class LibvirtEvacuation(moves.MoveBackend):
    """MoveBackend bringing the domains of a dead host up on `target` (a LibvirtBackend) from `store`."""

    name = 'libvirt'
    default_window = 1

    def __init__(self, target, store, dead_uri, dead_label=None, shared_storage=False, timeout=None, restorer=None,
                 prober=probe):
        self.prober = prober
        self.target = target
        self.store = store
        self.restorer = restorer or LibvirtRestorer(target, store=store)
        self.dead_uri = dead_uri
        self.dead_label = redact_uri(dead_label or dead_uri)
        self.target_label = target.location()
        self.shared_storage = shared_storage
        self.timeout = timeout
        self._subjects = None

    def close(self):
        try:
            self.store.close()
        finally:
            self.target.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def request_count(self):
        return self.target.request_count()

    def location(self):
        return '%s -> %s' % (redact_uri(self.dead_uri), self.target_label)

    # --- what the store holds

    def _newest(self, domain):
        """(path, manifest) of the domain's newest complete backup, or None."""
        newest = None
        for backup in self.store.backups(domain):
            manifest, state = self.store.manifest(domain, backup)
            if state != COMPLETE or chain_point(manifest):
                continue          # a chain's point is not a standalone copy (instance_backup restores those)
            if newest is None or (manifest.get('created_at') or '') > (newest[1].get('created_at') or ''):
                newest = (self.store.path(domain, backup), manifest)
        return newest

    def _recorded_on_dead_host(self, manifest, host):
        recorded = manifest.get('host') or {}
        if recorded.get('uri') and recorded['uri'] == redact_uri(self.dead_uri):
            return True
        name = recorded.get('hostname')
        return bool(name) and not is_uri(host) and host in (name, name.split('.')[0])

    def list_on_host(self, host):
        """The store's domains whose newest complete backup was taken on the dead host, each as it was recorded
        there (state = the power state the manifest recorded)."""
        if self._subjects is not None:
            return self._subjects
        subjects = []
        for domain in self.store.domains():
            found = self._newest(domain)
            if found is None or not self._recorded_on_dead_host(found[1], host):
                continue
            subjects.append(self._subject(domain, *found))
        self._subjects = sorted(subjects, key=lambda subject: subject.name)
        return self._subjects

    def _subject(self, domain, path, manifest):
        record = self.restorer.snapshots.record_from_manifest(path, manifest)
        recorded = manifest.get('power_state') or states.STOPPED
        details = {'record': record, 'state_before': recorded, 'data_as_of': manifest.get('created_at'),
                   'memory_mib': ((manifest.get('recorded') or {}).get('flavor') or {}).get('memory_mib')}
        existing = self.target.find(manifest.get('domain_uuid') or domain)
        if existing is not None:
            details['already_on_target'] = self.target.observe(existing).state
            details['now_on'] = (self.target_label, details['already_on_target'])
        disks = [disk['source'] for disk in manifest.get('disks', [])]
        present = [path_ for path_ in disks if self._exists_on_target(path_)]
        if self.shared_storage and disks and len(present) == len(disks):
            details['disk_fate'] = SHARED
        else:
            details['disk_fate'] = 'restored from %s taken %s' % (manifest.get('name'), manifest.get('created_at'))
            if present and existing is None:
                details['disk_taken'] = present
        return moves.MoveSubject(manifest.get('domain_uuid') or domain, manifest.get('domain_name') or domain,
                                 recorded, None, self.dead_label, False, details)

    def _exists_on_target(self, path):
        directory, name = path.rsplit('/', 1)
        pool = self.restorer.files.pool(directory)
        return pool is not None and name in self.restorer.files.listing(pool)

    def check_instances(self, names, host):
        """Every named domain must have a complete backup taken on the dead host (a typo is not a no-op)."""
        subjects = self.list_on_host(host)
        known = set()
        for subject in subjects:
            known.update((subject.id, subject.name))
        missing = [name for name in names or () if name not in known]
        if missing:
            where = self.store.location()
            raise InvalidRequest(
                'Nothing was changed: instances names %s, with no complete backup taken on %s in the store %s on %s '
                '(domains it holds from that host: %s). Back domains up with vmops.lifecycle.instance_snapshot '
                '(backup_uri on another host) so that they outlive their host.'
                % (', '.join(missing), self.dead_label, where['root'], where['host'] or where['uri'],
                   ', '.join(subject.name for subject in subjects) or 'none'), not_found=missing)

    def locate(self, ref):
        return None

    def source_watch(self, request):
        return DeadHostWatch(self.dead_uri, self.dead_label, self.prober)

    # --- the plan

    def plan_move(self, subject, request):
        decision = moves.policy_decision(subject, request)
        if decision.move == moves.NONE:
            return decision
        if 'already_on_target' in subject.details:
            return moves.Decision(moves.SKIP, 'already defined on %s (%s): an earlier run brought it up'
                                  % (self.target_label, subject.details['already_on_target']))
        if subject.details.get('disk_taken'):
            return moves.Decision(moves.UNMOVABLE, '%s already exist(s) on %s, and shared_storage is false: it may be '
                                  'another domain\'s disk, so it is not overwritten. Set shared_storage=true if the '
                                  'hosts share that storage, or move the file away and run again'
                                  % (', '.join(subject.details['disk_taken']), self.target_label))
        wanted = self._wanted(subject.state, request)
        texts = ['disks shared: defined as it is' if subject.details['disk_fate'] == SHARED else
                 '%s (data as of %s)' % (subject.details['disk_fate'], subject.details['data_as_of'])]
        texts.append({states.RUNNING: 'started', states.PAUSED: 'started paused',
                      states.STOPPED: 'left stopped'}[wanted])
        if subject.state == states.SUSPENDED and wanted == states.STOPPED:
            texts.append('suspended comes back stopped: its saved memory stayed on the dead host')
        return moves.Decision(moves.EVACUATE, None, '; '.join(texts))

    @staticmethod
    def _wanted(recorded, request):
        if request.power_state == 'running':
            return states.RUNNING
        if request.power_state == 'stopped' or recorded not in (states.RUNNING, states.PAUSED):
            return states.STOPPED
        return recorded

    def capacity(self, host, subjects):
        """Free memory on the target against the memory of the domains that will run there."""
        needed = sum(subject.details.get('memory_mib') or 0 for subject in subjects
                     if subject.state in (states.RUNNING, states.PAUSED))
        free = self.target.conn.getFreeMemory() // (1024 * 1024)
        return [{'host': self.target_label, 'free': {'memory_mib': free}, 'needed': {'memory_mib': needed},
                 'fits': needed <= free}]

    # --- the moves

    def start_move(self, subject, move, target_host, options):
        """Bring one domain up on the target, start to end (the core then reads the status with poll)."""
        if target_host and target_host not in (self.target.uri, self.target_label):
            raise BackendError('target_host %s is not the host this run connected to (%s)'
                               % (redact_uri(target_host), self.target_label))
        started, started_wall = time.monotonic(), time.time()
        steps, created = [], []
        deadline = Deadline(min(options.deadline, self.timeout or options.deadline))
        record = subject.details['record']
        data = {'first_started': started, 'first_started_wall': started_wall,
                'report': {'data_as_of': subject.details['data_as_of'], 'steps': steps}}
        dom = None
        try:
            if subject.details['disk_fate'] == SHARED:
                dom = self._define_shared(record, steps)
            else:
                dom = self._relaunch(subject, record, steps, created, deadline)
            state = self._power(subject, dom, self._wanted(subject.state, options), steps, deadline)
            message = ', '.join(steps)
            if subject.state == states.SUSPENDED and state == states.STOPPED:
                message += '; it was suspended: its saved memory stayed on the dead host, so it is stopped'
            data['status'] = moves.MoveStatus(True, False, message, self.target_label, state)
        except (VmopsError, libvirt.libvirtError) as error:
            text = error.msg if isinstance(error, VmopsError) else (error.get_error_message() or str(error))
            state = self.target.observe(dom).state if dom is not None else states.ABSENT
            if dom is None:     # not defined: the disks it wrote go, and then nothing was changed
                removed = self._remove(created)
                steps.extend(removed)
                data['changed'] = any(not step.startswith('removed') for step in removed)
            data['status'] = moves.MoveStatus(False, True, '%s%s' % (
                text, ' (done before it failed: %s)' % ', '.join(steps) if steps else ''),
                self.target_label if dom is not None else None, state)
        return moves.MoveHandle(subject, move, self.target_label, **data)

    def _define_shared(self, record, steps):
        raw = self.store.read_at(record['path'], DOMAIN_XML)
        if not raw:
            raise BackendError('backup %s has no %s to define the domain from' % (record['path'], DOMAIN_XML))
        tree = ET.fromstring(raw.decode('utf-8'))
        locked = _lock_consoles(tree, record.get('secrets_removed') or [])
        dom = self.target.conn.defineXML(ET.tostring(tree, encoding='unicode'))
        steps.append('defined from %s on its shared disks' % record['name'])
        steps.extend('new %s password' % kind for kind in locked)
        return dom

    def _relaunch(self, subject, record, steps, created, deadline):
        plan = self.restorer.plan_relaunch(record, _Relaunch())
        created.extend(copy['path'] for copy in plan['copies'])
        self.restorer.relaunch(record, plan, _Relaunch(), deadline)
        steps.append('disks %s written from backup %s' % (', '.join(copy['target'] for copy in plan['copies']),
                                                          record['name']))
        dom = self.target.find(subject.id)
        if dom is None:
            raise BackendError('%s was defined on %s but cannot be found there' % (subject.name, self.target_label))
        steps.append('defined')
        return dom

    def _remove(self, paths):
        """The disks a failed relaunch wrote before the domain was defined (nothing else refers to them)."""
        said = []
        for path in paths:
            try:
                self.target.conn.storageVolLookupByPath(path).delete(0)
                said.append('removed %s' % path)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    said.append('could not remove %s: %s' % (path, error.get_error_message()))
        return said

    def _power(self, subject, dom, wanted, steps, deadline):
        """Start the domain as `wanted` says; returns its state once it got there."""
        if wanted == states.STOPPED:
            return self.target.observe(dom).state
        if wanted == states.PAUSED:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            steps.append('started paused')
        else:
            dom.create()
            steps.append('started')
        observation = wait_until(
            lambda: self.target.observe(dom), lambda o: o.state == wanted and not o.task, describe,
            'domain %s to be %s on %s' % (subject.name, wanted, self.target_label), deadline,
            failure=lambda o: ('%s is %s' % (subject.name, describe(o))) if o.state == states.ERROR else None)
        return observation.state

    def poll(self, handles):
        return dict((handle.id, handle.data['status']) for handle in handles)

    def abort(self, handle):
        raise BackendError('an evacuation from a backup cannot be aborted')

    def force_complete(self, handle):
        raise BackendError('an evacuation from a backup cannot be forced')


def open_backend(params, prober=probe):
    """The evacuation for host_evacuate's options (a dict): the dead host probed (one that answers is refused),
    the target and the store opened, named instances checked; nothing changed before all of that passed."""
    dead = validate_options(params)
    answered, said = prober(dead)
    if answered:
        raise InvalidRequest('Refusing to evacuate %s: its libvirtd answers (%s). Evacuate only a dead host; empty a '
                             'live one with mode=drain. Nothing was changed.' % (redact_uri(dead), said))
    target = LibvirtBackend(params['target_host'], retry_budget=params.get('retry_budget'))
    try:
        if params.get('timeout'):
            target.bound_by(Deadline(params['timeout']))
        store = open_store(target, params.get('backup_uri'), params.get('backup_pool'), params.get('backup_dir'))
    except Exception:
        target.close()
        raise
    backend = LibvirtEvacuation(target, store, dead, params.get('host') if not is_uri(params.get('host')) else dead,
                                bool(params.get('shared_storage')), params.get('timeout'), prober=prober)
    try:
        backend.check_instances(params.get('instances'), params['host'])
    except Exception:
        backend.close()
        raise
    return backend


__all__ = ['LibvirtEvacuation', 'open_backend', 'probe', 'validate_options']
