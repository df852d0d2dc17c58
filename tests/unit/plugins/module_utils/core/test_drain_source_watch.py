# -*- coding: utf-8 -*-
"""The drain core's watch on the host being emptied (move_backend.SourceWatch, drain_window.py): a drain
whose source dies and an evacuation whose host comes back stop sending at once, keep the whole record,
and leave the service as it is.  Fake clock: nothing really sleeps."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import time

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    HOLD, SOURCE_ALIVE, SOURCE_DOWN, SourceWatch)
from ansible_collections.vmops.lifecycle.tests.unit.plugins.module_utils.core.test_moves import (
    FakeCloud, inst, run)


class ScriptedWatch(SourceWatch):
    """Raises its alarm from fake time `alarm_at` on (or from check number `alarm_from_check`)."""

    def __init__(self, clock, reason=SOURCE_DOWN, alarm_at=None, alarm_from_check=None, since=None, every=5.0):
        self.clock = clock
        self.reason = reason
        self.alarm_at = alarm_at
        self.alarm_from_check = alarm_from_check
        self.since = since
        self.every = every
        self.checks = []
        self.faults = 0

    def check(self):
        self.checks.append(self.clock.now)
        if self.faults:
            self.faults -= 1
            raise BackendError('GET /os-services: HTTP 503')
        due = (self.alarm_at is not None and self.clock.now >= self.alarm_at) or \
            (self.alarm_from_check is not None and len(self.checks) >= self.alarm_from_check)
        if due:
            return (self.reason, 'the host changed under the run', self.since)
        return None


class WatchedCloud(FakeCloud):

    def __init__(self, clock, instances, watch, **kwargs):
        super(WatchedCloud, self).__init__(clock, instances, **kwargs)
        self.watch = watch
        self.watch_asked = 0

    def source_watch(self, request):
        self.watch_asked += 1
        return self.watch


def by_id(servers):
    return dict((s['id'], s) for s in servers)


def test_a_drain_whose_source_dies_stops_sending_and_keeps_the_host_disabled(clock):
    watch = ScriptedWatch(clock, alarm_at=clock.now + 12)
    cloud = WatchedCloud(clock, [inst('%02d' % n) for n in range(6)], watch)
    for n in range(6):
        cloud.durations['%02d' % n] = 100.0 if n < 2 else 1.0
    start = clock.now
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=2)
    details = caught.value.details
    servers = by_id(details['servers'])
    assert servers['00']['outcome'] == 'in_flight' and servers['01']['outcome'] == 'in_flight'
    assert all(servers['%02d' % n]['outcome'] == 'not_started' for n in range(2, 6))
    assert [entry[1] for entry in cloud.log if entry[0] == 'start'] == ['00', '01']
    assert details['ended_early']['reason'] == SOURCE_DOWN
    assert 'the host changed under the run' in caught.value.msg
    # Seen at the first check due after the alarm (every 5 s), and the host is left disabled: nothing may land
    # on a dead compute, whatever restore_service_on_failure says.
    assert 12 <= clock.now - start <= 12 + 5 + 0.4
    assert cloud.service['status'] == 'disabled'
    assert ('service', False, None) not in cloud.log
    gaps = [b - a for a, b in zip(watch.checks, watch.checks[1:])]
    assert gaps and min(gaps) >= 5.0 - 1e-9


def test_a_refused_start_is_followed_by_a_check_at_once(clock):
    watch = ScriptedWatch(clock, alarm_from_check=2, every=1000.0)
    cloud = WatchedCloud(clock, [inst('a'), inst('b'), inst('c')], watch)
    cloud.refuse = {'a'}
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=1)
    servers = by_id(caught.value.details['servers'])
    assert servers['a']['outcome'] == 'failed'
    assert servers['b']['outcome'] == 'not_started' and servers['c']['outcome'] == 'not_started'
    assert len(watch.checks) == 2 and watch.checks[0] == watch.checks[1]


def test_an_evacuation_whose_host_comes_back_names_the_moves_sent_after_it(clock):
    since = clock.wall() + 3.0
    watch = ScriptedWatch(clock, reason=SOURCE_ALIVE, alarm_at=clock.now + 6, since=since, every=2.0)
    cloud = WatchedCloud(clock, [inst('%02d' % n) for n in range(8)], watch)
    for n in range(8):
        cloud.durations['%02d' % n] = 2.0
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=2)
    details = caught.value.details
    assert details['ended_early']['reason'] == SOURCE_ALIVE
    servers = details['servers']
    started_late = sorted(s['name'] for s in servers if s['started'] and s['outcome'] != 'not_started'
                          and _epoch(s['started']) >= since)
    assert started_late, 'the scenario must send some moves after the moment the watch dates'
    assert 'sent after that: ' in caught.value.msg
    named = caught.value.msg.split('sent after that: ', 1)[1].split('.')[0].split(', ')
    assert sorted(named) == started_late
    # Nothing more was sent, and the evacuations in flight were followed to their end.
    assert any(s['outcome'] == 'not_started' for s in servers)
    assert details['totals']['in_flight'] == 0
    assert all(s['outcome'] in ('moved', 'not_started') for s in servers)
    assert sorted(s['id'] for s in servers if s['outcome'] == 'moved') == \
        sorted(entry[1] for entry in cloud.log if entry[0] == 'start')
    assert len(watch.checks) == len(set(watch.checks)) and watch.checks[-1] <= clock.now


def test_a_watch_that_cannot_read_is_tried_again_and_the_run_goes_on(clock):
    watch = ScriptedWatch(clock)
    watch.faults = 2
    cloud = WatchedCloud(clock, [inst('%02d' % n) for n in range(4)], watch)
    for n in range(4):
        cloud.durations['%02d' % n] = 6.0
    result = run(cloud, clock, window=2)
    assert result['totals']['moved'] == 4 and len(watch.checks) >= 3


def test_the_watch_is_set_up_after_the_service_change_and_not_in_check_mode(clock):
    watch = ScriptedWatch(clock)
    cloud = WatchedCloud(clock, [inst('a')], watch)
    run(cloud, clock, check_mode=True)
    assert cloud.watch_asked == 0
    run(cloud, clock)
    assert cloud.watch_asked == 1


def test_a_watch_that_cannot_be_set_up_leaves_the_run_unwatched(clock):
    class Refusing(WatchedCloud):
        def source_watch(self, request):
            raise BackendError('GET /os-services: HTTP 500')
    cloud = Refusing(clock, [inst('a'), inst('b')], None)
    result = run(cloud, clock)
    assert result['totals']['moved'] == 2


def _epoch(text):
    whole, fraction = text.rstrip('Z').split('.')
    return calendar.timegm(time.strptime(whole, '%Y-%m-%dT%H:%M:%S')) + int(fraction) / 1000.0


class HoldingWatch(SourceWatch):
    """Says HOLD until fake time `until`, then None; or SOURCE_ALIVE from `alive_at` on."""

    every = 2.0

    def __init__(self, clock, until, alive_at=None):
        self.clock, self.until, self.alive_at = clock, until, alive_at
        self.checks = []

    def check(self):
        self.checks.append(self.clock.now)
        if self.alive_at is not None and self.clock.now >= self.alive_at:
            return (SOURCE_ALIVE, 'the host reports', None)
        if self.clock.now < self.until:
            return (HOLD, 'waiting for silence', None)
        return None


def test_nothing_is_sent_while_the_watch_holds_then_the_run_goes_on(clock):
    start = clock.now
    watch = HoldingWatch(clock, until=clock.now + 9)
    cloud = WatchedCloud(clock, [inst('a'), inst('b')], watch)
    result = run(cloud, clock, window=2)
    assert result['totals']['moved'] == 2
    assert min(s['started'] for s in result['servers']) >= _iso(clock.wall() - (clock.now - start) + 9)
    assert [t - start for t in watch.checks[:6]] == [0, 2, 4, 6, 8, 10]


def test_a_host_found_alive_while_holding_sends_nothing(clock):
    watch = HoldingWatch(clock, until=clock.now + 30, alive_at=clock.now + 5)
    cloud = WatchedCloud(clock, [inst('a'), inst('b')], watch)
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=2)
    assert [entry for entry in cloud.log if entry[0] == 'start'] == []
    assert caught.value.details['totals']['not_started'] == 2
    assert caught.value.details['ended_early']['reason'] == SOURCE_ALIVE


def test_a_hold_past_the_runs_timeout_ends_the_run(clock):
    watch = HoldingWatch(clock, until=clock.now + 10000)
    cloud = WatchedCloud(clock, [inst('a')], watch)
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, timeout=20)
    assert caught.value.details['ended_early']['reason'] == 'timeout'
    assert 'waiting for silence' in caught.value.msg
    assert [entry for entry in cloud.log if entry[0] == 'start'] == []


def _iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + ('.%03dZ' % int((epoch % 1) * 1000))


def test_an_evacuation_evacuates_a_move_it_found_in_flight_once_that_move_ends_without_moving(clock):
    cloud = FakeCloud(clock, [inst('stuck'), inst('plain')])
    cloud.service['state'] = 'down'
    # A drain's live migration stuck on the dead host: it ends (Nova puts the server in ERROR) without moving it.
    cloud.start_move(moves.MoveSubject('stuck', 'vm-stuck', states.RUNNING, None, 'src', False, {}),
                     moves.LIVE, None, None)
    cloud.moving['stuck'].update(ends=clock.now + 20, aborted=True)
    cloud.instances['stuck']['state'] = states.ERROR
    cloud.log = []
    result = run(cloud, clock, mode='evacuate')
    servers = by_id(result['servers'])
    assert ('adopt', 'stuck') in cloud.log and ('start', 'stuck', moves.EVACUATE) in cloud.log
    assert servers['stuck']['outcome'] == 'moved' and servers['stuck']['attempts'] == [moves.ADOPT, moves.EVACUATE]
    assert 'ended without moving it (aborted); evacuated then' in servers['stuck']['message']
    assert cloud.instances['stuck']['host'] == 'dst1' and servers['plain']['outcome'] == 'moved'


def test_a_drain_does_not_evacuate_a_move_it_found_in_flight(clock):
    cloud = FakeCloud(clock, [inst('stuck')])
    cloud.start_move(moves.MoveSubject('stuck', 'vm-stuck', states.RUNNING, None, 'src', False, {}),
                     moves.LIVE, None, None)
    cloud.moving['stuck'].update(ends=clock.now + 5, aborted=True)
    cloud.log = []
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock)
    assert [entry for entry in cloud.log if entry[0] == 'start'] == []
    assert by_id(caught.value.details['servers'])['stuck']['outcome'] == 'failed'
