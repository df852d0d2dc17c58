# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenStack side of host_evacuate: Nova's migrations (services: services.py; room: placement.py).

Every compute request goes out at MOVES_MICROVERSION (2.84), chosen because:
  2.53  services are addressed by UUID (PUT /os-services/{id} with status / forced_down);
  2.56  a cold migration may name a target host;
  2.59  the migrations list takes changes-since and shows UUIDs;
  2.68  live migration and evacuation lost `force`: a named target host is always checked by the
        scheduler (a disabled or full target is refused instead of being overloaded);
  2.73  lock with a reason (evacuations lock each server while it moves);
  2.84  instance action events carry `details` (the reason a migration failed).
  Up to 2.93 (Zed's maximum) evacuation keeps each server's power state (2.95 would stop them all).

Progress comes from shared reads, never one per server.  Each cycle reads the migration records off
the host (GET /os-migrations?source_compute=H&changes-since=T0: light, no server views): a live move
whose record says completed, a confirm whose record says confirmed, has ended (Nova closes the record
after settling the server, and frees the compute's migration slot only then).  When some move needs
more (a resume / suspend / rescue step, a cold move waiting for VERIFY_RESIZE, an evacuation, a record
that ended badly), the cycle also reads GET /servers/detail?all_tenants=1&changes-since=T: every
server touched since T with its host, status and task_state.  Nova sets task_state synchronously when
it accepts a move, so "task_state back to none" with another host means moved, with the same host
means the move ended without moving.  T follows the oldest of those moves (in the cloud's clock, from
the API's Date header, less a margin): Nova bumps a server's `updated` on every change, so each server
still moving was touched after its own move began and is always listed, while the list stays as short
as the window instead of growing with every server touched in the run.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time
import uuid

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, InvalidRequest, RequestFailed, ResourceNotFound)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import evacuation, placement
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.heartbeat import ServiceHeartbeat, service_reader
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.migrations import (
    ASK_THE_SERVER, MIGRATION_IN_PROGRESS, MigrationRecords, epoch, iso)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import (
    OpenStackBackend, _looks_like_uuid, action_took_effect, observation_from_server)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.services import ComputeServices, admin_hint

MOVES_MICROVERSION = '2.84'
# Locks this collection takes: '<LOCK_PREFIX><host>:<run id>'.  A rerun on the same host releases such
# locks left by a run that died; a lock with any other reason is never touched.
LOCK_PREFIX = 'vmops.lifecycle:host_evacuate:'

# task_state values that mean a move of the server is in flight (a rerun adopts them).
MOVE_TASKS = ('migrating', 'resize_prep', 'resize_migrating', 'resize_migrated', 'resize_finish',
              'rebuilding', 'rebuild_spawning', 'rebuild_block_device_mapping', 'shelving_offloading')

# Nova cold-migrates only ACTIVE and STOPPED servers and live-migrates ACTIVE and PAUSED ones.  It
# evacuates ACTIVE, STOPPED and ERROR ones with no task; any other is reset to ERROR first (evacuation.py).
LIVE_STATES = (states.RUNNING, states.PAUSED)
COLD_STATES = (states.RUNNING, states.STOPPED)
EVACUATE_STATES = evacuation.EVACUABLE
# States an evacuation brings over with a reset (or, for a pending resize, a confirm) first.
RESET_STATES = (states.PAUSED, states.SUSPENDED, states.RESCUED, states.RESIZE_PENDING)

ACTIONS = {
    'resume': {'resume': None}, 'suspend': {'suspend': None},
    'unrescue': {'unrescue': None}, 'rescue': {'rescue': {}},
    'pause': {'pause': None}, 'unpause': {'unpause': None},
    'start': {'os-start': None}, 'stop': {'os-stop': None},
    'confirm': {'confirmResize': None}, 'offload': {'shelveOffload': None}, 'unlock': {'unlock': None},
    evacuation.RESET: {'os-resetState': {'state': 'error'}},
    evacuation.RESET_BACK: {'os-resetState': {'state': 'active'}},
}
# The status each settling verb leads to.
LANDS_IN = {'resume': 'ACTIVE', 'unrescue': 'ACTIVE', 'suspend': 'SUSPENDED', 'rescue': 'RESCUE',
            'pause': 'PAUSED', 'unpause': 'ACTIVE', 'start': 'ACTIVE', 'stop': 'SHUTOFF'}
STATE_STATUS = {states.RUNNING: 'ACTIVE', states.STOPPED: 'SHUTOFF', states.PAUSED: 'PAUSED',
                states.SUSPENDED: 'SUSPENDED', states.RESCUED: 'RESCUE'}


class OpenStackMoves(moves.MoveBackend):
    """MoveBackend and service control over one OpenStackBackend connection."""

    name = 'openstack'
    # Nova's max_concurrent_live_migrations (per source compute) defaults to 1 and is often raised;
    # more in flight than that only queue in the compute.  2 keeps the window busy while one finishes.
    default_window = 2

    def __init__(self, params, backend=None):
        self.backend = backend or OpenStackBackend(params)
        self.services = ComputeServices(self.backend)
        self.run_id = run_id()
        self.records = MigrationRecords(self._call)
        # Whether the computes share instance storage (the caller says so: the API does not show it).
        self.shared_storage = bool(params.get('shared_storage'))
        self.first_seen = {}    # host -> its service as first read in this run (before the run changed it)

    # plumbing ----------------------------------------------------------------------------------

    def close(self):
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.backend.request_count()

    def bound_by(self, deadline):
        self.backend.bound_by(deadline)

    def _call(self, method, path, **kwargs):
        """A compute request at MOVES_MICROVERSION through the backend's request layer."""
        try:
            return self.backend.nova(method, path, microversion=MOVES_MICROVERSION, **kwargs)
        except RequestFailed as error:
            raise admin_hint(error)

    def _action(self, server_id, verb, body, name=None, before=None):
        """A server action; an ambiguous failure is settled by reading the server (never sent twice)."""
        before = before or {}

        def took_effect():
            after = self._server(server_id)
            return after is not None and action_took_effect(verb, before, after)
        try:
            self.backend.server_action(server_id, verb, body, name=name, microversion=MOVES_MICROVERSION,
                                       verify=took_effect)
        except RequestFailed as error:
            raise admin_hint(error)

    # services ----------------------------------------------------------------------------------

    def compute_services(self, binary='nova-compute', refresh=False):
        return self.services.all(binary, refresh)

    def find_service(self, host, binary='nova-compute'):
        return self.services.find(host, binary)

    def get_service(self, host):
        service = self.services.get(host)
        self.first_seen.setdefault(host, service)
        return service

    def update_service(self, service, disabled=None, reason=None, forced_down=None):
        return self.services.update(service, disabled=disabled, reason=reason, forced_down=forced_down)

    def set_service(self, host, disabled=None, reason=None, forced_down=None):
        return self.update_service(self.get_service(host), disabled=disabled, reason=reason,
                                   forced_down=forced_down)

    # targets -----------------------------------------------------------------------------------

    def locate(self, ref):
        body = self._server(ref) if _looks_like_uuid(ref) else None
        if body is None:
            found = self._call('GET', '/servers/detail', params={'all_tenants': 1, 'name': '^%s$' % re.escape(ref)}
                               ).json()['servers']
            found = [server for server in found if server.get('name') == ref]
            body = found[0] if found else None
        return None if body is None else {'host': body.get('OS-EXT-SRV-ATTR:host')}

    def check_targets(self, request):
        """target_host and every host named in destinations must be a known, enabled, up compute; reserved_host
        a known, up one (it may be, and normally is, disabled).  Refused before anything changes."""
        wanted = [('target_host', request.target_host, 'target_host'), ('reserved_host', request.reserved_host,
                                                                        'reserved_host')]
        by_host = {}
        for ref, name in sorted((request.destinations or {}).items()):
            by_host.setdefault(name, []).append(ref)
        wanted.extend(('destinations (%s)' % ', '.join(refs), name, 'that destination')
                      for name, refs in sorted(by_host.items()))
        for option, name, remedy in wanted:
            if name is None:
                continue
            services = self.compute_services()
            found = [s for s in services if s['host'] == name]
            if not found:
                raise InvalidRequest('Nothing was changed: %s %s is not a compute host of %s (known: %s).'
                                     % (option, name, self.location(), ', '.join(sorted(s['host'] for s in services))))
            service = found[0]
            trouble = []
            if service['state'] != 'up' or service.get('forced_down'):
                trouble.append('its nova-compute service is %s' % ('forced down' if service.get('forced_down')
                                                                   else service['state']))
            if option != 'reserved_host' and service['status'] != 'enabled':
                trouble.append('it is disabled (%s)' % (service.get('disabled_reason') or 'no reason given'))
            if trouble:
                raise InvalidRequest('Nothing was changed: %s %s cannot receive instances: %s. Choose an enabled, up '
                                     'compute, or leave %s out to let the scheduler choose.'
                                     % (option, name, ' and '.join(trouble), remedy), service=service)

    def prepare_reserved_host(self, request, check_mode):
        """Masakari's reserved host: enable the spare's compute service and add it to every aggregate of the
        failed host, so that the scheduler accepts it as the target; returns what was (or would be) done."""
        spare, failed = request.reserved_host, request.host
        if not spare:
            return None
        service = self.get_service(spare)
        aggregates = self._call('GET', '/os-aggregates').json()['aggregates']
        joining = [a for a in aggregates if failed in (a.get('hosts') or []) and spare not in (a.get('hosts') or [])]
        changes = []
        if service['status'] != 'enabled':
            changes.append('enable its nova-compute service')
        changes.extend('join aggregate %s' % a['name'] for a in joining)
        report = {'host': spare, 'changes': changes, 'service_before': service,
                  'aggregates': sorted(a['name'] for a in aggregates if failed in (a.get('hosts') or []))}
        if check_mode:
            return report
        if service['status'] != 'enabled':
            report['service_after'] = self.update_service(service, disabled=False)
        for aggregate in joining:
            path = '/os-aggregates/%s/action' % aggregate['id']

            def joined(aggregate_id=aggregate['id']):
                body = self._call('GET', '/os-aggregates/%s' % aggregate_id).json()['aggregate']
                return spare in (body.get('hosts') or [])
            try:
                self._call('POST', path, json={'add_host': {'host': spare}}, verify=joined)
            except RequestFailed as error:
                error.msg = 'Adding the reserved host %s to aggregate %s failed: %s' % (spare, aggregate['name'],
                                                                                        error.msg)
                raise
        return report

    # listing and planning ------------------------------------------------------------------------

    def list_on_host(self, host):
        response = self._call('GET', '/servers/detail', params={'host': host, 'all_tenants': 1})
        self.records.start(host, response)
        servers = response.json()['servers']
        subjects = [self._subject(body, host) for body in servers]
        # A cold migration off the host that waits for its confirm already shows the target as the
        # server's host: the migrations list finds it (a rerun confirms it).
        query = {'source_compute': host, 'status': 'finished', 'migration_type': 'migration'}
        finished = self._call('GET', '/os-migrations', params=query).json()['migrations']
        listed = set(s.id for s in subjects)
        for migration in finished:
            if migration['instance_uuid'] in listed:
                continue
            body = self._server(migration['instance_uuid'])
            if body is None or body.get('status') != 'VERIFY_RESIZE':
                continue
            subject = self._subject(body, host)
            details = dict(subject.details, move_in_flight=True, migration_id=migration['id'],
                           dest=migration.get('dest_compute'))
            subjects.append(subject._replace(host=host, task='verify_resize', details=details))
            listed.add(subject.id)
        return subjects

    def _server(self, server_id):
        try:
            return self._call('GET', '/servers/%s' % server_id).json()['server']
        except ResourceNotFound:
            return None

    def _subject(self, body, host):
        observation = observation_from_server(body)
        flavor = body.get('flavor') or {}
        details = dict(observation.details, status=body.get('status'), project_id=body.get('tenant_id'),
                       vcpus=flavor.get('vcpus'), ram=flavor.get('ram'), disk=flavor.get('disk'),
                       updated=body.get('updated'),
                       move_in_flight=(body.get('OS-EXT-STS:task_state') in MOVE_TASKS),
                       disk_fate=evacuation.disk_fate(body, self.shared_storage))
        state = observation.state
        if body.get('status') in ('MIGRATING', 'RESIZE', 'REBUILD'):
            state = STATUS_TO_STATE_OF_VM.get(body.get('OS-EXT-STS:vm_state'), states.RUNNING)
        locked = bool(body.get('locked'))
        reason = body.get('locked_reason') or ''
        if locked and reason.startswith('%s%s:' % (LOCK_PREFIX, host)) and reason != self.lock_reason(host):
            # Left by a run of ours on this host that died: released first thing by this run
            # (release_stale_locks), so it is planned and reported as unlocked.
            details['stale_lock'] = reason
            locked = False
        return moves.MoveSubject(body['id'], body.get('name'), state, observation.task,
                                 body.get('OS-EXT-SRV-ATTR:host') or host, locked, details)

    @staticmethod
    def _body_of(subject):
        """What the server looked like when listed, for settling an ambiguous action."""
        return {'status': subject.details.get('status'), 'updated': subject.details.get('updated'),
                'OS-EXT-SRV-ATTR:host': subject.host, 'locked': subject.locked}

    def plan_move(self, subject, request):
        decision = moves.policy_decision(subject, request)
        move = decision.move
        if move == moves.EVACUATE:
            return self._plan_evacuation(subject, request)
        if move == moves.COLD and subject.state not in COLD_STATES:
            return moves.Decision(moves.FAIL, 'Nova cold-migrates only active or stopped servers, not %s'
                                  % subject.state)
        return decision

    def _plan_evacuation(self, subject, request):
        """Every server is evacuated (evacuation.py); a suspended or rescued one may be skipped or refuse the
        run by its policy.  A shelved (not offloaded) server cannot be evacuated: its policy says skip or fail."""
        fate = subject.details.get('disk_fate')
        if subject.state not in EVACUATE_STATES + RESET_STATES:
            policy = request.policy_for(subject.state)
            if policy == 'fail':
                return moves.Decision(moves.FAIL, 'Nova cannot evacuate a %s server (%s_policy=fail)'
                                      % (subject.state, subject.state))
            return moves.Decision(moves.SKIP, 'Nova cannot evacuate a %s server; it stays on the failed host'
                                  % subject.state)
        policy = request.policy_for(subject.state)
        if subject.state in (states.SUSPENDED, states.RESCUED) and policy in ('skip', 'fail'):
            return moves.Decision(moves.SKIP if policy == 'skip' else moves.FAIL,
                                  '%s (%s_policy=%s)' % (subject.state, subject.state, policy))
        steps, note = evacuation.evacuation_steps(subject, request.power_state)
        plan = ', '.join(step for step in steps)
        return moves.Decision(moves.EVACUATE, None, '; '.join(
            part for part in ('steps: %s' % plan, note, evacuation.disk_note(fate)) if part))

    # moving ------------------------------------------------------------------------------------

    def start_move(self, subject, move, target_host, options):
        """Send the first request of a move; the steps of a move are handle.data['steps']."""
        steps = self._steps(subject, move, options)
        handle = moves.MoveHandle(subject, move, target_host, steps=steps, step=0, options=options,
                                  state_before=subject.state, locked_by_us=False,
                                  changed_after=self.records.cloud_now(), sent_at=time.monotonic(),
                                  before=self._body_of(subject))
        try:
            self._send_step(handle)
        except BackendError as error:
            # Refused (the lock may have been taken just before): release a lock this call took.
            undone = self._release_lock(handle)
            if undone:
                error.msg = '%s (undone: %s)' % (error.msg, undone)
            raise
        return handle

    def abandon(self, handle, message):
        """The run stops following this move (past two deadlines, or the run's timeout): release our lock."""
        undone = self._release_lock(handle)
        return '%s (undone: %s)' % (message, undone) if undone else message

    def _release_lock(self, handle):
        """Unlock a server this run locked (never one that was locked before); '' when there was none."""
        if not handle.data.get('locked_by_us'):
            return ''
        try:
            self._action(handle.id, 'unlock', ACTIONS['unlock'], handle.subject.name)
        except BackendError as error:
            return 'unlock failed, the server stays locked: %s' % error.msg
        handle.data['locked_by_us'] = False
        return 'unlock'

    def _steps(self, subject, move, options):
        """The verbs of one move, in order.  'move' is the move itself; 'lock' / 'unlock' wrap it when
        the run locks the server (lock_during_move)."""
        lock = options.lock_during_move
        if lock is None:      # by mode: evacuations lock, drains do not
            lock = move == moves.EVACUATE
        lock = lock and not subject.locked
        if move == moves.EVACUATE:
            steps = evacuation.evacuation_steps(subject, options.power_state)[0]
        elif move == moves.COLD:
            steps = ['move', 'confirm']
        elif move == moves.OFFLOAD:
            steps = ['move']
        elif subject.state == states.SUSPENDED:
            steps = ['resume', 'move', 'suspend']
        elif subject.state == states.RESCUED:
            steps = ['unrescue', 'move', 'rescue']
        else:
            steps = ['move']
        if lock:
            steps.insert(0, 'lock')
            steps.append('unlock')
        return steps

    def lock_reason(self, host):
        return '%s%s:%s' % (LOCK_PREFIX, host, self.run_id)

    def release_stale_locks(self, host):
        """Unlock every server a dead run of ours on `host` left locked: still on the host, moved, or still
        moving (a moving server may be unlocked; a rerun adopts its move).  One read: the cloud's locked
        servers (2.73+).  Those still on the host were already planned as unlocked (list_on_host)."""
        prefix = '%s%s:' % (LOCK_PREFIX, host)
        locked = self._call('GET', '/servers/detail', params={'all_tenants': 1, 'locked': 'true'}).json()['servers']
        released = []
        for body in locked:
            reason = body.get('locked_reason') or ''
            if not reason.startswith(prefix) or reason == self.lock_reason(host):
                continue
            self._action(body['id'], 'unlock', ACTIONS['unlock'], body.get('name'), body)
            released.append({'id': body['id'], 'name': body.get('name'), 'reason': reason,
                             'host': body.get('OS-EXT-SRV-ATTR:host')})
        return released

    def _send_step(self, handle):
        subject, step = handle.subject, handle.data['steps'][handle.data['step']]
        options = handle.data['options']
        target = handle.target_host
        before = handle.data.get('before') or self._body_of(subject)
        if step == 'lock':
            self._action(subject.id, 'lock', {'lock': {'locked_reason': self.lock_reason(subject.host)}}, subject.name)
            handle.data['locked_by_us'] = True
            handle.data['step'] += 1
            return self._send_step(handle)
        if step == 'unlock':
            self._action(subject.id, 'unlock', ACTIONS['unlock'], subject.name, before)
            handle.data['locked_by_us'] = False
            return None
        if step == 'move':
            handle.data['move_sent'] = True
            if handle.move == moves.LIVE:
                block = options.block_migration
                block = 'auto' if block in (None, 'auto') else (str(block).lower() in ('true', 'yes', '1'))
                return self._action(subject.id, 'live migration',
                                    {'os-migrateLive': {'host': target, 'block_migration': block}}, subject.name,
                                    before)
            if handle.move == moves.COLD:
                return self._action(subject.id, 'cold migration', {'migrate': {'host': target} if target else None},
                                    subject.name, before)
            if handle.move == moves.EVACUATE:
                return self._action(subject.id, 'evacuation', {'evacuate': {'host': target} if target else {}},
                                    subject.name, before)
            if handle.move == moves.OFFLOAD:
                return self._action(subject.id, 'shelve_offload', ACTIONS['offload'], subject.name, before)
            raise BackendError('Unknown move %s' % handle.move)
        if step == evacuation.RESET:
            handle.data['reset'] = True
        return self._action(subject.id, step, ACTIONS[step], subject.name, before)

    def adopt(self, subject):
        """Follow a move found in flight: a VERIFY_RESIZE waiting for its confirm, or a task in progress."""
        if subject.task == 'verify_resize':
            handle = moves.MoveHandle(subject, moves.ADOPT, subject.details.get('dest'), steps=['move', 'confirm'],
                                      step=0, options=None, state_before=subject.state, locked_by_us=False,
                                      resolved_move=moves.COLD, was_done=True,
                                      changed_after=epoch(subject.details.get('updated')))
            return handle
        task = subject.task or ''
        kind = moves.COLD if task.startswith('resize') else moves.EVACUATE if task.startswith('rebuild') else \
            moves.OFFLOAD if task == 'shelving_offloading' else moves.LIVE
        steps = ['move', 'confirm'] if kind == moves.COLD else ['move']
        return moves.MoveHandle(subject, moves.ADOPT, None, steps=steps, step=0, options=None,
                                state_before=subject.state, locked_by_us=False, resolved_move=kind,
                                changed_after=epoch(subject.details.get('updated')))

    def poll(self, handles):
        """One or two shared reads for all handles, never one per server:
          1. the migration records off the host (light: no server views).  A live move whose record says
             completed, or a confirm whose record says confirmed, has ended well: Nova closes the record
             after it has settled the server, and only then frees the compute's migration slot;
          2. only when some handle needs it (any other step, a record that ended badly, a move with no
             record yet), the servers changed since the oldest of those moves began."""
        records = self.records.latest()
        out, by_server = {}, []
        for handle in handles:
            verdict = self.records.record_status(handle, records.get(handle.id))
            if verdict is ASK_THE_SERVER:
                by_server.append(handle)
            elif verdict is not None:
                out[handle.id] = verdict
        if not by_server:
            return out
        params = {'all_tenants': 1, 'changes-since': iso(self.records.cursor(by_server))}
        bodies = dict((s['id'], s) for s in self._call('GET', '/servers/detail', params=params).json()['servers'])
        # A moving server always has a change after its move began; one left out means some clock (a
        # compute's) is further off than the margin: the next read goes back to the broad cursor.
        self.records.missed = any(handle.id not in bodies for handle in by_server)
        for handle in by_server:
            body = bodies.get(handle.id)
            status = self._status_of(handle, body) if body is not None else None
            if status is None:
                continue
            record = records.get(handle.id)
            if self._has_record(handle) and record is not None and record['status'] in MIGRATION_IN_PROGRESS:
                continue    # settled a moment before the compute closes the record and frees its slot
            out[handle.id] = status
        return out

    def _has_record(self, handle):
        step = handle.data['steps'][handle.data['step']]
        move = handle.data.get('resolved_move', handle.move)
        return step in ('move', 'confirm') and move in (moves.LIVE, moves.COLD, moves.EVACUATE)

    def _status_of(self, handle, body):
        status, task = body.get('status'), body.get('OS-EXT-STS:task_state')
        host = body.get('OS-EXT-SRV-ATTR:host')
        state = observation_from_server(body).state
        step = handle.data['steps'][handle.data['step']]
        move = handle.data.get('resolved_move', handle.move)
        if handle.data.get('reset') and step in (evacuation.RESET, 'move'):
            return self._status_after_reset(handle, body, step)
        if status == 'ERROR' and handle.subject.state != states.ERROR:
            fault = (body.get('fault') or {}).get('message') or 'no fault message'
            handle.data['error_body'] = body
            return moves.MoveStatus(False, True, 'the server went into ERROR: %s' % fault, host, state)
        if task is not None or status in ('MIGRATING', 'RESIZE', 'REBUILD', 'BUILD'):
            return None
        if step == 'move':
            if move == moves.OFFLOAD:
                return moves.MoveStatus(status == 'SHELVED_OFFLOADED', status != 'SHELVED_OFFLOADED',
                                        None if status == 'SHELVED_OFFLOADED' else 'not offloaded (%s)' % status,
                                        host, state)
            if move == moves.COLD and status == 'VERIFY_RESIZE':
                return moves.MoveStatus(True, False, None, host, state)
            if host != handle.subject.host and move != moves.COLD:
                return moves.MoveStatus(True, False, None, host, state)
            if handle.data.get('was_done'):
                return moves.MoveStatus(True, False, None, host, state)
            return moves.MoveStatus(False, True, self._why_failed(handle), host, state)
        if step == 'confirm':
            if status == 'VERIFY_RESIZE':
                return None     # confirming
            return moves.MoveStatus(True, False, None, host, state)
        wanted = LANDS_IN.get(step)
        if wanted and status == wanted:
            return moves.MoveStatus(True, False, None, host, state)
        return moves.MoveStatus(False, True, '%s did not lead to %s (status %s)' % (step, wanted, status), host, state)

    def _status_after_reset(self, handle, body, step):
        """The reset and the evacuation of a server reset to ERROR: ERROR is expected until it is rebuilt."""
        status, task = body.get('status'), body.get('OS-EXT-STS:task_state')
        host = body.get('OS-EXT-SRV-ATTR:host')
        if task is not None:
            return None
        if step == evacuation.RESET:
            if body.get('OS-EXT-STS:vm_state') == 'error':
                return moves.MoveStatus(True, False, None, host, states.ERROR)
            return None
        state = observation_from_server(body).state
        if status in ('REBUILD', 'BUILD'):
            return None
        if host != handle.subject.host and status != 'ERROR':
            return moves.MoveStatus(True, False, None, host, state)
        if status == 'ERROR':
            fault = (body.get('fault') or {}).get('message')
            why = self._why_failed(handle) if host == handle.subject.host else \
                'the rebuild on %s failed: %s' % (host, fault or 'no fault message')
            return moves.MoveStatus(False, True, 'the evacuation failed: %s' % why, host, state)
        return moves.MoveStatus(False, True, 'the evacuation ended and the server is still on %s (%s)'
                                % (handle.subject.host, status), host, state)

    def _why_failed(self, handle):
        """The reason Nova gives for a move that ended without moving (instance action events)."""
        try:
            actions = self._call('GET', '/servers/%s/os-instance-actions' % handle.id).json()['instanceActions']
            if not actions:
                return 'the move ended and the server is still on %s' % handle.subject.host
            latest = actions[0]
            detail = self._call('GET', '/servers/%s/os-instance-actions/%s' % (handle.id, latest['request_id'])
                                ).json()['instanceAction']
            failed = [e for e in detail.get('events') or [] if e.get('result') == 'Error']
            if failed:
                event = failed[-1]
                return '%s failed in %s: %s' % (latest.get('action'), event.get('event'),
                                                event.get('details') or 'no details')
            return '%s ended (%s) and the server is still on %s' % (latest.get('action'), latest.get('message')
                                                                    or 'no message', handle.subject.host)
        except (BackendError, KeyError) as error:
            return 'the move ended and the server is still on %s (reason unknown: %s)' % (handle.subject.host, error)

    def _migration_in_progress(self, handle):
        body = self._call('GET', '/servers/%s/migrations' % handle.id).json()['migrations']
        if not body:
            raise BackendError('No live migration of %s in progress to act on.' % handle.subject.name)
        return body[0]['id']

    def _migration_ended(self, handle, migration_id):
        """Whether an abort took effect: the migration is no longer in progress."""
        body = self._call('GET', '/servers/%s/migrations' % handle.id).json()['migrations']
        return all(item['id'] != migration_id for item in body)

    def abort(self, handle):
        self._in_live_step(handle)
        migration_id = self._migration_in_progress(handle)
        handle.data['migration_id'] = migration_id
        try:
            self._call('DELETE', '/servers/%s/migrations/%s' % (handle.id, migration_id),
                       verify=lambda: self._migration_ended(handle, migration_id))
        except RequestFailed as error:
            error.msg = 'Nova refused to abort migration %s of %s: %s' % (migration_id, handle.subject.name, error.msg)
            raise

    def force_complete(self, handle):
        self._in_live_step(handle)
        migration_id = self._migration_in_progress(handle)
        handle.data['migration_id'] = migration_id
        try:
            self._call('POST', '/servers/%s/migrations/%s/action' % (handle.id, migration_id),
                       json={'force_complete': None})
        except RequestFailed as error:
            error.msg = 'Nova refused to force-complete migration %s of %s: %s' % (
                migration_id, handle.subject.name, error.msg)
            raise

    def _in_live_step(self, handle):
        if handle.data.get('resolved_move', handle.move) != moves.LIVE or \
                handle.data['steps'][handle.data['step']] != 'move':
            raise BackendError('%s is not in a live migration step' % handle.subject.name)

    def can_cold_fallback(self, handle, status):
        if handle.data['state_before'] not in COLD_STATES:
            return 'Nova cold-migrates only active or stopped servers; this one was %s' % handle.data['state_before']
        return None

    def finish(self, handle, status):
        """Next step of a done move, or the undo of a failed one."""
        steps = handle.data['steps']
        if status.failed:
            return self._undo(handle, status)
        handle.data['step'] += 1
        if handle.data['step'] >= len(steps):
            return self._final(handle, status)
        try:
            self._send_step(handle)
        except BackendError as error:
            message = 'moved to %s, but then %s' % (status.host, error.msg)
            undone = self._release_lock(handle) if steps[handle.data['step']] != 'unlock' else ''
            if undone:
                message = '%s (undone: %s)' % (message, undone)
            return moves.MoveStatus(False, True, message, status.host, status.state)
        if steps[handle.data['step']] == 'unlock':     # no wait needed for an unlock
            return self._final(handle, status)
        return moves.MoveStatus(False, False, None, status.host, status.state)

    def _final(self, handle, status):
        """The last status of a done move; an evacuation says the steps it took and where its state differs."""
        if handle.move != moves.EVACUATE:
            return status
        subject = handle.subject
        taken = [step for step in handle.data['steps'] if step not in ('lock', 'unlock')]
        said = ['steps: %s' % ', '.join(taken)]
        if subject.state == states.RESCUED and status.state != states.RESCUED:
            said.append('was rescued, now running: the rescue session is lost (rescue it again if needed)')
        if subject.state == states.RESIZE_PENDING:
            said.append('its pending resize was confirmed')
        said.append(evacuation.disk_note(subject.details.get('disk_fate')))
        message = '; '.join(part for part in [status.message] + said if part)
        return status._replace(message=message)

    def _undo(self, handle, status):
        """After a failed step: put back what the earlier steps changed, without waiting."""
        undone = []
        steps, done = handle.data['steps'], handle.data['step']
        back = {'resume': 'suspend', 'unrescue': 'rescue'}
        try:
            for step in steps[:done]:
                if step in back and status.state == states.RUNNING:
                    self._action(handle.id, back[step], ACTIONS[back[step]], handle.subject.name)
                    undone.append(back[step])
        except BackendError as error:
            undone.append('undo failed: %s' % error.msg)
        if handle.data.get('reset'):
            return self._undo_reset(handle, status, undone)
        message, state = status.message, status.state
        if handle.data.get('error_body') is not None:
            message, state = self._clear_error(handle, handle.data.pop('error_body'), message, state, undone)
        released = self._release_lock(handle)     # also when an undo step above failed
        if released:
            undone.append(released)
        if undone:
            message = '%s (undone: %s)' % (message, ', '.join(undone))
        return moves.MoveStatus(False, True, message, status.host, state)

    def _clear_error(self, handle, body, message, state, undone):
        """Nova put the server in ERROR during its move (e.g. the conductor lost an RPC reply while RabbitMQ
        restarted) although its guest never left: still on the source, running, no task.  Such a server is
        reset to active, as an admin would, so that the run leaves nothing in ERROR and a rerun moves it.
        Anything else is left as Nova set it, with what to do."""
        subject = handle.subject
        host = body.get('OS-EXT-SRV-ATTR:host')
        power = body.get('OS-EXT-STS:power_state')
        options = handle.data.get('options')
        if options is None or options.mode != 'drain':
            # An evacuation's host is dead: its power state is stale, and a server in ERROR is evacuated as it is.
            return message, state
        if handle.data['state_before'] != states.RUNNING or host != subject.host or power != 1 or \
                body.get('OS-EXT-STS:task_state') is not None:
            return ('%s; left in ERROR on %s (power state %s): look at it, then reset it (openstack server set '
                    '--state active %s) and rerun' % (message, host, power, handle.id)), state
        try:
            self._action(handle.id, evacuation.RESET_BACK, ACTIONS[evacuation.RESET_BACK], subject.name)
        except BackendError as error:
            undone.append('reset to active failed: %s' % error.msg)
            return message, state
        undone.append('reset to active')
        return ('%s; its guest was still running on %s, so it was reset to active: a rerun moves it'
                % (message, host)), states.RUNNING

    def _undo_reset(self, handle, status, undone):
        """A step after a reset failed: never leave the server in ERROR.  If it is in ERROR, reset it to ACTIVE
        (on the dead host, a rerun then evacuates it as an active server) and say what it was and what to do."""
        subject = handle.subject
        body = self._server(handle.id) or {}
        where = body.get('OS-EXT-SRV-ATTR:host') or status.host or subject.host
        state_now = observation_from_server(body).state if body else status.state
        restore = evacuation.RESTORE_STEP.get(subject.state)
        then = ('then %s it (it was %s)' % (restore, subject.state)) if restore else \
            'it was %s' % subject.state
        if body.get('OS-EXT-STS:vm_state') == 'error':
            try:
                self._action(handle.id, evacuation.RESET_BACK, ACTIONS[evacuation.RESET_BACK], subject.name)
                undone.append('reset to active')
                state_now = states.RUNNING
                advice = ('it is marked active on %s; %s: run host_evacuate again (it evacuates it as an active '
                          'server), %s' % (where, 'the host is dead' if where == subject.host else 'check it there',
                                           then))
            except BackendError as error:
                undone.append('reset to active failed: %s' % error.msg)
                advice = ('it is left in ERROR on %s: reset it (openstack server set --state active %s) and run '
                          'host_evacuate again, %s' % (where, handle.id, then))
        else:
            advice = 'it is %s on %s; %s' % (state_now, where, then)
        released = self._release_lock(handle)
        if released:
            undone.append(released)
        message = '%s; %s' % (status.message, advice)
        if undone:
            message = '%s (undone: %s)' % (message, ', '.join(undone))
        return moves.MoveStatus(False, True, message, where, state_now)

    def source_watch(self, request):
        """The heartbeat of the host's nova-compute (heartbeat.py): a drain stops when it dies, an
        evacuation when it lives."""
        before = self.first_seen.get(request.host) or {}
        return ServiceHeartbeat(service_reader(self.backend.nova, request.host, MOVES_MICROVERSION), request.host,
                                request.mode, completed_evacuations=lambda: self.records.completed_evacuations,
                                heard_before=epoch(before.get('updated_at')))

    # capacity ----------------------------------------------------------------------------------

    def capacity(self, host, subjects):
        """Placement: the free VCPU / MEMORY_MB / DISK_GB of every other compute, against the servers' needs."""
        return placement.capacity(self.backend.requests, host, subjects, self.compute_services())


def run_id():
    """Names this run in the locks it takes: the AWX job when there is one, else the time and a nonce."""
    job = os.environ.get('JOB_ID') or os.environ.get('AWX_JOB_ID')
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    return 'job-%s-%s' % (job, stamp) if job else '%s-%s' % (stamp, uuid.uuid4().hex[:6])


STATUS_TO_STATE_OF_VM = {'active': states.RUNNING, 'stopped': states.STOPPED, 'paused': states.PAUSED,
                         'suspended': states.SUSPENDED, 'rescued': states.RESCUED, 'error': states.ERROR}


def _text(response):
    try:
        body = response.json()
        return '; '.join(str(v.get('message', v)) if isinstance(v, dict) else str(v) for v in body.values()).rstrip('.')
    except ValueError:
        return response.text[:200]
