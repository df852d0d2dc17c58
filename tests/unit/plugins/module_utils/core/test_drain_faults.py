# -*- coding: utf-8 -*-
"""The drain core under API faults (core/drain_window.py, drain_service.py, drain.py): failed shared reads
within and past retry_budget, a start refused because the API is down, a service that cannot be enabled
again; every run that ends early still reports every instance.  Fake clock: nothing really sleeps."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import drain, moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, ConnectionFailed, InvalidRequest, RequestFailed, ServiceUnavailable, VmopsError)
from ansible_collections.vmops.lifecycle.tests.unit.plugins.module_utils.core.test_moves import (
    FakeCloud, inst, run)


def unavailable(what='GET /os-migrations', sent='maybe'):
    method, path = what.split(' ', 1)
    return ServiceUnavailable('compute request %s failed: HTTP 503 Service Unavailable. Still failing after 60.0 s '
                              '(retry_budget 60 s).' % what, service='compute', method=method, path=path,
                              http_status=503, service_message='Service Unavailable', attempts=7, sent=sent)


class FaultyCloud(FakeCloud):
    """FakeCloud whose API can fail: the shared read from `down_from` (until `down_until`), or the next
    `poll_faults`; a start per instance; enabling the service again.  Moves carry a migration id, and
    abandoning one releases a lock (as Nova's backend does)."""

    def __init__(self, clock, instances, **kwargs):
        super(FaultyCloud, self).__init__(clock, instances, **kwargs)
        self.poll_faults = []       # errors raised by the next polls, one each
        self.down_from = None       # polls at or after this time fail ...
        self.down_until = None      # ... until this time (None: never recover)
        self.start_faults = {}      # instance id -> error raised by its start_move
        self.enable_faults = 0      # how many set_service(disabled=False) calls fail
        self.disable_fault = None   # error raised by set_service(disabled=True)
        self.polled_at = []

    def _down(self):
        now = self.clock.now
        return self.down_from is not None and now >= self.down_from and (self.down_until is None or
                                                                         now < self.down_until)

    def poll(self, handles):
        self.polled_at.append(self.clock.now)
        if self.poll_faults:
            self.requests += 1
            raise self.poll_faults.pop(0)
        if self._down():
            self.requests += 1
            raise unavailable()
        return super(FaultyCloud, self).poll(handles)

    def start_move(self, subject, move, target_host, options):
        if subject.id in self.start_faults:
            self.requests += 1
            raise self.start_faults[subject.id]
        handle = super(FaultyCloud, self).start_move(subject, move, target_host, options)
        handle.data['migration_id'] = 'mig-%s' % subject.id
        return handle

    def set_service(self, host, disabled=None, reason=None, forced_down=None):
        if disabled is False and self.enable_faults:
            self.enable_faults -= 1
            self.requests += 1
            self.log.append(('service failed', disabled))
            raise unavailable('PUT /os-services/s1')
        if disabled and self.disable_fault is not None:
            self.requests += 1
            raise self.disable_fault
        return super(FaultyCloud, self).set_service(host, disabled=disabled, reason=reason, forced_down=forced_down)

    def abandon(self, handle, message):
        if self._down():
            raise unavailable('POST /servers/%s/action' % handle.id)
        self.log.append(('abandon', handle.id))
        return '%s (undone: unlock)' % message


def by_id(servers):
    return dict((s['id'], s) for s in servers)


# --- failed shared reads

def test_reads_failing_for_a_while_then_recovering_the_drain_completes(clock):
    cloud = FaultyCloud(clock, [inst(str(n)) for n in range(5)])
    cloud.poll_faults = [unavailable(), RequestFailed('compute refused GET /os-migrations (HTTP 500): boom',
                                                      http_status=500, sent='yes'),
                         ConnectionFailed('connection reset'), BackendError('odd answer'), unavailable()]
    result = run(cloud, clock, retry_budget=60)
    assert result['totals']['moved'] == 5 and result['totals']['failed'] == 0
    assert all(s['outcome'] == 'moved' for s in result['servers'])
    assert all(i['host'] == 'dst1' for i in cloud.instances.values())
    assert result['totals']['failed_polls'] == 5 and result['changed'] is True
    assert 'ended_early' not in result and cloud.service['status'] == 'disabled'
    # Each failed read is tried again on the next cycle, at the same fixed rate.
    gaps = [round(b - a, 3) for a, b in zip(cloud.polled_at, cloud.polled_at[1:])]
    assert set(gaps) == {0.4}


def test_reads_failing_past_the_budget_end_the_run_with_the_whole_record(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b'), inst('c'), inst('d'), inst('e', 'error')])
    cloud.durations.update({'a': 0.2, 'b': 100.0, 'c': 100.0})
    cloud.down_from = clock.now + 0.5       # after the first read: a has moved, c just started
    start = clock.now
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, retry_budget=10)
    details = caught.value.details
    servers = by_id(details['servers'])
    assert servers['a']['outcome'] == 'moved' and servers['a']['to'] == 'dst1'
    for iid in ('b', 'c'):
        assert servers[iid]['outcome'] == 'in_flight' and servers[iid]['migration_id'] == 'mig-%s' % iid
        assert 'a rerun adopts it' in servers[iid]['message']
    assert servers['d']['outcome'] == 'not_started' and servers['d']['seconds'] is None
    assert servers['e']['outcome'] == 'skipped'
    assert [e for e in cloud.log if e[0] == 'start' and e[1] == 'd'] == []
    totals = details['totals']
    assert (totals['moved'], totals['in_flight'], totals['not_started'], totals['skipped'], totals['failed']) == \
        (1, 2, 1, 1, 0)
    assert details['changed'] is True
    assert details['ended_early']['reason'] == 'reads_failing'
    assert details['ended_early']['error']['http_status'] == 503
    # Ended once reads had failed for longer than the budget, not before, and not much after.
    assert 10 < clock.now - cloud.down_from <= 10 + 2 * 0.4 and clock.now - start < 12
    assert totals['failed_polls'] == len([t for t in cloud.polled_at if t >= cloud.down_from])
    message = caught.value.msg
    assert 'ended early' in message and 'retry_budget 10 s' in message
    assert '1 moved' in message and '2 still in flight' in message and '1 not started' in message
    # The first undo met the dead API; the second was not tried.
    assert 'undo failed' in servers['b']['message'] and 'not undone' in servers['c']['message']


def test_budget_zero_ends_the_run_at_the_first_failed_read(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b'), inst('c')])
    cloud.poll_faults = [unavailable()]
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, retry_budget=0)
    details = caught.value.details
    assert details['totals']['failed_polls'] == 1 and details['totals']['polls'] == 0
    outcomes = dict((s['id'], s['outcome']) for s in details['servers'])
    assert outcomes == {'a': 'in_flight', 'b': 'in_flight', 'c': 'not_started'}
    assert details['ended_early']['reason'] == 'reads_failing' and details['changed'] is True


def test_deadline_past_during_an_outage_is_acted_on_after_a_good_read(clock):
    cloud = FaultyCloud(clock, [inst('slow')])
    cloud.durations['slow'] = 100.0
    cloud.down_from, cloud.down_until = clock.now + 1, clock.now + 20     # the deadline (5 s) passes in it
    result = run(cloud, clock, deadline=5, retry_budget=60)
    abort_at = [t for t in cloud.polled_at if t >= cloud.down_until][0]
    assert ('abort', 'slow') in cloud.log
    server = result['servers'][0]
    # Aborted after the outage (not given up at once for having passed two deadlines), then moved cold.
    assert server['outcome'] == 'moved' and server['attempts'] == ['live', 'cold']
    assert abort_at >= cloud.down_until and result['totals']['failed_polls'] > 0


def test_the_run_timeout_leaves_moves_in_flight_and_the_rest_not_started(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b'), inst('c')])
    cloud.durations.update({'a': 100.0, 'b': 100.0})
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, timeout=3, deadline=50)
    details = caught.value.details
    outcomes = dict((s['id'], s['outcome']) for s in details['servers'])
    assert outcomes == {'a': 'in_flight', 'b': 'in_flight', 'c': 'not_started'}
    assert details['ended_early']['reason'] == 'timeout' and 'timed out after 3 s' in caught.value.msg
    assert ('abandon', 'a') in cloud.log and ('abandon', 'b') in cloud.log
    assert by_id(details['servers'])['c']['message'] == 'not started: the run timed out after 3 s'
    assert details['service']['restored'] is True and cloud.service['status'] == 'enabled'


# --- starting moves while the API is down

def test_start_refused_because_the_api_is_down_ends_the_run(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b'), inst('c'), inst('d')])
    cloud.start_faults['b'] = unavailable('POST /servers/b/action', sent='no')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=1)
    details = caught.value.details
    outcomes = dict((s['id'], s['outcome']) for s in details['servers'])
    assert outcomes == {'a': 'moved', 'b': 'not_started', 'c': 'not_started', 'd': 'not_started'}
    assert [e[1] for e in cloud.log if e[0] == 'start'] == ['a']     # c and d were not tried one by one
    assert details['ended_early']['reason'] == 'api_unavailable'
    assert details['totals']['not_started'] == 3 and details['changed'] is True
    assert '3 not started' in caught.value.msg and cloud.service['status'] == 'enabled'


def test_start_that_may_have_reached_the_api_is_reported_and_counts_as_a_change(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b')])
    cloud.start_faults['a'] = unavailable('POST /servers/a/action', sent='maybe')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=1, disable=False)
    details = caught.value.details
    servers = by_id(details['servers'])
    assert servers['a']['outcome'] == 'failed' and 'may have started' in servers['a']['message']
    assert servers['b']['outcome'] == 'not_started'
    assert details['changed'] is True     # nothing else was sent: the maybe-sent move alone makes it a change


def test_other_start_refusals_stay_per_instance(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b'), inst('c')])
    cloud.start_faults['b'] = RequestFailed('compute refused POST /servers/b/action (HTTP 409): locked',
                                            http_status=409, sent='yes')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=1)
    outcomes = dict((s['id'], s['outcome']) for s in caught.value.details['servers'])
    assert outcomes == {'a': 'moved', 'b': 'failed', 'c': 'moved'}
    assert 'ended_early' not in caught.value.details


# --- the service

def test_service_that_cannot_be_enabled_again_is_reported_still_disabled(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b')])
    cloud.durations['b'] = 100.0
    cloud.down_from = clock.now + 0.5
    cloud.enable_faults = 1000
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, retry_budget=10)
    service = caught.value.details['service']
    assert service['still_disabled'] is True and 'Service Unavailable' in service['restore_error']
    assert service['remedy'] == ('vmops.lifecycle.host_service host=src state=enabled (or: openstack compute '
                                 'service set --enable src nova-compute)')
    assert 'restored' not in service and cloud.service['status'] == 'disabled'
    assert 'The host src is still disabled' in caught.value.msg and 'host_service host=src' in caught.value.msg
    # Tried again within the budget (10 s): 3 tries, 2 s then 4 s apart; the request layer also retries each.
    assert service['restore_tries'] == 3 and len([e for e in cloud.log if e[0] == 'service failed']) == 3


def test_service_restore_recovering_on_a_later_try(clock):
    cloud = FaultyCloud(clock, [inst('a')])
    cloud.start_faults['a'] = BackendError('refused live of vm-a')
    cloud.enable_faults = 1
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock)
    service = caught.value.details['service']
    assert service['restored'] is True and 'still_disabled' not in service and cloud.service['status'] == 'enabled'
    assert 'still disabled' not in caught.value.msg


def test_service_restore_with_no_budget_is_tried_once(clock):
    cloud = FaultyCloud(clock, [inst('a')])
    cloud.start_faults['a'] = BackendError('refused live of vm-a')
    cloud.enable_faults = 1000
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, retry_budget=0)
    service = caught.value.details['service']
    assert service['still_disabled'] is True and service['restore_tries'] == 1
    assert '1 of 1 instances failed to move off src' in caught.value.msg and 'still disabled' in caught.value.msg


def test_disable_failing_sends_no_move(clock):
    cloud = FaultyCloud(clock, [inst('a'), inst('b')])
    cloud.disable_fault = RequestFailed('compute refused PUT /os-services/s1 (HTTP 403): forbidden',
                                        http_status=403, sent='yes')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock)
    details = caught.value.details
    assert [s['outcome'] for s in details['servers']] == ['not_started', 'not_started']
    assert details['changed'] is False and details['ended_early']['reason'] == 'error'
    assert 'forbidden' in caught.value.msg and [e for e in cloud.log if e[0] == 'start'] == []


def test_disable_that_may_have_taken_effect_is_undone(clock):
    cloud = FaultyCloud(clock, [inst('a')])
    cloud.disable_fault = unavailable('PUT /os-services/s1')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock)
    assert caught.value.details['changed'] is True
    assert caught.value.details['service']['restored'] is True and ('service', False, None) in cloud.log


# --- the request and the facade

def test_retry_budget_validated():
    request = moves.MoveRequest(host='src', retry_budget=-1)
    with pytest.raises(InvalidRequest) as caught:
        moves.validate_request(request)
    assert 'retry_budget' in caught.value.msg
    assert moves.MoveRequest(host='src').retry_budget == 60 and moves.MoveRequest(retry_budget=0).retry_budget == 0


def test_moves_keeps_its_public_names():
    assert moves.run is drain.run and moves._Clock is drain.Clock
    for name in ('MoveRequest', 'MoveHandle', 'MoveStatus', 'MoveSubject', 'Decision', 'MoveBackend',
                 'policy_decision', 'validate_request', 'run', 'LIVE', 'COLD', 'EVACUATE', 'OFFLOAD', 'ADOPT',
                 'SKIP', 'FAIL', 'NONE', 'UNMOVABLE', 'MOVES', 'OUTCOMES', 'POLICIES', 'DEADLINE_RETRY_SECONDS'):
        assert hasattr(moves, name), name
    assert set(moves.OUTCOMES) == {'moved', 'already_done', 'skipped', 'failed', 'in_flight', 'not_started'}
