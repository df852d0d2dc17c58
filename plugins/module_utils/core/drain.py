# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One drain or evacuation, start to end: read, plan, (check mode stops), disable, drive the window, report.

The parts: DrainPlan (drain_plan.py), HostService (drain_service.py), Window (drain_window.py) and
DrainRecord (drain_record.py).  This file puts them in order and turns the record into the result, or
into the VmopsError of a failed run, whose details hold the same result: every instance's outcome, the
totals, `changed`, the service, and `ended_early` when the run stopped before every move ended.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_plan import DrainPlan
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_record import DrainRecord
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_request import validate_request
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_service import HostService
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_window import (
    ERROR, SOURCE_REASONS, RunEnded, Window)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import SKIP, UNMOVABLE


class Clock(object):
    def __init__(self, monotonic=time.monotonic, sleep=time.sleep, wall=time.time):
        self.monotonic, self.sleep, self.wall = monotonic, sleep, wall


def run(backend, request, check_mode=False, clock=None):
    """Drain or evacuate `request.host`; returns the module result (raises VmopsError with the whole
    result in its details on failure)."""
    validate_request(request, backend.name)
    return DrainRun(backend, request, clock or Clock()).go(check_mode)


class DrainRun(object):

    def __init__(self, backend, request, clock):
        self.backend = backend
        self.request = request
        self.clock = clock
        self.started = clock.monotonic()
        self.requests_at_start = backend.request_count()
        self.service = HostService(backend, request, clock)
        self.record = DrainRecord(request, clock)
        self.window = Window(backend, request, clock, self.record, self.started + request.timeout)
        self.released_locks = []
        self.reserved = None     # what was done to the reserved host (OpenStack: enabled, aggregates joined)
        self.not_on_host = []

    def go(self, check_mode):
        request, backend = self.request, self.backend
        self.service.read()
        subjects = backend.list_on_host(request.host)
        changes = self.service.planned_changes()
        self.not_on_host = instances_not_on_host(backend, request, subjects, changes)
        backend.check_targets(request)
        plan = DrainPlan(backend, request, subjects)
        movers = plan.movers()
        capacity = backend.capacity(request.host, [item.subject for item in movers]) if movers else []
        plan.refuse_if_asked(capacity)
        if check_mode:
            for item in plan.items:
                outcome = {SKIP: 'skipped', UNMOVABLE: 'failed'}.get(item.decision.move, 'planned')
                self.record.add(item.subject, item.decision.move, outcome=outcome,
                                message=item.decision.reason or item.decision.note,
                                to=request.target_for(item.subject) if outcome == 'planned' else None)
            self.reserved = backend.prepare_reserved_host(request, check_mode=True) if movers else None
            return self._result(bool(movers) or bool(changes) or bool((self.reserved or {}).get('changes')),
                                plan, capacity, check_mode=True, would_change=changes)
        for item in plan.items:     # nothing is sent for these; the others still move
            if item.decision.move in (SKIP, UNMOVABLE):
                # A backend may say where a skipped instance already is (an earlier run moved it): (host, state).
                where, state = item.subject.details.get('now_on') or (item.subject.host, item.subject.state)
                self.record.add(item.subject, item.decision.move, outcome='skipped' if item.decision.move == SKIP
                                else 'failed', message=item.decision.reason, state_after=state, to=where)
        self.window.load(movers)
        failure = None
        try:
            self.released_locks = backend.release_stale_locks(request.host)
            self.service.apply(changes)
            if movers and request.reserved_host:
                self.reserved = backend.prepare_reserved_host(request, check_mode=False)
                request.target_host = request.reserved_host
            self.window.watch = self._source_watch()
            self.window.drive()
        except RunEnded as ended:
            failure = ended
        except VmopsError as error:     # the service could not be changed: no move was sent
            failure = self.window.end(ERROR, 'changing the service of %s failed: %s' % (request.host, error.msg), error)
        except Exception as error:  # a bug or a library failure: still undo the service change
            failure = error
        # A move refused because a host could not be reached was never sent: not_started, and the run failed.
        failed = self.record.with_outcome('failed') + self.record.with_outcome('not_started')
        # A dead source stays disabled (nothing may land on it), and so does a live host left half evacuated.
        host_changed_under_us = isinstance(failure, RunEnded) and failure.reason in SOURCE_REASONS
        if (failure is not None or failed) and request.restore_service_on_failure and self.service.disabled_by_us \
                and not host_changed_under_us:
            self.service.restore()
        result = self._result(self.record.sent_anything() or self.service.changed or bool(self.released_locks)
                              or bool((self.reserved or {}).get('changes')), plan, capacity)
        if failure is not None and not isinstance(failure, VmopsError):
            raise failure
        if failure is not None or failed:
            if failure is not None:
                result['ended_early'] = dict(failure.details, message=failure.msg)
            raise VmopsError(self._failure_message(failure, failed, len(movers) + len(plan.unmovable())), **result)
        return result

    def _source_watch(self):
        """The backend's watch on the host being emptied; a watch that cannot be set up is left out (the
        run's own reads still see an outage) rather than failing a run that changed the service already."""
        try:
            return self.backend.source_watch(self.request)
        except VmopsError:
            return None

    def _failure_message(self, ended, failed, planned):
        host = self.request.host
        if ended is None:
            message = '%d of %d instances failed to move off %s: %s' % (
                len(failed), planned, host, '; '.join('%s: %s' % (s['name'], s['message']) for s in failed))
            unsent = [entry for entry in failed if entry['outcome'] == 'not_started']
            if unsent:
                message += ' (%d of them not started)' % len(unsent)
        else:
            counts = self.record.counts()
            said = ['%d moved' % (counts['moved'] + counts['already_done'])]
            if counts['in_flight']:
                said.append('%d still in flight (they go on in the backend; a rerun adopts them)' % counts['in_flight'])
            if counts['not_started']:
                said.append('%d not started' % counts['not_started'])
            failed = [entry for entry in failed if entry['outcome'] == 'failed']
            if failed:
                reasons = '; '.join('%s: %s' % (s['name'], s['message']) for s in failed)
                said.append('%d failed (%s)' % (len(failed), reasons))
            message = 'The run on %s ended early: %s. %s.' % (host, ended.msg, ', '.join(said))
        if self.service.still_disabled():
            message += (' The host %s is still disabled: enabling its service again failed (%s). Enable it with %s.'
                        % (host, self.service.restore_error, self.service.remedy()))
        return message

    def _result(self, changed, plan, capacity, check_mode=False, would_change=None):
        record, window = self.record, self.window
        count = self.backend.request_count()
        counts = record.counts()
        totals = dict((outcome, counts[outcome]) for outcome in (
            'moved', 'already_done', 'skipped', 'failed', 'in_flight', 'not_started', 'planned'))
        totals.update({
            'seconds': round(self.clock.monotonic() - self.started, 3),
            'api_requests': (count - (self.requests_at_start or 0)) if count is not None else None,
            'max_in_flight': window.max_in_flight, 'window': window.size, 'polls': window.polls,
            'failed_polls': window.failed_polls,
        })
        service = self.service.report(check_mode, would_change)
        disks = dict((item.subject.id, item.entry['disk']) for item in plan.items if 'disk' in item.entry)
        servers = [dict(entry, disk=disks[entry['id']]) if entry['id'] in disks else entry
                   for entry in record.servers.values()]
        return {
            'diff': run_diff(self.request, plan, record, service, check_mode),
            'reserved_host': self.reserved,
            'changed': changed, 'host': self.request.host, 'mode': self.request.mode, 'plan': plan.entries(),
            'capacity': capacity, 'servers': servers, 'totals': totals,
            'service': service,
            'backend': self.backend.name, 'location': self.backend.location(),
            'released_locks': self.released_locks, 'not_on_host': self.not_on_host,
        }


def instances_not_on_host(backend, request, subjects, service_changes):
    """The named instances that are not on the host, each with where it is ({ref, host}), refused before anything
    changes when one does not exist at all, or is on another host while the run would change the host's service
    (a typo; a rerun after the instance was moved changes nothing on the service and only lists it).  An instance
    with no host (shelved offloaded) is only listed."""
    named = list(request.instances or [])
    named.extend(ref for ref in sorted(request.destinations or {}) if ref not in named)
    if not named:
        return []
    known = set()
    for subject in subjects:
        known.update((subject.id, subject.name))
    elsewhere, refused = [], []
    for ref in named:
        if ref in known:
            continue
        found = backend.locate(ref)
        entry = {'instance': ref, 'host': found.get('host') if found else None, 'exists': found is not None}
        elsewhere.append(entry)
        if found is None:
            refused.append('%s (no such instance)' % ref)
        elif found.get('host') and service_changes:
            refused.append('%s (it is on %s)' % (ref, found['host']))
    if refused:
        raise InvalidRequest(
            'Nothing was changed: instances (or destinations) names %s, not on %s (instances there: %s). Name only instances of '
            'that host; one moved off it by an earlier run is done and can be left out.'
            % ('; '.join(refused), request.host, ', '.join(sorted(s.name or s.id for s in subjects)) or 'none'),
            not_on_host=elsewhere)
    return elsewhere


def run_diff(request, plan, record, service, check_mode):
    """before/after: the host's service and where each instance is (check mode: where it would go)."""
    def service_view(body):
        if not body:
            return None
        return dict((key, body.get(key)) for key in ('status', 'state', 'forced_down', 'disabled_reason'))
    before = {'service': service_view(service.get('before')), 'instances': {}}
    after_service = dict(service_view(service.get('before')) or {}, **dict(
        ('status' if key == 'disabled' else 'disabled_reason' if key == 'reason' else key,
         ('disabled' if value else 'enabled') if key == 'disabled' else value)
        for key, value in (service.get('would_change') or {}).items())) if check_mode and service.get('before') \
        else service_view(service.get('after'))
    after = {'service': after_service, 'instances': {}}
    for item in plan.items:
        label = '%s (%s)' % (item.subject.name, item.subject.id)
        before['instances'][label] = {'host': item.subject.host, 'state': item.subject.state}
        entry = record.servers.get(item.subject.id) or {}
        if check_mode:
            moving = entry.get('outcome') == 'planned'
            target = request.reserved_host or request.target_for(item.subject) or 'chosen by the scheduler'
            after['instances'][label] = {'host': target if moving else item.subject.host,
                                         'state': item.subject.state}
        else:
            after['instances'][label] = {'host': entry.get('to') or item.subject.host,
                                         'state': entry.get('state_after') or item.subject.state}
    return {'before': before, 'after': after}
