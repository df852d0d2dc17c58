# -*- coding: utf-8 -*-
"""The heartbeat watch of an OpenStack drain or evacuation (openstack/heartbeat.py), and what a drain does
with a server Nova put in ERROR mid-move (openstack/moves.py _clear_error); fakes, no network."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

pytest.importorskip('openstack')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (  # noqa: E402
    SOURCE_ALIVE, SOURCE_DOWN)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import heartbeat  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import moves as om  # noqa: E402
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeCloud  # noqa: E402

T0 = 1796300000.0       # a moment in the cloud's clock


def stamp(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%S.000000', time.gmtime(epoch))


class Service(object):
    """A service record whose heartbeat and state the test moves; read() as heartbeat.service_reader gives it."""

    def __init__(self, beat=T0, state='up', forced_down=False, offset=0.0):
        self.beat, self.state, self.forced_down, self.offset = beat, state, forced_down, offset
        self.reads = 0

    def read(self):
        self.reads += 1
        return ({'host': 'fake1', 'state': self.state, 'forced_down': self.forced_down,
                 'updated_at': stamp(self.beat)}, self.offset)


class Now(object):
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_a_drain_goes_on_while_the_source_reports_and_stops_once_it_is_silent():
    service, now = Service(), Now(T0 + 2)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'drain', clock=now)
    assert watch.every == 5.0
    for step in range(1, 6):                 # a heartbeat every 10 s
        service.beat = T0 + 10 * step
        now.now = service.beat + 4
        assert watch.check() is None
    now.now = service.beat + 30              # silent for exactly 30 s: not yet
    assert watch.check() is None
    now.now = service.beat + 31
    reason, message, since = watch.check()
    assert reason == SOURCE_DOWN and since is None
    assert 'fake1 looks dead' in message and 'no heartbeat for 31 s' in message
    assert 'The drain stopped sending' in message and 'mode=evacuate' in message


def test_a_drain_stops_at_once_when_nova_reports_the_source_down():
    service, now = Service(), Now(T0 + 1)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'drain', clock=now)
    service.state = 'down'
    reason, message, _since = watch.check()
    assert reason == SOURCE_DOWN and 'Nova reports its service down' in message


def test_a_cloud_that_reports_less_often_gets_a_longer_silence():
    service, now = Service(), Now(T0)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'drain', clock=now)
    service.beat = T0 + 20
    now.now = T0 + 21
    assert watch.check() is None
    now.now = service.beat + 55              # 3 x the 20 s gap seen = 60 s
    assert watch.check() is None
    now.now = service.beat + 61
    assert watch.check()[0] == SOURCE_DOWN


def test_the_heartbeat_is_aged_in_the_cloud_clock():
    service, now = Service(offset=-3600.0), Now(T0 + 3600 + 5)   # this machine runs an hour ahead
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'drain', clock=now)
    assert watch.check() is None
    service.offset = None       # no Date header: the last known offset is used
    assert watch.check() is None


def test_an_evacuation_stops_when_the_heartbeat_moves_and_dates_it_in_this_machines_clock():
    service, now = Service(state='down', forced_down=True, offset=-10.0), Now(T0 + 50)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'evacuate', clock=now)
    assert watch.every == 2.0
    assert watch.check() is None             # forced down, no heartbeat: the fencing holds
    service.beat = T0 + 45
    reason, message, since = watch.check()
    assert reason == SOURCE_ALIVE and since == T0 + 45 + 10.0
    assert 'nova-compute on fake1 is running' in message and 'heartbeat moved' in message
    assert 'Power the host off' in message


def test_an_evacuation_stops_before_the_first_heartbeat_when_the_host_cleans_up_evacuated_instances():
    service, cleaned = Service(state='down', forced_down=True), []
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'evacuate', clock=Now(T0 + 40),
                                       completed_evacuations=lambda: cleaned)
    cleaned.append(('uuid-old', T0 - 100))        # an earlier run's, before the service was forced down
    assert watch.check() is None
    cleaned.extend([('uuid-1', T0 + 7), ('uuid-2', T0 + 8)])
    reason, message, since = watch.check()
    assert reason == SOURCE_ALIVE and since == T0 + 7
    assert 'removed its copy of 2 evacuated instance(s)' in message


def test_the_shared_read_keeps_the_evacuations_the_source_completed():
    cloud = FakeCloud({('GET', '/os-migrations'): {'migrations': [
        {'id': 1, 'instance_uuid': 'a', 'migration_type': 'evacuation', 'status': 'done', 'updated_at': stamp(T0)},
        {'id': 2, 'instance_uuid': 'b', 'migration_type': 'evacuation', 'status': 'completed',
         'updated_at': stamp(T0 + 3)},
        {'id': 3, 'instance_uuid': 'c', 'migration_type': 'live-migration', 'status': 'completed',
         'updated_at': stamp(T0 + 4)}]}})
    backend = om.OpenStackMoves({}, backend=cloud)
    backend.records.host = 'fake1'
    backend.records.latest()
    backend.records.latest()
    assert backend.records.completed_evacuations == [('b', T0 + 3)]


def test_an_evacuation_of_a_host_not_forced_down_stops_when_nova_reports_it_up():
    service = Service(state='down')
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'evacuate', clock=Now(T0 + 40))
    assert watch.check() is None
    service.state = 'up'
    assert watch.check()[0] == SOURCE_ALIVE


def test_an_evacuation_holds_until_the_host_was_silent_long_enough_and_then_goes():
    # The run's own force-down moved updated_at to T0 + 20; before it, the host last reported at T0.
    service, now = Service(beat=T0 + 20, state='down', forced_down=True), Now(T0 + 21)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'evacuate', clock=now, heard_before=T0)
    reason, message, since = watch.check()
    assert reason == 'hold' and since is None and 'silent for 30 s' in message and 'written 21 s ago' in message
    now.now = T0 + 31
    assert watch.check() is None
    now.now = T0 + 5000                      # proven once: no more holds
    assert watch.check() is None


def test_a_host_that_reports_while_the_evacuation_holds_is_found_alive_before_anything_is_sent():
    service, now = Service(beat=T0 + 2, state='down', forced_down=True), Now(T0 + 3)
    watch = heartbeat.ServiceHeartbeat(service.read, 'fake1', 'evacuate', clock=now, heard_before=T0)
    assert watch.check()[0] == 'hold'
    service.beat = T0 + 10
    now.now = T0 + 11
    assert watch.check()[0] == SOURCE_ALIVE


def test_the_backend_reads_the_service_once_per_check():
    cloud = FakeCloud({('GET', '/os-services'): {'services': [
        {'host': 'fake1', 'binary': 'nova-compute', 'state': 'up', 'forced_down': False,
         'updated_at': stamp(T0)}]}})
    cloud.compute.date = 'Mon, 30 Nov 2026 10:00:00 GMT'
    backend = om.OpenStackMoves({}, backend=cloud)
    watch = backend.source_watch(moves.MoveRequest(host='fake1'))
    watch.check()
    sent = [s for s in cloud.compute.sent if s[1] == '/os-services']
    assert len(sent) == 2 and cloud.compute.params[-1] == {'host': 'fake1', 'binary': 'nova-compute'}


# --- a server Nova put in ERROR mid-move

def error_server(host='fake1', power=1, task=None):
    return {'id': 'id-1', 'name': 'vm1', 'status': 'ERROR', 'OS-EXT-SRV-ATTR:host': host,
            'OS-EXT-STS:task_state': task, 'OS-EXT-STS:vm_state': 'error', 'OS-EXT-STS:power_state': power,
            'fault': {'message': 'MessagingTimeout'}}


def failed_live_move(body, state=states.RUNNING):
    backend = om.OpenStackMoves({}, backend=FakeCloud({('GET', '/servers/id-1'): {'server': dict(
        body, status='ACTIVE', **{'OS-EXT-STS:vm_state': 'active'})}}))
    subject = moves.MoveSubject('id-1', 'vm1', state, None, 'fake1', False, {})
    handle = backend.start_move(subject, moves.LIVE, None, moves.MoveRequest(host='fake1'))
    status = backend._status_of(handle, body)
    assert status.failed and 'went into ERROR: MessagingTimeout' in status.message
    return backend, backend.finish(handle, status)


def test_a_running_server_left_in_error_on_the_source_is_reset_to_active():
    backend, final = failed_live_move(error_server())
    assert backend.backend.compute.sent[-1][2] == {'os-resetState': {'state': 'active'}}
    assert final.failed and final.state == states.RUNNING
    assert 'its guest was still running on fake1, so it was reset to active: a rerun moves it' in final.message
    assert '(undone: reset to active)' in final.message


@pytest.mark.parametrize('body, state', [
    (error_server(power=4), states.RUNNING),           # its guest is not running
    (error_server(host='fake2'), states.RUNNING),      # it is not on the source
    (error_server(task='migrating'), states.RUNNING),  # something is still in progress
    (error_server(power=3), states.PAUSED),            # it was paused: a reset to active would lie
])
def test_any_other_server_in_error_is_left_as_nova_set_it_with_what_to_do(body, state):
    backend, final = failed_live_move(body, state)
    assert all(s[2] != {'os-resetState': {'state': 'active'}} for s in backend.backend.compute.sent)
    assert final.failed and 'left in ERROR' in final.message and 'openstack server set --state active' in final.message
