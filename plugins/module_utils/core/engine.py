# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Brings one instance to a wanted state through any backend: plan first, then act.

The plan is computed from reads only, so check mode and diff are exact; then
each step is performed and waited on before the next one starts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import time
import traceback

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation, describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, InstanceLocked, InstanceNotFound, InvalidRequest, UnreachableState, VmopsError, WaitTimeout)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.planner import plan_path
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until

# Not a state: "be running, and reboot even if already running".
REBOOTED = 'rebooted'

DEFAULT_SHUTDOWN_TIMEOUT = 120

# Leaving these states for running starts the guest's operating system from scratch
# (a cold start, an unshelve, Nova's unrescue), so `rebooted` needs no extra reboot after it.
BOOTS_AFRESH_FROM = (states.STOPPED, states.SHELVED, states.SHELVED_OFFLOADED, states.RESCUED)

# What the caller wants.
#   identifier:        name or UUID
#   wanted:            a state of states.TARGET_STATES, or REBOOTED
#   hard:              use forced transitions (power off without asking the guest)
#   reboot_type:       'soft' or 'hard' (only with REBOOTED)
#   shutdown_timeout:  seconds a graceful stop may take before it counts as failed
#   force_fallback:    after shutdown_timeout, cut the power instead of failing
#   wait, timeout:     wait for the final step, and the budget of the whole run in seconds
#   locked:            None (leave the lock alone), True (lock, last) or False (unlock, first)
#   lock_reason:       the reason recorded with a lock
StateRequest = collections.namedtuple(
    'StateRequest', 'identifier wanted hard reboot_type shutdown_timeout force_fallback wait timeout '
                    'locked lock_reason', defaults=(None, None))


def validate_request(model, request):
    """Refuse bad or contradictory input before anything is contacted."""
    if request.wanted != REBOOTED and not model.supports(request.wanted):
        raise InvalidRequest(
            "The %s backend cannot reach state '%s'; it supports: %s."
            % (model.name, request.wanted, ', '.join(s for s in states.TARGET_STATES if model.supports(s))),
            backend=model.name, wanted=request.wanted)
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)
    if request.shutdown_timeout is not None and request.shutdown_timeout <= 0:
        raise InvalidRequest('shutdown_timeout must be a positive number of seconds, got %s.'
                             % request.shutdown_timeout)
    if request.reboot_type is not None and request.wanted != REBOOTED:
        raise InvalidRequest("reboot_type only applies to state 'rebooted', not to '%s'." % request.wanted)
    if request.hard and request.force_fallback:
        raise InvalidRequest('force_stop_fallback only applies to a graceful stop; stop_method is already hard.')
    if request.hard and request.shutdown_timeout is not None:
        raise InvalidRequest('shutdown_timeout only applies to a graceful stop; stop_method is hard.')
    if request.force_fallback and not request.wait:
        raise InvalidRequest('force_stop_fallback needs wait=true: the fallback starts when a waited-on '
                             'graceful stop times out.')
    if request.locked is not None and not model.has_lock:
        raise InvalidRequest('The %s backend has no lock; leave locked out.' % model.name)
    if request.lock_reason is not None and request.locked is not True:
        raise InvalidRequest('lock_reason needs locked=true.')
    if request.shutdown_timeout is not None and request.shutdown_timeout > request.timeout:
        raise InvalidRequest('shutdown_timeout (%s s) is longer than timeout (%s s), which bounds the whole run.'
                             % (request.shutdown_timeout, request.timeout))


def build_plan(model, observation, request):
    """The transitions that take the observed instance where the request wants it, lock included."""
    steps = _state_plan(model, observation.state, request)
    if not model.has_lock:
        return steps
    locked = bool(observation.details.get('locked'))
    reason = observation.details.get('locked_reason')
    final = steps[-1].target if steps else observation.state
    if locked and steps and request.locked is not False:
        raise InstanceLocked(
            '%s is locked (reason: %s); nothing was done. %s%s.'
            % (observation.name, reason or 'none given',
               observation.details.get('unlock_hint') or 'Set locked=false to unlock it first',
               ' and lock it again afterwards with a second task' if request.locked else ''),
            locked_reason=reason, plan=[edge.verb for edge in steps])
    relock = request.locked is True and locked and request.lock_reason not in (None, reason)
    if locked and (request.locked is False or relock):
        steps = [states.transition('unlock', observation.state, observation.state)] + steps
    if request.locked is True and (not locked or relock):
        steps = steps + [states.transition('lock', final, final)]
    return steps


def _state_plan(model, current, request):
    try:
        return _power_plan(model, current, request)
    except UnreachableState as error:
        if current == states.RESIZE_PENDING:
            error.msg += ' A resize waits for confirm or revert first (vmops.lifecycle.instance_resize).'
        raise


def _power_plan(model, current, request):
    if request.wanted != REBOOTED:
        return plan_path(model, current, request.wanted, hard=request.hard)
    path = plan_path(model, current, states.RUNNING, hard=request.hard)
    if any(edge.source in BOOTS_AFRESH_FROM or edge.verb.startswith('reboot_') for edge in path):
        return path     # the guest boots afresh (or is rebooted) on the way: that is the reboot
    verb = 'reboot_%s' % (request.reboot_type or 'soft')
    action = model.action(verb, states.RUNNING)
    if action is None:
        raise UnreachableState("The %s backend has no %s reboot." % (model.name, request.reboot_type or 'soft'),
                               backend=model.name, current=current, wanted=REBOOTED)
    return path + [action]


def ensure_state(backend, request, check_mode=False, clock=time.monotonic, sleep=time.sleep):
    """Converge one instance; return the module result (changed, instance, diff).

    On failure, raises a VmopsError whose details carry what was done so far.
    """
    model = backend.model
    validate_request(model, request)
    deadline = Deadline(request.timeout, clock=clock)
    backend.bound_by(deadline)
    waits = dict(clock=clock, sleep=sleep)

    ref = backend.find(request.identifier)
    if ref is None:
        if request.wanted == states.ABSENT:
            return _result(backend, None, request, [], [], None, check_mode, deadline)
        raise InstanceNotFound("No instance '%s' at %s." % (request.identifier, backend.location()),
                               identifier=request.identifier, location=backend.location())

    before = backend.observe(ref)
    if before.task:
        # Something else is moving it (a shutdown in progress, a Nova task): plan from where it settles.
        before = wait_until(lambda: backend.observe(ref), lambda o: not o.task, describe,
                            'instance %s to finish %s' % (before.name, before.task), deadline,
                            failure=_error_state, **waits)

    steps = build_plan(model, before, request)
    if check_mode or not steps:
        return _result(backend, before, request, steps, [], before, check_mode, deadline)

    executed = []
    after = None
    try:
        for number, edge in enumerate(steps, start=1):
            final = number == len(steps)
            record = {'verb': edge.verb, 'from': edge.source, 'to': edge.target}
            executed.append(record)     # before acting: a verb sent is a change, even if its wait fails
            after = _run_step(backend, ref, before.name, edge, record, request, deadline,
                              wait=request.wait or not final, waits=waits)
    except VmopsError as error:
        progress = _instance(backend, before, steps, executed, _safe_observe(backend, ref), deadline)
        error.details.setdefault('instance', progress)
        raise
    except Exception as error:  # pylint: disable=broad-except
        # A bug or an unexpected library failure mid-plan: still say what was done and where it stands.
        progress = _instance(backend, before, steps, executed, _safe_observe(backend, ref), deadline)
        raise BackendError('Unexpected error during %s of %s: %s' % (executed[-1]['verb'] if executed else 'the plan',
                                                                     before.name, error),
                           instance=progress, exception=traceback.format_exc())
    if after is None:       # the last step was not waited on: read where it stands now
        after = backend.observe(ref)
    return _result(backend, before, request, steps, executed, after, check_mode, deadline)


def _run_step(backend, ref, name, edge, record, request, deadline, wait, waits):
    """Perform one transition and wait for it, filling in `record` as it goes.

    Returns the observation that ended the wait, or None when not waiting.
    """
    started = time.monotonic()
    extra_check = backend.perform(ref, edge.verb, {'lock_reason': request.lock_reason})
    if not wait:
        record.update(seconds=round(time.monotonic() - started, 3), waited=False)
        return None

    graceful_budget = deadline
    if edge.fallback:
        shutdown_timeout = request.shutdown_timeout or DEFAULT_SHUTDOWN_TIMEOUT
        graceful_budget = Deadline(min(shutdown_timeout, deadline.remaining()), clock=waits['clock'])
    try:
        reached = _wait_for(backend, ref, name, edge, extra_check, graceful_budget, waits)
    except WaitTimeout as timeout:
        if not edge.fallback:
            raise
        if not request.force_fallback:
            timeout.msg += (' The guest did not complete a graceful %s; set force_stop_fallback=true to cut '
                            'the power after shutdown_timeout, or stop_method=hard.' % edge.verb)
            raise
        record['fallback'] = edge.fallback
        record['graceful_seconds'] = round(time.monotonic() - started, 3)
        backend.perform(ref, edge.fallback)
        reached = _wait_for(backend, ref, name, edge, None, deadline, waits)
    record['seconds'] = round(time.monotonic() - started, 3)
    return reached


def _wait_for(backend, ref, name, edge, extra_check, budget, waits):
    def ready(observation):
        return (backend.model.satisfies(observation.state, edge.target) and not observation.task
                and (extra_check is None or extra_check(observation)))

    what = 'instance %s to be %s after %s' % (name, edge.target, edge.verb)
    if extra_check is not None and getattr(extra_check, 'waiting_for', None):
        what += ' (%s)' % extra_check.waiting_for
    # Leaving an error state, the first reads may still say error: that is not a new failure.
    failure = None if edge.source == states.ERROR else _error_state
    return wait_until(lambda: backend.observe(ref), ready, describe, what, budget,
                      failure=failure, **waits)


def _error_state(observation):
    if observation.state == states.ERROR:
        return 'the instance is in error: %s' % (observation.fault or 'no fault message given')
    return None


def _safe_observe(backend, ref):
    """The instance now, or an `unknown` observation when it cannot be read (never `absent`)."""
    try:
        return backend.observe(ref)
    except Exception as error:  # pylint: disable=broad-except
        # Reporting a failure must not fail again.
        return Observation(None, ref, states.UNKNOWN, None, None, {'read_error': str(error)})


def _instance(backend, before, steps, executed, after, deadline):
    seen = after or before
    instance = {
        'name': (after and after.name) or (before and before.name) or None,   # a deleted server has no name left
        'id': seen.id if seen else None,
        'backend': backend.model.name,
        'location': backend.location(),
        'state_before': before.state if before else states.ABSENT,
        'state': after.state if after else states.ABSENT,
        'plan': [edge.verb for edge in steps],
        'executed': executed,
        'elapsed': round(deadline.elapsed(), 3),
        'details': dict(after.details) if after else {},
    }
    if backend.request_count() is not None:
        instance['api_requests'] = backend.request_count()
    return instance


def _result(backend, before, request, steps, executed, after, check_mode, deadline):
    instance = _instance(backend, before, steps, executed, after, deadline)
    state_before = instance['state_before']
    moves = [edge for edge in steps if edge.verb not in ('lock', 'unlock')]
    state_after = moves[-1].target if moves else state_before
    diff_before, diff_after = {'state': state_before}, {'state': state_after}
    if any(edge.verb.startswith('reboot_') for edge in steps):
        diff_after['rebooted'] = True
    if backend.model.has_lock and before is not None:
        diff_before['locked'] = bool(before.details.get('locked'))
        diff_after['locked'] = diff_before['locked'] if request.locked is None else request.locked
    return {
        'changed': bool(steps),
        'instance': instance,
        'diff': {'before': diff_before, 'after': diff_after},
    }
