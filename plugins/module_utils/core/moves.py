# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving every instance off a host (drain, evacuate): the backend-neutral core.

The interface both backends implement is MoveBackend below; beyond the plain verbs:
  * MoveBackend has `get_service(host)` / `set_service(host, ...)` (None on a backend without a
    compute-service notion, e.g. libvirt: the core then neither disables nor restores anything),
    `adopt(subject)` (resume a move found in flight by a rerun) and `request_count()`.
  * plan_move returns a `Decision(move, reason, note)`; `policy_decision()` here is the neutral policy
    table a backend calls first and then refines with what its hypervisor can do.
  * start_move returns a `MoveHandle` (class below; backends keep their own keys in `handle.data`).
  * finish(handle, status) gets the last MoveStatus and returns the final MoveStatus (end host/state).
    A move of several steps (resume, move, suspend again; cold move, confirm) returns a status that is
    neither done nor failed: the core then keeps the handle in flight (in the window, under its
    deadline) and calls finish() again on the next done.  On a failed status finish() undoes what it
    can without waiting (unlock, suspend again) and returns the status to report.
  * can_cold_fallback(handle, status) -> None or a reason why this instance gets no cold fallback
    (e.g. Nova cold-migrates only active and stopped servers).
  * Extra move names: 'offload' (a shelved server is offloaded: it then has no host) and 'adopt'
    (a move already in flight when the run started).  A plan_move Decision 'unmovable' (e.g. a paused
    server Nova cannot evacuate) fails that instance alone, with the reason, before anything is sent;
    the others still move ('fail' instead refuses the whole run).
  * abandon(handle, message) -> message: the core stops following a move still in flight (two deadlines
    passed, or the run's timeout); the backend may undo what start_move did (OpenStack: release a lock
    it took) and returns the message to report.  The move itself goes on in the backend.
  * Extra request fields: poll_interval, progress_file, timeout (whole run).
  * abort()/force_complete() raising errors.BackendError is retried every DEADLINE_RETRY_SECONDS for at
    most another deadline (a migration still queued or being checked cannot be aborted yet).
  * capacity() may return any JSON-able value (OpenStack: a dict with per-host rows and a verdict).

The loop (`run`): list the instances on the host, decide a move for each (check mode stops here and
returns the plan with the capacity check), disable the host's service, then keep a window of at most
`window` moves in flight, refilled as each finishes.  Completion is found with ONE shared read per
cycle (`backend.poll(handles)`), never one read per instance.  A live move past its per-instance
deadline is aborted (or force-completed) and, once the instance is seen back on the source, falls back
to a cold move when allowed.  Progress is derived from the backend's state only (instances on the host,
moves in flight), so a rerun after an interruption continues, never repeats a finished move.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections
import json
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, VmopsError

# One instance found on the host.
#   id, name: UUID and name; state: a states.* name; task: None when settled, else what it is busy with
#   host: where it is now; locked: bool; details: backend facts (status, flavor, migration in flight ...)
MoveSubject = collections.namedtuple('MoveSubject', 'id name state task host locked details')

# What one shared read says about one move in flight.
#   done:   the move finished (instance on another host, settled; a cold move may still need finish())
#   failed: the move ended without moving the instance (error, aborted, refused); message says why
#   host, state: where the instance is and its state now
MoveStatus = collections.namedtuple('MoveStatus', 'done failed message host state')

# What to do with one instance: move in MOVES; reason explains skip/fail; note is shown in the plan.
Decision = collections.namedtuple('Decision', 'move reason note')
Decision.__new__.__defaults__ = (None, None)

LIVE, COLD, EVACUATE, OFFLOAD, ADOPT, SKIP, FAIL, NONE, UNMOVABLE = (
    'live', 'cold', 'evacuate', 'offload', 'adopt', 'skip', 'fail', 'none', 'unmovable')
MOVES = (LIVE, COLD, EVACUATE, OFFLOAD, ADOPT)
DEADLINE_RETRY_SECONDS = 2.0
POLICIES = ('move', 'skip', 'fail')
OUTCOMES = ('moved', 'skipped', 'failed', 'already_done')


class MoveRequest(object):
    """What the caller wants (the module's options).  Defaults as documented in host_evacuate."""

    FIELDS = dict(
        host=None, mode='drain', target_host=None, window=None, deadline=600, deadline_action='abort',
        cold_fallback=True, block_migration='auto', suspended_policy='move', shelved_policy='move',
        rescued_policy='fail', error_policy='skip', disable=True, disabled_reason=None,
        restore_service_on_failure=True, fenced=False, force_down=False, power_state='keep',
        lock_during_move=True, instances=None, poll_interval=0.4, progress_file=None, timeout=3600,
    )

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError('unknown MoveRequest fields: %s' % ', '.join(sorted(unknown)))
        for key, default in self.FIELDS.items():
            value = kwargs.get(key)
            setattr(self, key, default if value is None else value)

    def policy_for(self, state):
        return {states.SUSPENDED: self.suspended_policy, states.SHELVED: self.shelved_policy,
                states.RESCUED: self.rescued_policy, states.ERROR: self.error_policy}.get(state)

    def as_dict(self):
        return dict((key, getattr(self, key)) for key in self.FIELDS)


class MoveHandle(object):
    """One move in flight.  The core sets the timing fields; a backend keeps its own in `data`."""

    def __init__(self, subject, move, target_host=None, **data):
        self.id = subject.id
        self.subject = subject
        self.move = move
        self.target_host = target_host
        self.data = data
        self.started = None          # monotonic
        self.started_wall = None     # epoch seconds
        self.deadline_at = None
        self.deadline_acted = None   # 'abort' | 'force_complete' once acted on
        self.attempts = []           # moves tried before this one (e.g. ['live'] before a cold fallback)


class MoveBackend(abc.ABC):
    """The interface the core drives.  OpenStack: openstack/moves.py; libvirt: libvirt/moves.py."""

    name = None
    default_window = 1

    @abc.abstractmethod
    def location(self):
        """See the module docstring."""

    def request_count(self):
        return None

    def get_service(self, host):
        """The host's compute service as a dict {id, host, binary, status (enabled|disabled),
        state (up|down), disabled_reason, forced_down}, or None when the backend has no such notion."""
        return None

    def set_service(self, host, disabled=None, reason=None, forced_down=None):
        """Change the service (None = leave that part alone); returns the service dict after."""
        raise NotImplementedError

    @abc.abstractmethod
    def list_on_host(self, host):
        """[MoveSubject] on `host`, including instances whose move off it is in flight."""

    def plan_move(self, subject, request):
        """Decision for one subject (start from policy_decision(subject, request))."""
        return policy_decision(subject, request)

    @abc.abstractmethod
    def start_move(self, subject, move, target_host, options):
        """Send the move; returns a MoveHandle.  Raise errors.BackendError when refused."""

    def adopt(self, subject):
        """A MoveHandle for a move already in flight (found by a rerun), or None if there is none."""
        return None

    @abc.abstractmethod
    def poll(self, handles):
        """ONE shared read for all handles: {handle.id: MoveStatus}.  A missing id means no news."""

    @abc.abstractmethod
    def abort(self, handle):
        """See the module docstring."""

    @abc.abstractmethod
    def force_complete(self, handle):
        """See the module docstring."""

    def finish(self, handle, status):
        """Settle a done move (confirm a cold move, restore the power state, unlock); returns the final
        MoveStatus.  Also called for a failed move, to undo what start_move did (unlock ...)."""
        return status

    def abandon(self, handle, message):
        """The core stops following this move (still in flight; it goes on in the backend): undo what
        start_move did that must not outlive the run (e.g. a lock); returns `message`, with what was undone."""
        return message

    def can_cold_fallback(self, handle, status):
        """None when a live move aborted at its deadline may be retried cold, else the reason why not."""
        return None

    def capacity(self, host, subjects):
        """Room on the candidate hosts: [{host, fits (bool or None), free: {...}, needed: {...}}]."""
        return []


# The neutral policy table ----------------------------------------------------------------------

def policy_decision(subject, request):
    """What the options say about one instance, before any backend specifics."""
    state = subject.state
    if request.instances and subject.id not in request.instances and subject.name not in request.instances:
        return Decision(NONE, 'not in instances')
    if subject.task and subject.details.get('move_in_flight'):
        return Decision(ADOPT, None, 'a move started earlier is in flight (%s)' % subject.task)
    if state == states.SHELVED_OFFLOADED or state == states.ABSENT:
        return Decision(NONE, 'has no host')
    if state == states.ERROR:
        policy = request.error_policy
    elif request.mode == 'evacuate':
        return Decision(EVACUATE)
    else:
        policy = request.policy_for(state) or 'move'
    if policy == 'skip':
        return Decision(SKIP, '%s (%s_policy=skip)' % (state, _policy_name(state)))
    if policy == 'fail':
        return Decision(FAIL, '%s (%s_policy=fail)' % (state, _policy_name(state)))
    if request.mode == 'evacuate':
        return Decision(EVACUATE)
    if state in (states.RUNNING, states.PAUSED):
        return Decision(LIVE)
    if state == states.STOPPED:
        return Decision(COLD)
    if state == states.SUSPENDED:
        return Decision(LIVE, None, 'resumed, moved live, suspended again')
    if state == states.SHELVED:
        return Decision(OFFLOAD, None, 'offloaded: unshelve places it anew')
    if state == states.RESCUED:
        return Decision(LIVE, None, 'unrescued, moved live, rescued again')
    if state == states.ERROR:
        return Decision(COLD, None, 'error_policy=move')
    return Decision(FAIL, 'state %s cannot be moved' % state)


def _policy_name(state):
    return {states.SUSPENDED: 'suspended', states.SHELVED: 'shelved', states.RESCUED: 'rescued',
            states.ERROR: 'error'}.get(state, state)


def validate_request(request, backend_name=None):
    """Refuse bad or contradictory input before anything is contacted."""
    if not request.host:
        raise InvalidRequest('host is required.')
    if request.mode not in ('drain', 'evacuate'):
        raise InvalidRequest("mode must be drain or evacuate, not '%s'." % request.mode)
    if request.target_host is not None and request.target_host == request.host:
        raise InvalidRequest('target_host is the host being emptied (%s).' % request.host)
    if request.window is not None and request.window < 1:
        raise InvalidRequest('window must be at least 1, got %s.' % request.window)
    for name in ('deadline', 'timeout', 'poll_interval'):
        if getattr(request, name) <= 0:
            raise InvalidRequest('%s must be a positive number of seconds, got %s.' % (name, getattr(request, name)))
    if request.deadline_action not in ('abort', 'force_complete'):
        raise InvalidRequest("deadline_action must be abort or force_complete, not '%s'." % request.deadline_action)
    for name in ('suspended_policy', 'shelved_policy', 'rescued_policy', 'error_policy'):
        if getattr(request, name) not in POLICIES:
            raise InvalidRequest('%s must be one of %s.' % (name, ', '.join(POLICIES)))
    if request.power_state not in ('keep', 'running', 'stopped'):
        raise InvalidRequest("power_state must be keep, running or stopped, not '%s'." % request.power_state)
    if request.mode == 'drain':
        for name in ('fenced', 'force_down'):
            if getattr(request, name):
                raise InvalidRequest('%s applies to mode=evacuate only.' % name)
        if request.power_state != 'keep':
            raise InvalidRequest('power_state applies to mode=evacuate only; a drain keeps each power state.')
    if request.force_down and not request.fenced:
        raise InvalidRequest('force_down needs fenced=true: forcing a host down while its instances may still '
                             'run there risks two copies of each instance. Fence the host first, then say so.')
    if request.disabled_reason is not None and not request.disable:
        raise InvalidRequest('disabled_reason needs disable=true.')


# The run ---------------------------------------------------------------------------------------

class _Clock(object):
    def __init__(self, monotonic=time.monotonic, sleep=time.sleep, wall=time.time):
        self.monotonic, self.sleep, self.wall = monotonic, sleep, wall


def run(backend, request, check_mode=False, clock=None):
    """Drain or evacuate `request.host`; returns the module result (raises VmopsError with the partial
    result in its details on failure)."""
    validate_request(request, backend.name)
    clock = clock or _Clock()
    runner = _Run(backend, request, clock)
    return runner.go(check_mode)


class _Run(object):

    def __init__(self, backend, request, clock):
        self.backend = backend
        self.request = request
        self.clock = clock
        self.window = request.window or backend.default_window
        self.started = clock.monotonic()
        self.run_deadline = self.started + request.timeout
        self.servers = collections.OrderedDict()
        self.max_in_flight = 0
        self.polls = 0
        self.service_before = None
        self.service_after = None
        self.service_changed = False
        self.disabled_by_us = False
        self.requests_at_start = backend.request_count()

    # --- plan

    def plan(self, subjects):
        plan, refusals = [], []
        for subject in subjects:
            decision = self.backend.plan_move(subject, self.request)
            if decision.move == NONE:
                continue
            entry = {'instance': subject.name, 'id': subject.id, 'move': decision.move, 'from': subject.host,
                     'state': subject.state, 'locked': subject.locked, 'note': decision.note or decision.reason}
            if decision.move == FAIL:
                refusals.append('%s (%s): %s' % (subject.name, subject.id, decision.reason))
            plan.append((entry, subject, decision))
        order = {ADOPT: 0, LIVE: 1, EVACUATE: 1, COLD: 2, OFFLOAD: 3, SKIP: 4, UNMOVABLE: 5, FAIL: 5}
        plan.sort(key=lambda item: (order.get(item[2].move, 9), item[1].name or '', item[1].id))
        return plan, refusals

    def go(self, check_mode):
        request, backend = self.request, self.backend
        self.service_before = backend.get_service(request.host)
        self._check_host_state()
        subjects = backend.list_on_host(request.host)
        plan, refusals = self.plan(subjects)
        movers = [item for item in plan if item[2].move in MOVES]
        unmovable = [item for item in plan if item[2].move == UNMOVABLE]
        capacity = backend.capacity(request.host, [item[1] for item in movers]) if movers else []
        result_plan = [item[0] for item in plan]
        if refusals:
            raise InvalidRequest('Nothing was moved: the options refuse to drain %s with these instances on it: %s.'
                                 % (request.host, '; '.join(refusals)), plan=result_plan, capacity=capacity)
        will_change_service = self._service_changes()
        changed = bool(movers) or bool(will_change_service)
        if check_mode:
            for entry, subject, decision in plan:
                outcome = {SKIP: 'skipped', UNMOVABLE: 'failed'}.get(decision.move, 'planned')
                self._record(subject, decision.move, outcome=outcome, message=decision.reason or decision.note)
            return self._result(changed, result_plan, capacity, check_mode=True,
                                service_plan=will_change_service)
        failure = None
        try:
            self._prepare_service(will_change_service)
            for entry, subject, decision in plan:
                if decision.move == SKIP:
                    self._record(subject, SKIP, outcome='skipped', message=decision.reason, state_after=subject.state,
                                 to=subject.host)
                elif decision.move == UNMOVABLE:    # nothing is sent for it; the others still move
                    self._record(subject, UNMOVABLE, outcome='failed', message=decision.reason,
                                 state_after=subject.state, to=subject.host)
            self._drive([item for item in plan if item[2].move in MOVES])
        except VmopsError as error:
            failure = error
        except Exception as error:  # a bug or a library failure: still undo the service change
            failure = error
        failed = [s for s in self.servers.values() if s['outcome'] == 'failed']
        if (failure or failed) and request.restore_service_on_failure and self.disabled_by_us:
            self._restore_service()
        acted = any(s['outcome'] in ('moved', 'already_done') or (s['outcome'] == 'failed' and s['seconds'] is not None)
                    for s in self.servers.values())
        result = self._result(acted or self.service_changed, result_plan, capacity)
        if failure is not None and not isinstance(failure, VmopsError):
            raise failure
        if failure is not None or failed:
            message = failure.msg if failure is not None else '%d of %d instances failed to move off %s: %s' % (
                len(failed), len(movers) + len(unmovable), request.host,
                '; '.join('%s: %s' % (s['name'], s['message']) for s in failed))
            details = dict(failure.details) if failure is not None else {}
            details.update(result)
            details.pop('changed', None)
            raise VmopsError(message, **details)
        return result

    # --- host service

    def _check_host_state(self):
        request, service = self.request, self.service_before
        if service is None:
            return
        if request.mode == 'evacuate':
            if service['state'] == 'up' and not service.get('forced_down'):
                if not (request.fenced and request.force_down):
                    raise InvalidRequest(
                        'Refusing to evacuate %s: its %s service reports up. Evacuate only a host that is down; if '
                        'it is fenced (powered off / isolated) but still reported up, say fenced=true and '
                        'force_down=true.' % (request.host, service.get('binary')), service=service)
        elif service['state'] == 'down' or service.get('forced_down'):
            raise InvalidRequest('%s is down (its %s service reports down%s): nothing can be migrated off it; use '
                                 'mode=evacuate.' % (request.host, service.get('binary'),
                                                     ', forced down' if service.get('forced_down') else ''),
                                 service=service)

    def _service_changes(self):
        """What the run will change on the service, from the read alone."""
        request, service = self.request, self.service_before
        if service is None:
            return {}
        changes = {}
        if request.disable and service['status'] != 'disabled':
            changes['disabled'] = True
            changes['reason'] = request.disabled_reason or 'vmops host_evacuate %s' % request.mode
        if request.mode == 'evacuate' and request.force_down and not service.get('forced_down'):
            changes['forced_down'] = True
        return changes

    def _prepare_service(self, changes):
        if not changes:
            self.service_after = self.service_before
            return
        self.service_after = self.backend.set_service(self.request.host, disabled=changes.get('disabled'),
                                                      reason=changes.get('reason'),
                                                      forced_down=changes.get('forced_down'))
        self.service_changed = True
        self.disabled_by_us = bool(changes.get('disabled'))

    def _restore_service(self):
        try:
            self.service_after = self.backend.set_service(self.request.host, disabled=False)
            self.disabled_by_us = False
            self.service_restored = True
        except VmopsError as error:
            self.service_restore_error = error.msg

    # --- the window

    def _drive(self, movers):
        request, backend, clock = self.request, self.backend, self.clock
        pending = collections.deque(movers)
        inflight = collections.OrderedDict()
        last_poll = None
        while pending or inflight:
            while pending and len(inflight) < self.window:
                entry, subject, decision = pending.popleft()
                handle = self._start(subject, decision.move)
                if handle is not None:
                    inflight[handle.id] = handle
            self.max_in_flight = max(self.max_in_flight, len(inflight))
            if not inflight:
                continue
            if clock.monotonic() >= self.run_deadline:
                for handle in inflight.values():
                    self._record(handle.subject, handle.move, outcome='failed', handle=handle,
                                 message=self._give_up(handle, 'still in flight when the run timed out after %s s (it '
                                                       'goes on in the backend; a rerun adopts it)' % request.timeout))
                for entry, subject, decision in pending:
                    self._record(subject, decision.move, outcome='failed', message='not started: the run timed '
                                 'out after %s s' % request.timeout)
                return
            # A fixed rate: the interval runs from one read's start to the next, whatever the cycle's
            # own requests (settling, starting the next moves) took.
            wait = request.poll_interval - (clock.monotonic() - last_poll if last_poll is not None else 0)
            if wait > 0:
                clock.sleep(wait)
            last_poll = clock.monotonic()
            statuses = backend.poll(list(inflight.values()))
            self.polls += 1
            now = clock.monotonic()
            for handle_id, handle in list(inflight.items()):
                status = statuses.get(handle_id)
                if status is not None and (status.done or status.failed):
                    del inflight[handle_id]
                    replacement = self._settle(handle, status)
                    if replacement is not None:
                        inflight[replacement.id] = replacement
                elif now >= handle.deadline_at and handle.deadline_acted is None:
                    if now >= handle.data.get('next_deadline_try', 0):
                        self._act_on_deadline(handle)
                    if handle.deadline_acted is None and now >= handle.deadline_at + request.deadline:
                        del inflight[handle_id]
                        self._record(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                                     message=self._give_up(handle, 'past its deadline, %s was refused until another '
                                                           '%s s had passed: %s' % (
                                                               request.deadline_action, request.deadline,
                                                               handle.data.get('deadline_error'))))
                elif handle.deadline_acted and now >= handle.deadline_at + request.deadline:
                    # The abort / force-complete itself did not end the move within another deadline.
                    del inflight[handle_id]
                    self._record(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                                 message=self._give_up(handle, '%s past its deadline did not end the move within %s s '
                                                       'more' % (handle.deadline_acted, request.deadline)))
            self.max_in_flight = max(self.max_in_flight, len(inflight))

    def _start(self, subject, move, attempts=None):
        """Start one move; returns its handle, or None when it was refused (recorded as failed)."""
        request, clock = self.request, self.clock
        try:
            if move == ADOPT:
                handle = self.backend.adopt(subject)
                if handle is None:
                    self._record(subject, ADOPT, outcome='failed', message='a move was in flight but could not '
                                 'be followed; look at the instance and rerun')
                    return None
            else:
                handle = self.backend.start_move(subject, move, request.target_host, request)
        except VmopsError as error:
            self._record(subject, move, outcome='failed', message=error.msg, started_wall=clock.wall(),
                         attempts=attempts)
            return None
        handle.started = clock.monotonic()
        handle.started_wall = clock.wall()
        handle.deadline_at = handle.started + request.deadline
        handle.attempts = list(attempts or [])
        return handle

    def _give_up(self, handle, message):
        """The run stops following a move still in flight: let the backend undo what start_move did (e.g.
        release a lock it took); returns the message to report, with what was undone."""
        try:
            return self.backend.abandon(handle, message) or message
        except VmopsError as error:
            return '%s (undo failed: %s)' % (message, error.msg)

    def _act_on_deadline(self, handle):
        action = self.request.deadline_action
        if handle.move != LIVE:
            handle.deadline_acted = 'waited'   # cold moves and evacuations cannot be aborted: wait one more deadline
            return
        try:
            if action == 'force_complete':
                self.backend.force_complete(handle)
            else:
                self.backend.abort(handle)
            handle.deadline_acted = action
        except VmopsError as error:
            # Often the move is not far enough yet (still queued or being checked) or has just ended: the
            # next polls tell.  Try again every few seconds, for at most another deadline.
            handle.data['deadline_error'] = error.msg
            handle.data['next_deadline_try'] = self.clock.monotonic() + DEADLINE_RETRY_SECONDS

    def _settle(self, handle, status):
        """A move ended (done or failed): finish it, or fall back to a cold move; returns a new handle or None."""
        request = self.request
        fallback = (status.failed and handle.move == LIVE and handle.deadline_acted == 'abort' and request.cold_fallback
                    and status.host == handle.subject.host)
        no_fallback = self.backend.can_cold_fallback(handle, status) if fallback else None
        if fallback and no_fallback is None:
            try:
                self.backend.finish(handle, status)    # undo what the live attempt did (unlock, re-suspend ...)
            except VmopsError:
                pass
            subject = handle.subject._replace(state=status.state or handle.subject.state)
            replacement = self._start(subject, COLD, attempts=handle.attempts + [LIVE])
            if replacement is not None:
                replacement.data.setdefault('first_started', handle.started)
                replacement.data.setdefault('first_started_wall', handle.started_wall)
                replacement.data['fallback_note'] = ('live move aborted after the %s s deadline; moved cold instead'
                                                     % request.deadline)
            return replacement
        try:
            final = self.backend.finish(handle, status)
        except VmopsError as error:
            self._record(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                         message='the move ended but settling it failed: %s' % error.msg)
            return None
        final = final or status
        if not (status.failed or final.failed or final.done):
            return handle   # more steps: stays in flight, finish() is called again on the next done
        if status.failed or final.failed:
            message = (final.message or status.message or 'the move failed')
            if handle.deadline_acted == 'abort':
                message = 'aborted after the %s s deadline; %s' % (request.deadline, message)
            if no_fallback:
                message += '; no cold fallback: %s' % no_fallback
            self._record(handle.subject, handle.move, outcome='failed', handle=handle, status=final, message=message)
        else:
            self._record(handle.subject, handle.move, outcome='moved', handle=handle, status=final,
                         message=final.message or handle.data.get('fallback_note'))
        return None

    # --- records and result

    def _record(self, subject, move, outcome, message=None, handle=None, status=None, state_after=None, to=None,
                started_wall=None, attempts=None):
        clock = self.clock
        started = handle.data.get('first_started', handle.started) if handle else None
        wall_started = handle.data.get('first_started_wall', handle.started_wall) if handle else started_wall
        seconds = round(clock.monotonic() - started, 3) if started is not None else None
        if outcome == 'moved' and move == ADOPT:
            outcome = 'already_done' if handle and handle.data.get('was_done') else 'moved'
        entry = {
            'name': subject.name, 'id': subject.id, 'from': subject.host,
            'to': to if to is not None else (status.host if status else None),
            'move': handle.data.get('resolved_move', move) if handle else move,
            'attempts': (handle.attempts if handle else list(attempts or [])) + ([move] if handle else []),
            'state_before': subject.details.get('state_before', subject.state),
            'state_after': state_after if state_after is not None else (status.state if status else None),
            'locked': subject.locked,
            'started': _iso(wall_started) if wall_started else None,
            'finished': _iso(clock.wall()) if outcome != 'planned' else None,
            'seconds': seconds, 'outcome': outcome, 'message': message,
        }
        if handle is not None and handle.deadline_acted:
            entry['deadline_action'] = handle.deadline_acted
        elif handle is not None and handle.data.get('fallback_note'):
            entry['deadline_action'] = 'abort'
        self.servers[subject.id] = entry
        if outcome != 'planned':
            self._progress(entry)

    def _progress(self, entry):
        path = self.request.progress_file
        if not path:
            return
        line = dict(entry, host=self.request.host, done=len(self.servers))
        with open(path, 'a') as stream:
            stream.write(json.dumps(line, sort_keys=True) + '\n')

    def _result(self, changed, plan, capacity, check_mode=False, service_plan=None):
        servers = list(self.servers.values())
        count = self.backend.request_count()
        totals = {
            'moved': sum(1 for s in servers if s['outcome'] == 'moved'),
            'already_done': sum(1 for s in servers if s['outcome'] == 'already_done'),
            'skipped': sum(1 for s in servers if s['outcome'] == 'skipped'),
            'failed': sum(1 for s in servers if s['outcome'] == 'failed'),
            'planned': sum(1 for s in servers if s['outcome'] == 'planned'),
            'seconds': round(self.clock.monotonic() - self.started, 3),
            'api_requests': (count - (self.requests_at_start or 0)) if count is not None else None,
            'max_in_flight': self.max_in_flight, 'window': self.window, 'polls': self.polls,
        }
        result = {
            'changed': changed, 'host': self.request.host, 'mode': self.request.mode, 'plan': plan,
            'capacity': capacity, 'servers': servers, 'totals': totals,
            'service': {'before': self.service_before,
                        'after': self.service_after if not check_mode else self.service_before},
            'backend': self.backend.name, 'location': self.backend.location(),
        }
        if check_mode:
            result['service']['would_change'] = service_plan or {}
        if getattr(self, 'service_restored', False):
            result['service']['restored'] = True
        if getattr(self, 'service_restore_error', None):
            result['service']['restore_error'] = self.service_restore_error
        return result


def _iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + ('.%03dZ' % int((epoch % 1) * 1000))
