# -*- coding: utf-8 -*-
"""The neutral drain core (module_utils/moves.py) against an in-memory MoveBackend on a fake clock."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, InvalidRequest, VmopsError


class FakeCloud(moves.MoveBackend):
    """Instances with a host and a state; a move takes `durations[id]` seconds of fake time."""

    name = 'fake'
    default_window = 2

    def __init__(self, clock, instances, service=True, hosts=('src', 'dst1', 'dst2')):
        self.clock = clock
        self.instances = dict((i['id'], dict(i)) for i in instances)
        self.service = {'id': 's1', 'host': 'src', 'binary': 'compute', 'status': 'enabled', 'state': 'up',
                        'disabled_reason': None, 'forced_down': False} if service else None
        self.moving = {}        # id -> dict(ends, target, kind)
        self.requests = 0
        self.in_flight_seen = 0
        self.log = []
        self.refuse = set()     # ids whose start_move is refused
        self.refuse_cold = set()
        self.durations = {}
        self.hosts = hosts
        self.abort_refusals = 0

    def location(self):
        return 'fake cloud'

    def request_count(self):
        return self.requests

    def get_service(self, host):
        self.requests += 1
        return dict(self.service) if self.service else None

    def set_service(self, host, disabled=None, reason=None, forced_down=None):
        self.requests += 1
        self.log.append(('service', disabled, forced_down))
        if disabled is not None:
            self.service['status'] = 'disabled' if disabled else 'enabled'
            self.service['disabled_reason'] = reason if disabled else None
        if forced_down is not None:
            self.service['forced_down'] = forced_down
        return dict(self.service)

    def list_on_host(self, host):
        self.requests += 1
        found = []
        for i in sorted(self.instances.values(), key=lambda i: i['id']):
            if i['host'] == host:
                found.append(moves.MoveSubject(i['id'], i['name'], i['state'], i.get('task'), i['host'],
                                               i.get('locked', False),
                                               {'move_in_flight': i['id'] in self.moving}))
        return found

    def _tick(self):
        for iid, move in list(self.moving.items()):
            if self.clock.now >= move['ends']:
                inst = self.instances[iid]
                del self.moving[iid]
                inst['task'] = None
                if move.get('aborted'):
                    continue
                inst['host'] = move['target']
                if move['kind'] == moves.COLD:
                    inst['state_verify'] = True

    def start_move(self, subject, move, target_host, options):
        self.requests += 1
        if subject.id in self.refuse or (move == moves.COLD and subject.id in self.refuse_cold):
            raise BackendError('refused %s of %s' % (move, subject.name))
        target = target_host or 'dst1'
        duration = self.durations.get(subject.id, 1.0) if move != moves.COLD else 1.0
        self.moving[subject.id] = {'ends': self.clock.now + duration, 'target': target,
                                   'kind': move}
        self.instances[subject.id]['task'] = 'migrating'
        self.in_flight_seen = max(self.in_flight_seen, len(self.moving))
        self.log.append(('start', subject.id, move))
        return moves.MoveHandle(subject, move, target)

    def adopt(self, subject):
        if subject.id not in self.moving:
            return None
        self.log.append(('adopt', subject.id))
        return moves.MoveHandle(subject, moves.ADOPT, self.moving[subject.id]['target'])

    def poll(self, handles):
        self.requests += 1
        self._tick()
        out = {}
        for handle in handles:
            inst = self.instances[handle.id]
            if handle.id in self.moving:
                continue
            if inst['host'] == handle.subject.host:
                out[handle.id] = moves.MoveStatus(False, True, 'aborted', inst['host'], inst['state'])
            else:
                out[handle.id] = moves.MoveStatus(True, False, None, inst['host'], inst['state'])
        return out

    def abort(self, handle):
        self.requests += 1
        self.log.append(('abort', handle.id))
        if self.abort_refusals:
            self.abort_refusals -= 1
            raise BackendError('no live migration in progress yet')
        move = self.moving[handle.id]
        move['aborted'] = True
        move['ends'] = self.clock.now + 0.5

    def force_complete(self, handle):
        self.requests += 1
        self.log.append(('force_complete', handle.id))
        self.moving[handle.id]['ends'] = self.clock.now + 0.2

    def finish(self, handle, status):
        inst = self.instances[handle.id]
        if inst.pop('state_verify', False):
            self.requests += 1
            self.log.append(('confirm', handle.id))
        return status

    def capacity(self, host, subjects):
        return [{'host': h, 'fits': True} for h in self.hosts if h != host]


def inst(iid, state=states.RUNNING, host='src', **kw):
    return dict(id=iid, name='vm-%s' % iid, state=state, host=host, **kw)


def run(cloud, clock, check_mode=False, **options):
    options.setdefault('host', 'src')
    return moves.run(cloud, moves.MoveRequest(**options), check_mode=check_mode,
                     clock=moves._Clock(clock.monotonic, clock.sleep, clock.wall))


def test_window_never_exceeds_k_and_is_refilled(clock):
    cloud = FakeCloud(clock, [inst('%02d' % n) for n in range(10)])
    for n in range(10):
        cloud.durations['%02d' % n] = 1.0 + (n % 3)
    result = run(cloud, clock, window=3)
    assert result['totals']['moved'] == 10
    assert cloud.in_flight_seen == 3
    assert result['totals']['max_in_flight'] == 3
    assert all(i['host'] == 'dst1' for i in cloud.instances.values())
    # Refilled: total time is close to the sum of durations / 3, not to 10 sequential moves.
    assert result['totals']['seconds'] < (sum(cloud.durations.values()) / 3.0) + 3
    assert cloud.service['status'] == 'disabled'


def test_default_window_from_backend(clock):
    cloud = FakeCloud(clock, [inst(str(n)) for n in range(5)])
    result = run(cloud, clock)
    assert cloud.in_flight_seen == 2 and result['totals']['window'] == 2


def test_one_shared_poll_per_cycle(clock):
    cloud = FakeCloud(clock, [inst(str(n)) for n in range(6)])
    result = run(cloud, clock, window=6, poll_interval=0.5)
    # 6 moves of 1 s in parallel: 2 polls of 0.5 s, each one request for all six.
    assert result['totals']['polls'] == 2
    # service read + disable + list + 6 starts + 2 polls
    assert result['totals']['api_requests'] == 1 + 1 + 1 + 6 + 2


def test_deadline_abort_then_cold_fallback(clock):
    cloud = FakeCloud(clock, [inst('slow'), inst('fast')])
    cloud.durations['slow'] = 100.0
    result = run(cloud, clock, deadline=5)
    slow = [s for s in result['servers'] if s['id'] == 'slow'][0]
    assert ('abort', 'slow') in cloud.log
    assert ('start', 'slow', 'cold') in cloud.log and ('confirm', 'slow') in cloud.log
    assert slow['outcome'] == 'moved' and slow['move'] == 'cold' and slow['attempts'] == ['live', 'cold']
    assert cloud.instances['slow']['host'] == 'dst1'
    assert slow['seconds'] >= 5


def test_deadline_abort_without_fallback_fails_and_restores_service(clock):
    cloud = FakeCloud(clock, [inst('slow')])
    cloud.durations['slow'] = 100.0
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, deadline=5, cold_fallback=False)
    assert 'aborted after the 5 s deadline' in caught.value.msg
    assert cloud.instances['slow']['host'] == 'src'
    assert cloud.service['status'] == 'enabled'
    assert caught.value.details['service']['restored'] is True
    assert caught.value.details['totals']['failed'] == 1


def test_failure_keeps_service_disabled_when_asked(clock):
    cloud = FakeCloud(clock, [inst('a')])
    cloud.refuse.add('a')
    with pytest.raises(VmopsError):
        run(cloud, clock, restore_service_on_failure=False)
    assert cloud.service['status'] == 'disabled'


def test_force_complete_on_deadline(clock):
    cloud = FakeCloud(clock, [inst('slow')])
    cloud.durations['slow'] = 100.0
    result = run(cloud, clock, deadline=3, deadline_action='force_complete')
    assert ('force_complete', 'slow') in cloud.log
    assert result['servers'][0]['outcome'] == 'moved' and result['servers'][0]['move'] == 'live'
    assert result['servers'][0]['deadline_action'] == 'force_complete'


def test_policies_and_moves(clock):
    cloud = FakeCloud(clock, [inst('r'), inst('p', states.PAUSED), inst('s', states.STOPPED),
                              inst('u', states.SUSPENDED), inst('h', states.SHELVED),
                              inst('e', states.ERROR), inst('l', locked=True)])
    result = run(cloud, clock, check_mode=True, rescued_policy='fail')
    moves_by_id = dict((p['id'], p['move']) for p in result['plan'])
    assert moves_by_id == {'r': 'live', 'p': 'live', 's': 'cold', 'u': 'live', 'h': 'offload', 'e': 'skip',
                           'l': 'live'}
    assert [p['id'] for p in result['plan']][-1] == 'e'
    assert cloud.log == [] and cloud.service['status'] == 'enabled'    # check mode touched nothing
    assert result['changed'] is True and result['service']['would_change']['disabled'] is True
    result = run(cloud, clock, check_mode=True, suspended_policy='skip', shelved_policy='skip', error_policy='move')
    moves_by_id = dict((p['id'], p['move']) for p in result['plan'])
    assert moves_by_id['u'] == 'skip' and moves_by_id['h'] == 'skip' and moves_by_id['e'] == 'cold'


def test_fail_policy_refuses_before_touching_anything(clock):
    cloud = FakeCloud(clock, [inst('r'), inst('x', states.RESCUED)])
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock)
    assert 'rescued_policy=fail' in caught.value.msg and 'vm-x' in caught.value.msg
    assert cloud.log == [] and cloud.service['status'] == 'enabled'


def test_skip_reported_and_power_states_kept(clock):
    cloud = FakeCloud(clock, [inst('r'), inst('e', states.ERROR)])
    result = run(cloud, clock)
    by_id = dict((s['id'], s) for s in result['servers'])
    assert by_id['e']['outcome'] == 'skipped' and by_id['e']['state_after'] == states.ERROR
    assert by_id['r']['state_before'] == by_id['r']['state_after'] == states.RUNNING
    assert cloud.instances['e']['host'] == 'src'


def test_refused_move_reported_others_go_on(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('b'), inst('c')])
    cloud.refuse.add('b')
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, window=1)
    by_id = dict((s['id'], s) for s in caught.value.details['servers'])
    assert by_id['b']['outcome'] == 'failed' and 'refused live' in by_id['b']['message']
    assert by_id['a']['outcome'] == by_id['c']['outcome'] == 'moved'
    assert cloud.service['status'] == 'enabled'


def test_rerun_adopts_in_flight_and_never_repeats(clock):
    cloud = FakeCloud(clock, [inst(str(n)) for n in range(4)])
    cloud.durations.update({'0': 1.0, '1': 1.0, '2': 30.0, '3': 30.0})
    # An interrupted run: it started all four and died; 0 and 1 are done, 2 and 3 still in flight.
    for n in range(4):
        cloud.start_move(moves.MoveSubject(str(n), 'vm-%s' % n, states.RUNNING, None, 'src', False, {}),
                         moves.LIVE, None, None)
    clock.now += 5
    cloud._tick()
    cloud.log = []
    result = run(cloud, clock)
    assert [entry for entry in cloud.log if entry[0] == 'start'] == []
    assert sorted(e[1] for e in cloud.log if e[0] == 'adopt') == ['2', '3']
    assert sorted(s['id'] for s in result['servers']) == ['2', '3']
    assert all(i['host'] == 'dst1' for i in cloud.instances.values())
    # A third run: nothing left, service already disabled: unchanged.
    cloud.log = []
    result = run(cloud, clock)
    assert result['changed'] is False and result['servers'] == [] and cloud.log == []


def test_target_host_passed(clock):
    cloud = FakeCloud(clock, [inst('a')])
    result = run(cloud, clock, target_host='dst2')
    assert cloud.instances['a']['host'] == 'dst2' and result['servers'][0]['to'] == 'dst2'


def test_instances_limits_the_drain(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('b')])
    result = run(cloud, clock, instances=['vm-b'])
    assert [s['id'] for s in result['servers']] == ['b'] and cloud.instances['a']['host'] == 'src'


def test_evacuate_refused_while_host_up(clock):
    cloud = FakeCloud(clock, [inst('a')])
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock, mode='evacuate')
    assert 'reports up' in caught.value.msg and cloud.log == []


def test_evacuate_force_down_when_fenced(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('s', states.STOPPED)])
    result = run(cloud, clock, mode='evacuate', fenced=True, force_down=True)
    assert ('service', True, True) in cloud.log
    assert dict((s['id'], s['move']) for s in result['servers']) == {'a': 'evacuate', 's': 'evacuate'}


def test_evacuate_down_host_no_force(clock):
    cloud = FakeCloud(clock, [inst('a')])
    cloud.service['state'] = 'down'
    result = run(cloud, clock, mode='evacuate', disable=False)
    assert result['servers'][0]['outcome'] == 'moved' and cloud.log[0] == ('start', 'a', 'evacuate')


def test_drain_refused_on_down_host(clock):
    cloud = FakeCloud(clock, [inst('a')])
    cloud.service['state'] = 'down'
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock)
    assert 'mode=evacuate' in caught.value.msg


@pytest.mark.parametrize('options, text', [
    (dict(window=0), 'window'), (dict(deadline=0), 'deadline'), (dict(force_down=True, mode='evacuate'), 'fenced'),
    (dict(fenced=True), 'evacuate only'), (dict(suspended_policy='maybe'), 'suspended_policy'),
    (dict(target_host='src'), 'target_host'), (dict(power_state='stopped'), 'evacuate only'),
    (dict(disable=False, disabled_reason='x'), 'disabled_reason'), (dict(deadline_action='nuke'), 'deadline_action'),
])
def test_bad_input_refused(clock, options, text):
    cloud = FakeCloud(clock, [inst('a')])
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock, **options)
    assert text in caught.value.msg and cloud.requests == 0


def test_progress_file_lines(clock, tmp_path):
    path = tmp_path / 'progress.jsonl'
    cloud = FakeCloud(clock, [inst('a'), inst('b'), inst('e', states.ERROR)])
    run(cloud, clock, progress_file=str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [('a', 'moved'), ('b', 'moved'), ('e', 'skipped')]
    assert sorted((line['id'], line['outcome']) for line in lines) == expected
    assert lines[-1]['done'] == 3


def test_backend_without_service(clock):
    cloud = FakeCloud(clock, [inst('a')], service=False)
    result = run(cloud, clock)
    assert result['service'] == {'before': None, 'after': None} and result['totals']['moved'] == 1


def test_skips_alone_are_no_change(clock):
    cloud = FakeCloud(clock, [inst('e', states.ERROR)])
    cloud.service['status'] = 'disabled'
    result = run(cloud, clock)
    assert result['changed'] is False and result['servers'][0]['outcome'] == 'skipped'


def test_refused_abort_is_retried(clock):
    cloud = FakeCloud(clock, [inst('slow')])
    cloud.durations['slow'] = 100.0
    cloud.abort_refusals = 2
    result = run(cloud, clock, deadline=10)
    aborts = [e for e in cloud.log if e[0] == 'abort']
    assert len(aborts) == 3     # refused twice (retried every 2 s), then accepted
    assert result['servers'][0]['attempts'] == ['live', 'cold'] and result['servers'][0]['outcome'] == 'moved'


def test_abort_refused_for_a_whole_deadline_fails(clock):
    cloud = FakeCloud(clock, [inst('slow')])
    cloud.durations['slow'] = 100.0
    cloud.abort_refusals = 1000
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, deadline=6)
    server = caught.value.details['servers'][0]
    assert server['outcome'] == 'failed' and 'no live migration in progress yet' in server['message']
    assert 3 <= len([e for e in cloud.log if e[0] == 'abort']) <= 4


class UndoingCloud(FakeCloud):
    """Nova-like: a paused instance cannot be evacuated; finish() of a failed move reports an undo (unlock)."""

    def plan_move(self, subject, request):
        decision = moves.policy_decision(subject, request)
        if decision.move == moves.EVACUATE and subject.state == states.PAUSED:
            return moves.Decision(moves.UNMOVABLE, 'cannot evacuate a paused instance')
        return decision

    def abandon(self, handle, message):
        self.log.append(('abandon', handle.id))
        return '%s (undone: unlock)' % message


def test_unmovable_fails_alone_and_the_others_move(clock):
    cloud = UndoingCloud(clock, [inst('a'), inst('p', states.PAUSED), inst('s', states.STOPPED)])
    cloud.service['state'] = 'down'
    result = run(cloud, clock, check_mode=True, mode='evacuate')
    plan = dict((p['id'], p) for p in result['plan'])
    assert plan['p']['move'] == 'unmovable' and plan['p']['note'] == 'cannot evacuate a paused instance'
    assert [p['id'] for p in result['plan']][-1] == 'p'
    by_id = dict((s['id'], s) for s in result['servers'])
    assert by_id['p']['outcome'] == 'failed' and result['totals']['failed'] == 1 and cloud.log == []
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, mode='evacuate')
    assert '1 of 3 instances failed' in caught.value.msg and 'cannot evacuate a paused instance' in caught.value.msg
    by_id = dict((s['id'], s) for s in caught.value.details['servers'])
    assert by_id['a']['outcome'] == by_id['s']['outcome'] == 'moved'
    assert by_id['p']['outcome'] == 'failed' and by_id['p']['move'] == 'unmovable'
    assert by_id['p']['state_after'] == states.PAUSED and by_id['p']['seconds'] is None
    assert [e for e in cloud.log if e[0] == 'start' and e[1] == 'p'] == []
    assert cloud.instances['p']['host'] == 'src'


def test_evacuation_given_up_after_two_deadlines_is_undone(clock):
    cloud = UndoingCloud(clock, [inst('a')])
    cloud.service['state'] = 'down'
    cloud.durations['a'] = 100.0
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, mode='evacuate', deadline=5, disable=False)
    server = caught.value.details['servers'][0]
    assert ('abandon', 'a') in cloud.log
    assert server['outcome'] == 'failed' and server['message'].endswith('(undone: unlock)')
    assert 'did not end the move' in server['message']


def test_moves_in_flight_at_the_run_timeout_are_undone(clock):
    cloud = UndoingCloud(clock, [inst('a')])
    cloud.durations['a'] = 100.0
    with pytest.raises(VmopsError) as caught:
        run(cloud, clock, timeout=3, deadline=50)
    server = caught.value.details['servers'][0]
    assert ('abandon', 'a') in cloud.log
    assert 'timed out' in server['message'] and server['message'].endswith('(undone: unlock)')


def test_instance_not_on_the_host_is_refused_before_anything_changes(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('b'), inst('c', host='dst2'), inst('o', states.SHELVED_OFFLOADED, None)])
    cloud.locate = lambda ref: next(({'host': i['host']} for i in cloud.instances.values()
                                     if ref in (i['id'], i['name'])), None)
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock, instances=['vm-b', 'nosuch', 'vm-c'])
    for text in ('nosuch (no such instance)', 'vm-c (it is on dst2)', 'not on src', 'vm-a, vm-b'):
        assert text in caught.value.msg
    assert cloud.log == [] and cloud.service['status'] == 'enabled'
    # an instance with no host is only listed; so is one elsewhere when the service is already as the run leaves it
    result = run(cloud, clock, instances=['vm-b', 'vm-o'])
    assert result['not_on_host'] == [{'instance': 'vm-o', 'host': None, 'exists': True}]
    assert [s['id'] for s in result['servers']] == ['b']
    rerun = run(cloud, clock, instances=['vm-b'])
    assert not rerun['changed'] and rerun['not_on_host'][0]['host'] == 'dst1'


def test_diff_before_and_after(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('s', states.STOPPED)])
    planned = run(cloud, clock, check_mode=True, target_host='dst2')
    assert planned['diff']['before']['service']['status'] == 'enabled'
    assert planned['diff']['after']['service']['status'] == 'disabled'
    assert planned['diff']['after']['instances']['vm-a (a)']['host'] == 'dst2'
    result = run(cloud, clock)
    assert result['diff']['before']['instances']['vm-s (s)'] == {'host': 'src', 'state': states.STOPPED}
    assert result['diff']['after']['instances']['vm-a (a)']['host'] == 'dst1'
    assert result['diff']['after']['service']['status'] == 'disabled'


def test_reserved_host_prepared_after_the_disable_and_used_as_target(clock):
    cloud = FakeCloud(clock, [inst('a')])
    cloud.service['state'] = 'down'
    prepared = []

    def prepare(request, check_mode):
        prepared.append((check_mode, list(cloud.log)))
        return {'host': request.reserved_host, 'changes': ['enable its nova-compute service']}
    cloud.prepare_reserved_host = prepare
    planned = run(cloud, clock, check_mode=True, mode='evacuate', reserved_host='dst2')
    assert planned['changed'] and planned['reserved_host']['changes'] and cloud.log == []
    result = run(cloud, clock, mode='evacuate', reserved_host='dst2')
    assert prepared[-1] == (False, [('service', True, None)])
    assert result['servers'][0]['to'] == 'dst2' and result['reserved_host']['host'] == 'dst2'
    with pytest.raises(InvalidRequest):
        run(cloud, clock, mode='evacuate', reserved_host='dst2', target_host='dst1')
