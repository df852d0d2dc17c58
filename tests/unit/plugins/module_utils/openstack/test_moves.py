# -*- coding: utf-8 -*-
"""The Nova side of host_evacuate / host_service: step machine, statuses and service control,
against a recorded fake of the compute API (no network)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytest.importorskip('openstack')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import migrations as mig  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import moves as om  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import services  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest  # noqa: E402
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeClock, FakeCloud  # noqa: E402


def subject(state=states.RUNNING, locked=False, host='fake1'):
    return moves.MoveSubject('id-1', 'vm1', state, None, host, locked, {})


def server(status='ACTIVE', host='fake2', task=None, vm_state='active'):
    return {'id': 'id-1', 'name': 'vm1', 'status': status, 'OS-EXT-SRV-ATTR:host': host,
            'OS-EXT-STS:task_state': task, 'OS-EXT-STS:vm_state': vm_state}


def request(**kwargs):
    return moves.MoveRequest(host='fake1', **kwargs)


def test_live_move_one_request_and_done_on_other_host():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(), moves.LIVE, None, request())
    assert backend.backend.compute.sent == [('POST', '/servers/id-1/action',
                                             {'os-migrateLive': {'host': None, 'block_migration': 'auto'}}, '2.84')]
    assert backend._status_of(handle, server(status='MIGRATING', host='fake1', task='migrating')) is None
    done = backend._status_of(handle, server(host='fake2'))
    assert done.done and not done.failed and done.host == 'fake2'
    assert backend.finish(handle, done) is done


def test_cold_move_confirms_and_waits_for_the_confirm():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(states.STOPPED), moves.COLD, 'fake3', request())
    assert backend.backend.compute.sent[-1][2] == {'migrate': {'host': 'fake3'}}
    verify = backend._status_of(handle, server(status='VERIFY_RESIZE', host='fake3', vm_state='resized'))
    assert verify.done
    step = backend.finish(handle, verify)
    assert not step.done and not step.failed
    assert backend.backend.compute.sent[-1][2] == {'confirmResize': None}
    assert backend._status_of(handle, server(status='VERIFY_RESIZE', host='fake3')) is None
    final = backend._status_of(handle, server(status='SHUTOFF', host='fake3', vm_state='stopped'))
    assert final.done and final.state == states.STOPPED
    assert backend.finish(handle, final) is final


def test_suspended_resume_move_suspend():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(states.SUSPENDED), moves.LIVE, None, request())
    assert handle.data['steps'] == ['resume', 'move', 'suspend']
    assert backend.backend.compute.sent[-1][2] == {'resume': None}
    resumed = backend._status_of(handle, server(host='fake1'))
    assert resumed.done
    assert not backend.finish(handle, resumed).done
    assert 'os-migrateLive' in backend.backend.compute.sent[-1][2]
    moved = backend._status_of(handle, server(host='fake2'))
    assert not backend.finish(handle, moved).done
    assert backend.backend.compute.sent[-1][2] == {'suspend': None}
    final = backend._status_of(handle, server(status='SUSPENDED', host='fake2', vm_state='suspended'))
    assert final.done and backend.finish(handle, final).state == states.SUSPENDED


def test_live_move_back_on_source_is_a_failure_with_nova_reason():
    answers = {('GET', '/servers/id-1/os-instance-actions'): {'instanceActions': [
        {'action': 'live-migration', 'request_id': 'req-1', 'message': 'Error'}]},
        ('GET', '/servers/id-1/os-instance-actions/req-1'): {'instanceAction': {'events': [
            {'event': 'conductor_live_migrate_instance', 'result': 'Error', 'details': 'No valid host was found.'}]}}}
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    handle = backend.start_move(subject(), moves.LIVE, 'fake3', request())
    failed = backend._status_of(handle, server(host='fake1'))
    assert failed.failed and 'No valid host was found' in failed.message


def test_evacuate_locks_and_unlocks_unless_already_locked():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(), moves.EVACUATE, None, request(mode='evacuate'))
    sent = [entry[2] for entry in backend.backend.compute.sent]
    assert sent[0] == {'lock': {'locked_reason': 'vmops.lifecycle:host_evacuate:fake1:%s' % backend.run_id}}
    assert sent[1] == {'evacuate': {}}
    done = backend._status_of(handle, server(host='fake2'))
    assert backend.finish(handle, done).done
    assert backend.backend.compute.sent[-1][2] == {'unlock': None}
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(locked=True), moves.EVACUATE, 'fake2', request(mode='evacuate'))
    assert handle.data['steps'] == ['move']


def test_evacuate_power_state():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    assert backend._steps(subject(states.STOPPED), moves.EVACUATE, request(mode='evacuate')) == \
        ['lock', 'move', 'unlock']
    assert backend._steps(subject(states.RUNNING), moves.EVACUATE, request(mode='evacuate', power_state='stopped',
                                                                           lock_during_move=False)) == ['move', 'stop']


def sent_bodies(backend):
    return [entry[2] for entry in backend.backend.compute.sent]


def test_every_state_is_planned_for_evacuation():
    # Nova evacuates only active, stopped and error servers with no task: any other is reset to error first,
    # then set back to its state where the hypervisor allows it; a pending resize is confirmed first.
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    expected = {
        states.RUNNING: ['lock', 'move', 'unlock'],
        states.STOPPED: ['lock', 'move', 'unlock'],
        states.PAUSED: ['lock', 'reset_state', 'move', 'pause', 'unlock'],
        states.SUSPENDED: ['lock', 'reset_state', 'move', 'suspend', 'unlock'],
        states.RESCUED: ['lock', 'reset_state', 'move', 'unlock'],
        states.RESIZE_PENDING: ['lock', 'confirm', 'move', 'unlock'],
    }
    for state, steps in expected.items():
        decision = backend.plan_move(subject(state), request(mode='evacuate'))
        assert decision.move == moves.EVACUATE, state
        assert backend._steps(subject(state), moves.EVACUATE, request(mode='evacuate')) == steps, state
    assert 'rescue session is lost' in backend.plan_move(subject(states.RESCUED), request(mode='evacuate')).note
    assert 'confirmed' in backend.plan_move(subject(states.RESIZE_PENDING), request(mode='evacuate')).note
    # A stuck task (not a move): reset, evacuate, and its earlier state again.
    stuck = moves.MoveSubject('id-1', 'vm1', states.STOPPED, 'powering-on', 'fake1', False, {})
    assert backend._steps(stuck, moves.EVACUATE, request(mode='evacuate', lock_during_move=False)) == \
        ['reset_state', 'move', 'stop']
    assert 'task powering-on' in backend.plan_move(stuck, request(mode='evacuate')).note
    # power_state overrides the kept state; a shelved server still follows its policy.
    assert backend._steps(subject(states.PAUSED), moves.EVACUATE, request(
        mode='evacuate', power_state='stopped', lock_during_move=False)) == ['reset_state', 'move', 'stop']
    assert backend.plan_move(subject(states.SHELVED), request(mode='evacuate')).move == moves.SKIP
    assert backend.plan_move(subject(states.SUSPENDED), request(mode='evacuate', suspended_policy='skip')).move == \
        moves.SKIP
    assert backend.plan_move(subject(states.RESCUED), request(mode='evacuate', rescued_policy='fail')).move == \
        moves.FAIL


def test_rescued_policy_defaults_by_mode():
    assert request().rescued_policy == 'fail'
    assert request(mode='evacuate').rescued_policy == 'move'


def test_paused_server_reset_evacuated_and_paused_again():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(states.PAUSED), moves.EVACUATE, None, request(mode='evacuate'))
    assert sent_bodies(backend)[1] == {'os-resetState': {'state': 'error'}}
    reset = backend._status_of(handle, server(status='ERROR', host='fake1', vm_state='error'))
    assert reset.done
    assert not backend.finish(handle, reset).done
    assert sent_bodies(backend)[-1] == {'evacuate': {}}
    # ERROR during the rebuild is expected, not a failure
    assert backend._status_of(handle, server(status='ERROR', host='fake1', task='rebuilding', vm_state='error')) is None
    moved = backend._status_of(handle, server(status='ACTIVE', host='fake2'))
    assert moved.done and moved.host == 'fake2'
    assert not backend.finish(handle, moved).done
    assert sent_bodies(backend)[-1] == {'pause': None}
    paused = backend._status_of(handle, server(status='PAUSED', host='fake2', vm_state='paused'))
    final = backend.finish(handle, paused)
    assert final.done and final.state == states.PAUSED and final.host == 'fake2'
    assert sent_bodies(backend)[-1] == {'unlock': None}
    assert 'steps: reset_state, move, pause' in final.message


def test_failed_evacuation_after_a_reset_never_leaves_the_server_in_error():
    body = dict(server(status='ERROR', host='fake1', vm_state='error'), **{'fault': {'message': 'No valid host'}})
    backend = om.OpenStackMoves({}, backend=FakeCloud({('GET', '/servers/id-1'): {'server': body}}))
    handle = backend.start_move(subject(states.SUSPENDED), moves.EVACUATE, None, request(mode='evacuate'))
    backend.finish(handle, backend._status_of(handle, body))      # reset done: evacuation sent
    failed = backend._status_of(handle, body)
    assert failed.failed
    final = backend.finish(handle, failed)
    assert final.failed and final.state == states.RUNNING
    assert sent_bodies(backend)[-2:] == [{'os-resetState': {'state': 'active'}}, {'unlock': None}]
    for text in ('the evacuation failed', 'marked active on fake1', 'run host_evacuate again',
                 'then suspend it (it was suspended)', 'undone: reset to active, unlock'):
        assert text in final.message, final.message


def test_reserved_host_is_enabled_and_joins_the_failed_hosts_aggregates():
    answers = {
        ('GET', '/os-services'): {'services': [
            {'id': 's1', 'host': 'fake1', 'binary': 'nova-compute', 'status': 'disabled', 'state': 'down'},
            {'id': 's4', 'host': 'fake4', 'binary': 'nova-compute', 'status': 'disabled', 'state': 'up',
             'disabled_reason': 'reserved'}]},
        ('GET', '/os-aggregates'): {'aggregates': [
            {'id': 7, 'name': 'ssd', 'hosts': ['fake1', 'fake2']}, {'id': 8, 'name': 'gpu', 'hosts': ['fake3']}]},
        ('PUT', '/os-services/s4'): {'service': {'id': 's4', 'host': 'fake4', 'binary': 'nova-compute',
                                                 'status': 'enabled', 'state': 'up'}},
    }
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    ask = request(mode='evacuate', reserved_host='fake4')
    backend.check_targets(ask)      # disabled is fine for a reserved host
    planned = backend.prepare_reserved_host(ask, check_mode=True)
    assert planned['changes'] == ['enable its nova-compute service', 'join aggregate ssd']
    assert not [entry for entry in backend.backend.compute.sent if entry[0] in ('PUT', 'POST')]
    done = backend.prepare_reserved_host(ask, check_mode=False)
    assert done['service_after']['status'] == 'enabled'
    writes = [(entry[0], entry[1], entry[2]) for entry in backend.backend.compute.sent if entry[0] in ('PUT', 'POST')]
    assert writes == [('PUT', '/os-services/s4', {'status': 'enabled'}),
                      ('POST', '/os-aggregates/7/action', {'add_host': {'host': 'fake4'}})]
    # a target_host must be enabled and up; an unknown one is named with the known ones
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    with pytest.raises(InvalidRequest) as caught:
        backend.check_targets(request(mode='evacuate', target_host='fake4'))
    assert 'disabled (reserved)' in caught.value.msg and 'Nothing was changed' in caught.value.msg
    with pytest.raises(InvalidRequest) as caught:
        backend.check_targets(request(mode='evacuate', target_host='nosuch'))
    assert 'not a compute host' in caught.value.msg and 'fake4' in caught.value.msg


def test_disk_fate_and_note():
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import evacuation
    volume = evacuation.disk_fate({'image': '', 'os-extended-volumes:volumes_attached': [{'id': 'v1'}]})
    assert volume == {'root': 'volume', 'survives': True, 'volumes': ['v1']}
    local = evacuation.disk_fate({'image': {'id': 'i1'}})
    assert not local['survives'] and 'recreated from its image' in evacuation.disk_note(local)
    assert evacuation.disk_fate({'image': {'id': 'i1'}}, shared_storage=True)['survives']


def test_refused_evacuation_releases_our_lock():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    backend.backend.compute.refused['evacuate'] = (409, 'Cannot evacuate instance while it is in task_state x')
    with pytest.raises(BackendError) as caught:
        backend.start_move(subject(), moves.EVACUATE, None, request(mode='evacuate'))
    assert sent_bodies(backend) == [{'lock': {'locked_reason': backend.lock_reason('fake1')}},
                                    {'evacuate': {}}, {'unlock': None}]
    assert 'Nova refused evacuation of vm1' in caught.value.msg and '(undone: unlock)' in caught.value.msg


def test_refused_evacuation_keeps_a_lock_that_was_there_before():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    backend.backend.compute.refused['evacuate'] = (409, 'refused')
    with pytest.raises(BackendError) as caught:
        backend.start_move(subject(locked=True), moves.EVACUATE, None, request(mode='evacuate'))
    assert sent_bodies(backend) == [{'evacuate': {}}] and 'undone' not in caught.value.msg


def test_failed_evacuation_releases_our_lock():
    answers = {('GET', '/servers/id-1/os-instance-actions'): {'instanceActions': []}}
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    handle = backend.start_move(subject(), moves.EVACUATE, None, request(mode='evacuate'))
    failed = backend._status_of(handle, server(host='fake1'))
    assert failed.failed
    final = backend.finish(handle, failed)
    assert final.failed and '(undone: unlock)' in final.message
    assert sent_bodies(backend)[-1] == {'unlock': None} and not handle.data['locked_by_us']


def test_refused_step_after_the_evacuation_releases_our_lock():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(), moves.EVACUATE, None, request(mode='evacuate', power_state='stopped'))
    assert handle.data['steps'] == ['lock', 'move', 'stop', 'unlock']
    backend.backend.compute.refused['os-stop'] = (409, 'refused')
    final = backend.finish(handle, backend._status_of(handle, server(host='fake2')))
    assert final.failed and 'moved to fake2, but then Nova refused stop' in final.message
    assert '(undone: unlock)' in final.message and sent_bodies(backend)[-1] == {'unlock': None}


def test_given_up_evacuation_releases_our_lock():
    # The core gives up on a move still in flight (two deadlines, or the run's timeout): abandon() undoes.
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(), moves.EVACUATE, None, request(mode='evacuate'))
    assert backend.abandon(handle, 'gave up') == 'gave up (undone: unlock)'
    assert sent_bodies(backend)[-1] == {'unlock': None}
    assert backend.abandon(handle, 'again') == 'again'      # released once only
    handle = backend.start_move(subject(locked=True), moves.EVACUATE, None, request(mode='evacuate'))
    assert backend.abandon(handle, 'gave up') == 'gave up'  # a lock that was there before stays


def test_plan_refinements():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    assert backend.plan_move(subject(states.SUSPENDED), request(mode='evacuate')).move == moves.EVACUATE
    assert backend.plan_move(subject(states.SUSPENDED), request(mode='evacuate', suspended_policy='fail')).move == \
        moves.FAIL
    assert backend.plan_move(subject(states.ERROR), request(error_policy='move')).move == moves.FAIL
    assert backend.plan_move(subject(states.ERROR), request(mode='evacuate', error_policy='move')).move == \
        moves.EVACUATE


def test_no_cold_fallback_for_paused():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    handle = backend.start_move(subject(states.PAUSED), moves.LIVE, None, request())
    assert 'active or stopped' in backend.can_cold_fallback(handle, None)


SERVICE = {'id': 'svc-1', 'host': 'fake1', 'binary': 'nova-compute', 'status': 'enabled', 'state': 'up',
           'disabled_reason': None, 'forced_down': False, 'zone': 'nova'}


def service_backend(**changes):
    body = dict(SERVICE, **changes)
    answers = {('GET', '/os-services'): {'services': [body]},
               ('PUT', '/os-services/svc-1'): {'service': dict(body, status='disabled', disabled_reason='why')}}
    return om.OpenStackMoves({}, backend=FakeCloud(answers))


def test_ensure_service_check_apply_and_unchanged():
    backend = service_backend()
    disable = {'host': 'fake1', 'state': 'disabled', 'disabled_reason': 'why'}
    result = services.ensure_service(backend.services, disable, check_mode=True)
    assert result['changed'] and result['service']['after']['status'] == 'disabled'
    assert [entry[0] for entry in backend.backend.compute.sent] == ['GET']
    result = services.ensure_service(backend.services, disable)
    assert backend.backend.compute.sent[-1][:3] == ('PUT', '/os-services/svc-1',
                                                    {'status': 'disabled', 'disabled_reason': 'why'})
    backend = service_backend(status='disabled', disabled_reason='why')
    result = services.ensure_service(backend.services, disable)
    assert not result['changed'] and len(backend.backend.compute.sent) == 1


def test_ensure_service_forced_down():
    backend = service_backend()
    services.ensure_service(backend.services, {'host': 'fake1', 'forced_down': True, 'fenced': True})
    assert backend.backend.compute.sent[-1][2] == {'forced_down': True}


@pytest.mark.parametrize('params, text', [
    ({'host': 'h', 'forced_down': True}, 'fenced=true'),
    ({'host': 'h'}, 'Nothing asked'),
    ({'host': 'h', 'state': 'enabled', 'disabled_reason': 'x'}, 'disabled_reason needs state=disabled'),
    ({'host': 'h', 'state': 'disabled', 'backend': 'libvirt'}, 'libvirt has no compute service'),
])
def test_service_bad_input(params, text):
    with pytest.raises(InvalidRequest) as caught:
        services.validate_service_request(params)
    assert text in caught.value.msg


def test_poll_waits_for_the_migration_record():
    answers = {('GET', '/servers/detail'): {'servers': [server(host='fake2')]},
               ('GET', '/os-migrations'): {'migrations': [
                   {'id': 7, 'instance_uuid': 'id-1', 'status': 'running'},
                   {'id': 3, 'instance_uuid': 'id-1', 'status': 'error'}]}}
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    backend.host = 'fake1'
    handle = backend.start_move(subject(), moves.LIVE, None, request())
    assert backend.poll([handle]) == {}
    answers[('GET', '/os-migrations')]['migrations'][0]['status'] = 'completed'
    assert backend.poll([handle])['id-1'].done
    gets = [url for method, url, _body, _mv in backend.backend.compute.sent if method == 'GET']
    # Without the cloud's clock (no Date header) no record can be matched to this move: the server tells.
    assert gets == ['/os-migrations', '/servers/detail'] * 2


def _since_of_last_poll(compute):
    return [p for (method, url, _b, _mv), p in zip(compute.sent, compute.params)
            if url == '/servers/detail' and 'changes-since' in (p or {})][-1]['changes-since']


def test_poll_cursor_follows_the_oldest_move_in_the_clouds_clock(monkeypatch):
    """The server list starts CURSOR_MARGIN before the oldest move in flight that needs it (a cold move
    waits for VERIFY_RESIZE there), in the cloud's clock (its Date header says it runs 1000 s ahead of
    ours), not at the run's start less a minute."""
    clock = FakeClock(1800000000.0)
    monkeypatch.setattr(om.time, 'time', clock)
    answers = {('GET', '/servers/detail'): {'servers': [server(host='fake1', task='migrating', status='MIGRATING')]},
               ('GET', '/os-migrations'): {'migrations': []}}
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    compute = backend.backend.compute
    compute.date = 'Fri, 15 Jan 2027 08:16:40 GMT'      # 1800001000: 1000 s ahead
    backend.list_on_host('fake1')
    clock.now += 100
    handle = backend.start_move(subject(state=states.STOPPED), moves.COLD, None, request())
    clock.now += 30
    assert backend.poll([handle]) == {}
    assert _since_of_last_poll(compute) == mig.iso(1800000000.0 + 100 + 1000 - mig.CURSOR_MARGIN)


def test_poll_cursor_broad_without_a_date_header_or_after_a_miss(monkeypatch):
    clock = FakeClock(1800000000.0)
    monkeypatch.setattr(om.time, 'time', clock)
    broad = mig.iso(1800000000.0 - mig.CLOCK_SKEW_MARGIN)
    # No Date header: the run's start less CLOCK_SKEW_MARGIN.
    answers = {('GET', '/servers/detail'): {'servers': []}, ('GET', '/os-migrations'): {'migrations': []}}
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    backend.list_on_host('fake1')
    clock.now += 100
    handle = backend.start_move(subject(state=states.STOPPED), moves.COLD, None, request())
    backend.poll([handle])
    assert _since_of_last_poll(backend.backend.compute) == broad
    # With the header, a read that leaves out a move in flight makes the next one broad again.
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    compute = backend.backend.compute
    compute.date = 'Fri, 15 Jan 2027 08:01:40 GMT'      # 1800000100: the same clock as ours
    backend.list_on_host('fake1')
    handle = backend.start_move(subject(state=states.STOPPED), moves.COLD, None, request())
    backend.poll([handle])          # tight, and the server is not listed
    assert _since_of_last_poll(compute) == mig.iso(1800000100.0 - mig.CURSOR_MARGIN)
    backend.poll([handle])
    assert _since_of_last_poll(compute) == mig.iso(clock.now - mig.CLOCK_SKEW_MARGIN)
    answers[('GET', '/servers/detail')]['servers'] = [server(host='fake1', task='migrating', status='MIGRATING')]
    backend.poll([handle])          # broad, listed again
    backend.poll([handle])          # so tight again
    assert _since_of_last_poll(compute) == mig.iso(1800000100.0 - mig.CURSOR_MARGIN)


def test_adopted_move_cursor_from_the_servers_own_update():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    backend.records.cloud_offset = 0.0
    found = moves.MoveSubject('id-1', 'vm1', states.RUNNING, 'migrating', 'fake1', False,
                              {'move_in_flight': True, 'updated': '2027-01-15T08:00:00Z'})
    handle = backend.adopt(found)
    assert handle.data['changed_after'] == 1800000000
    assert backend.records.cursor([handle]) == 1800000000 - mig.CURSOR_MARGIN


def _record(status, created='2027-01-15T08:01:41Z', dest='fake3', record_id=9):
    return {'id': record_id, 'instance_uuid': 'id-1', 'status': status, 'created_at': created,
            'dest_compute': dest, 'source_compute': 'fake1'}


def _backend_with_clock(monkeypatch, answers):
    monkeypatch.setattr(om.time, 'time', FakeClock(1800000100.0))
    backend = om.OpenStackMoves({}, backend=FakeCloud(answers))
    backend.backend.compute.date = 'Fri, 15 Jan 2027 08:01:40 GMT'      # 1800000100: our clock
    records = answers[('GET', '/os-migrations')]
    answers[('GET', '/os-migrations')] = {'migrations': []}     # no cold move waiting for its confirm
    backend.list_on_host('fake1')
    answers[('GET', '/os-migrations')] = records
    return backend


def _gets(backend, since=0):
    return [url for method, url, _b, _mv in backend.backend.compute.sent[since:] if method == 'GET']


def test_live_move_ends_on_its_record_alone(monkeypatch):
    """A completed record ends a live move: one light read per cycle, no server list."""
    answers = {('GET', '/servers/detail'): {'servers': []},
               ('GET', '/os-migrations'): {'migrations': [_record('running')]}}
    backend = _backend_with_clock(monkeypatch, answers)
    handle = backend.start_move(subject(state=states.PAUSED), moves.LIVE, None, request())
    sent = len(backend.backend.compute.sent)
    assert backend.poll([handle]) == {}
    answers[('GET', '/os-migrations')]['migrations'] = [_record('completed')]
    status = backend.poll([handle])['id-1']
    assert status.done and status.host == 'fake3' and status.state == states.PAUSED
    assert _gets(backend, sent) == ['/os-migrations', '/os-migrations']


def test_an_earlier_moves_record_is_not_this_ones(monkeypatch):
    """A completed record created before this move began (an earlier move of the server) ends nothing."""
    answers = {('GET', '/servers/detail'): {'servers': [server(host='fake1', task='migrating', status='MIGRATING')]},
               ('GET', '/os-migrations'): {'migrations': [_record('completed', created='2027-01-15T07:50:00Z')]}}
    backend = _backend_with_clock(monkeypatch, answers)
    handle = backend.start_move(subject(), moves.LIVE, None, request())
    assert backend.poll([handle]) == {}
    # Past the grace without a record of its own, the server list is read for it.
    handle.data['sent_at'] -= mig.RECORDLESS_GRACE + 1
    sent = len(backend.backend.compute.sent)
    assert backend.poll([handle]) == {}
    assert _gets(backend, sent) == ['/os-migrations', '/servers/detail']


def test_a_cancelled_record_asks_the_server(monkeypatch):
    """An aborted live move: the record says cancelled, the server (back on the source) says failed."""
    answers = {('GET', '/servers/detail'): {'servers': [server(host='fake1')]},
               ('GET', '/os-migrations'): {'migrations': [_record('cancelled')]},
               ('GET', '/servers/id-1/os-instance-actions'): {'instanceActions': []}}
    backend = _backend_with_clock(monkeypatch, answers)
    handle = backend.start_move(subject(), moves.LIVE, None, request())
    status = backend.poll([handle])['id-1']
    assert status.failed and status.host == 'fake1'


def test_suspended_chain_live_step_reports_running(monkeypatch):
    answers = {('GET', '/servers/detail'): {'servers': []},
               ('GET', '/os-migrations'): {'migrations': [_record('completed')]}}
    backend = _backend_with_clock(monkeypatch, answers)
    handle = backend.start_move(subject(state=states.SUSPENDED), moves.LIVE, None, request())
    handle.data['step'] = 1         # resumed; the live step is in flight
    status = backend.poll([handle])['id-1']
    assert status.done and status.state == states.RUNNING


def test_confirm_ends_on_its_record(monkeypatch):
    answers = {('GET', '/servers/detail'): {'servers': []},
               ('GET', '/os-migrations'): {'migrations': [_record('finished')]}}
    backend = _backend_with_clock(monkeypatch, answers)
    handle = backend.start_move(subject(state=states.STOPPED), moves.COLD, None, request())
    handle.data['step'] = 1         # the cold move is done, the confirm was sent
    assert backend.poll([handle]) == {}
    answers[('GET', '/os-migrations')]['migrations'] = [_record('confirmed')]
    status = backend.poll([handle])['id-1']
    assert status.done and status.host == 'fake3' and status.state == states.STOPPED


def test_a_lock_left_by_a_dead_run_of_ours_is_released_and_others_are_kept():
    backend = om.OpenStackMoves({}, backend=FakeCloud())
    ours = dict(server(host='fake1'), locked=True, locked_reason='vmops.lifecycle:host_evacuate:fake1:earlier-run')
    theirs = dict(server(host='fake1'), id='id-2', locked=True, locked_reason='maintenance by the db team')
    other_host = dict(server(host='fake1'), id='id-3', locked=True,
                      locked_reason='vmops.lifecycle:host_evacuate:fake9:earlier-run')
    stale, kept, foreign = (backend._subject(body, 'fake1') for body in (ours, theirs, other_host))
    assert not stale.locked and stale.details['stale_lock'].endswith('earlier-run')
    assert kept.locked and 'stale_lock' not in kept.details
    assert foreign.locked and 'stale_lock' not in foreign.details
    options = request(mode='evacuate')
    # Released at the run's start (release_stale_locks): planned as unlocked, locked again by this run.
    assert backend._steps(stale, moves.EVACUATE, options) == ['lock', 'move', 'unlock']
    assert backend._steps(kept, moves.EVACUATE, options) == ['move']                # never touched


def test_every_lock_a_dead_run_left_is_released_once_and_no_other():
    run_by_us = 'vmops.lifecycle:host_evacuate:fake1:dead-run'
    locked = [dict(server(host='fake2'), id='moved', name='moved', locked=True, locked_reason=run_by_us),
              dict(server(host='fake1'), id='still-here', name='still-here', locked=True, locked_reason=run_by_us),
              dict(server(host='fake2', task='migrating'), id='moving', name='moving', locked=True,
                   locked_reason=run_by_us),
              dict(server(host='fake2'), id='theirs', locked=True, locked_reason='db team'),
              dict(server(host='fake2'), id='other-host', locked=True,
                   locked_reason='vmops.lifecycle:host_evacuate:fake7:dead-run')]
    backend = om.OpenStackMoves({}, backend=FakeCloud({('GET', '/servers/detail'): {'servers': locked}}))
    locked.append(dict(server(host='fake2'), id='this-run', locked=True, locked_reason=backend.lock_reason('fake1')))
    released = backend.release_stale_locks('fake1')
    expected = [('moved', 'fake2'), ('still-here', 'fake1'), ('moving', 'fake2')]
    assert [(item['id'], item['host']) for item in released] == expected
    assert backend.backend.compute.params[0] == {'all_tenants': 1, 'locked': 'true'}
    assert [(entry[1], entry[2]) for entry in backend.backend.compute.sent[1:]] == [
        ('/servers/%s/action' % name, {'unlock': None}) for name in ('moved', 'still-here', 'moving')]
