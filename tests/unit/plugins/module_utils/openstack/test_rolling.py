# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling_plan module's glue on a fake cloud: the real request layer over fake compute and Placement
adapters, the real read (openstack/inventory.py) and the real planner.  The plans are checked here by
reading the fake cloud's own tables, not the planner's bookkeeping."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import RollRefused
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.request import RequestLayer
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.rolling import (
    RollingPlanReader, check_options)
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeCompute, FakeConnection

SMALL = {'vcpus': 1, 'ram': 1024, 'disk': 10, 'ephemeral': 0, 'swap': 0}
STATUS = {'running': ('ACTIVE', 'active'), 'stopped': ('SHUTOFF', 'stopped'), 'error': ('ERROR', 'error'),
          'shelved': ('SHELVED', 'shelved'), 'rescued': ('RESCUE', 'rescued'), 'suspended': ('SUSPENDED', 'suspended')}


def _server(sid, host, state='running', flavor=None, zone='nova'):
    status, vm_state = STATUS[state]
    return {'id': sid, 'name': 'vm-' + sid, 'status': status, 'OS-EXT-STS:vm_state': vm_state,
            'OS-EXT-SRV-ATTR:host': host, 'OS-EXT-AZ:availability_zone': zone, 'flavor': flavor or SMALL}


def _service(host, status='enabled', state='up', zone='nova'):
    return {'id': 'svc-' + host, 'host': host, 'binary': 'nova-compute', 'status': status, 'state': state,
            'forced_down': False, 'disabled_reason': None, 'zone': zone}


class JsonAdapter(FakeCompute):
    """The shared fake adapter, its answers marked as having a body (the read decodes only those)."""

    def request(self, url, method, microversion=None, **kwargs):
        response = super(JsonAdapter, self).request(url, method, microversion=microversion, **kwargs)
        response.content = b'{}'
        return response


class FakeRollCloud(object):
    """Four computes (c1..c4) and a spare (s1) in zone nova; each host holds `vcpus` vCPUs (ratio 1)."""

    def __init__(self, servers, vcpus=8, services=None, groups=()):
        self.servers = servers
        services = services or [_service(name) for name in ('c1', 'c2', 'c3', 'c4', 's1')]
        names = [s['host'] for s in services]
        answers = {
            ('GET', '/os-services'): {'services': services},
            ('GET', '/os-hypervisors/detail'): {'hypervisors': [
                {'id': 'rp-' + n, 'hypervisor_hostname': n, 'state': 'up', 'hypervisor_type': 'fake',
                 'service': {'host': n}} for n in names]},
            ('GET', '/os-aggregates'): {'aggregates': []},
            ('GET', '/servers/detail'): {'servers': servers},
            ('GET', '/os-server-groups'): {'server_groups': list(groups)},
        }
        placement = {}
        for name in names:
            here = [s for s in servers if s['OS-EXT-SRV-ATTR:host'] == name]
            placement[('GET', '/resource_providers/rp-%s/inventories' % name)] = {'inventories': {
                'VCPU': {'total': vcpus, 'reserved': 0, 'allocation_ratio': 1.0},
                'MEMORY_MB': {'total': 65536, 'reserved': 0, 'allocation_ratio': 1.0},
                'DISK_GB': {'total': 1000, 'reserved': 0, 'allocation_ratio': 1.0}}}
            placement[('GET', '/resource_providers/rp-%s/usages' % name)] = {'usages': {
                'VCPU': sum(s['flavor']['vcpus'] for s in here), 'MEMORY_MB': sum(s['flavor']['ram'] for s in here),
                'DISK_GB': sum(s['flavor']['disk'] for s in here)}}
        self.compute = JsonAdapter(answers)
        self.placement = JsonAdapter(placement)

    def plan(self, **options):
        params = dict(hosts=None, maintained=[], spare_hosts=[], excluded_hosts=[], max_batch=1,
                      max_moves_in_flight=None, suspended_policy='move', shelved_policy='move',
                      rescued_policy='fail', error_policy='skip')
        params.update(options)
        check_options(params)
        conn = FakeConnection(self.compute)
        conn.placement = self.placement
        with RollingPlanReader(RequestLayer(conn, sleep=lambda seconds: None)) as reader:
            return reader.plan(params)

    def host_of(self, sid):
        return [s for s in self.servers if s['id'] == sid][0]['OS-EXT-SRV-ATTR:host']


def _assert_move_once(cloud, result, anti_affinity=()):
    """What every plan must keep, read against the fake cloud's own servers."""
    seen = collections.Counter()
    end = dict((s['id'], s['OS-EXT-SRV-ATTR:host']) for s in cloud.servers)
    batch_of = {}
    for batch in result['batches']:
        for host in batch['hosts']:
            batch_of[host] = batch['index']
    for batch in result['batches']:
        for move in batch['moves']:
            seen[move['id']] += 1
            assert cloud.host_of(move['id']) == move['from'] and move['from'] in batch['hosts']
            assert batch_of.get(move['to'], 0) < batch['index'], 'destination rolled in this batch or later'
            assert move['move'] in ('live', 'cold')
            end[move['id']] = move['to']
        for entry in batch['offloads']:
            seen[entry['id']] += 1
            end[entry['id']] = None
        for entry in batch['stay']:
            seen[entry['id']] += 1
    assert max(seen.values() or [0]) <= 1, 'an instance listed twice'
    for members in anti_affinity:
        hosts = [end[m] for m in members if end[m] is not None]
        assert len(hosts) == len(set(hosts)), 'anti-affinity members share a host at the end'


def test_a_mixed_cloud_rolls_with_each_instance_once_and_reads_only():
    servers = [_server('a1', 'c1'), _server('a2', 'c2'), _server('b1', 'c1', 'stopped'),
               _server('b2', 'c2', 'suspended'), _server('b3', 'c3', 'shelved'), _server('b4', 'c3', 'error'),
               _server('b5', 'c4')]
    group = {'id': 'g-anti', 'name': 'web', 'policy': 'anti-affinity', 'members': ['a1', 'a2']}
    cloud = FakeRollCloud(servers, groups=[group])
    result = cloud.plan(hosts=['c1', 'c2', 'c3', 'c4'], max_batch=2)
    assert result['changed'] is False and result['ok']
    assert result['roll'] == ['c1', 'c2', 'c3', 'c4']
    assert sorted(h for b in result['batches'] for h in b['hosts']) == ['c1', 'c2', 'c3', 'c4']
    assert all(len(b['hosts']) <= 2 for b in result['batches'])
    _assert_move_once(cloud, result, anti_affinity=[group['members']])
    moves = dict((m['id'], m) for m in result['batches'][0]['moves'] + [
        m for b in result['batches'][1:] for m in b['moves']])
    assert moves['b1']['move'] == 'cold' and moves['a1']['move'] == 'live'
    assert moves['b2']['move'] == 'live' and 'suspended again' in moves['b2']['note']
    assert [e['id'] for e in result['offloads']] == ['b3'] and result['offloads'][0]['move'] == 'offload'
    assert [e['id'] for e in result['stay']] == ['b4']
    assert result['totals'] == {'batches': len(result['batches']), 'hosts': 4, 'moves': 5, 'live': 4, 'cold': 1,
                                'offloads': 1, 'stay': 1}
    # The free room of zone nova before the first batch: s1 and the hosts outside it.
    assert result['free_before']['nova']['vcpus'] == result['batches'][0]['free_before']['nova']['vcpus']
    # Every host back as a destination; the shelved instance gone, the one in error still on c3.
    assert result['free_after']['nova']['vcpus'] == 5 * 8 - 6
    # One request per service listing, one servers page, one Placement inventory and usage read per host.
    assert result['api_requests'] == len(cloud.compute.sent) + len(cloud.placement.sent) == 5 + 2 * 5
    assert {method for method, _url, _body, _mv in cloud.compute.sent + cloud.placement.sent} == {'GET'}


def test_without_hosts_every_host_up_rolls_and_the_down_one_is_left_out():
    services = [_service('c1'), _service('c2'), _service('c3', state='down'), _service('c4', status='disabled')]
    cloud = FakeRollCloud([_server('a1', 'c1'), _server('a2', 'c4')], services=services)
    result = cloud.plan()
    assert result['roll'] == ['c1', 'c2', 'c4']
    assert cloud.plan(spare_hosts=['c2'])['roll'] == ['c1', 'c4']     # a spare is not rolled
    assert result['left_out'] == [{'host': 'c3', 'reason': 'service down'}]
    # c3 is outside the roll and down: it takes nothing; c4 is disabled but in the roll: drained in its turn.
    assert result['excluded'] == [{'host': 'c3', 'reason': 'service down'}]
    _assert_move_once(cloud, result)
    assert all(m['to'] != 'c3' for m in result['batches'][0]['moves'] + result['batches'][-1]['moves'])


def test_resuming_skips_the_maintained_hosts_and_uses_them_first():
    cloud = FakeRollCloud([_server('a1', 'c1'), _server('a2', 'c2')])
    result = cloud.plan(hosts=['c1', 'c2', 'c3'], maintained=['c1'], excluded_hosts=['c4', 's1'])
    assert result['already_maintained'] == ['c1']
    assert 'c1' not in [h for b in result['batches'] for h in b['hosts']]
    assert [m['to'] for b in result['batches'] for m in b['moves']] in (['c1'], ['c3'])
    assert {'host': 'c4', 'reason': 'excluded_hosts'} in result['excluded']


def test_a_rescued_instance_refuses_with_its_name_and_the_whole_result():
    cloud = FakeRollCloud([_server('a1', 'c1'), _server('r1', 'c2', 'rescued')])
    with pytest.raises(RollRefused) as refused:
        cloud.plan(hosts=['c1', 'c2'])
    assert 'vm-r1' in refused.value.msg and 'rescued_policy=fail' in refused.value.msg
    details = refused.value.details
    assert details['ok'] is False and details['refusals'][0]['reason'] == 'state'
    assert 'changed' not in details        # run_module adds it: a refusal changes nothing
    assert cloud.plan(hosts=['c1', 'c2'], rescued_policy='skip')['stay'][0]['id'] == 'r1'


def test_not_enough_room_says_what_to_add_per_zone():
    servers = [_server('a%d' % n, 'c%d' % (n % 4 + 1), flavor=dict(SMALL, vcpus=2)) for n in range(16)]
    # Every host full (8 of 8 vCPUs), the spare excluded: nothing can go first.
    cloud = FakeRollCloud(servers)
    with pytest.raises(RollRefused) as refused:
        cloud.plan(hosts=['c1', 'c2', 'c3', 'c4'], excluded_hosts=['s1'])
    details = refused.value.details
    assert details['missing']['nova']['vcpus'] == 8
    assert 'availability zone nova' in refused.value.msg and 'add at least 8 vCPU' in refused.value.msg
    assert details['refusals'][0]['hosts'] == ['c1', 'c2', 'c3', 'c4']
    assert 'Largest instances waiting: vm-a0 on c1 (2 vCPU, 1024 MiB, 10 GB)' in refused.value.msg
    assert [entry['id'] for entry in details['refusals'][0]['largest']] == ['a0', 'a1', 'a10']
    # With the spare, the same roll goes through.
    result = cloud.plan(hosts=['c1', 'c2', 'c3', 'c4'], spare_hosts=['s1'])
    _assert_move_once(cloud, result)
    assert result['totals']['moves'] == 16


@pytest.mark.parametrize('options, words', [
    ({'hosts': []}, 'hosts is empty'),
    ({'max_batch': 0}, 'max_batch must be at least 1'),
    ({'max_moves_in_flight': 0}, 'max_moves_in_flight must be at least 1'),
    ({'hosts': ['c1', 'c2'], 'spare_hosts': ['c2']}, 'c2 listed in both hosts and spare_hosts'),
    ({'spare_hosts': ['s1'], 'excluded_hosts': ['s1']}, 's1 listed in both spare_hosts and excluded_hosts'),
    ({'hosts': ['c1'], 'maintained': ['c2']}, 'maintained names host(s) that are not in hosts: c2'),
])
def test_contradictory_options_are_refused_before_connecting(options, words):
    params = dict(hosts=None, maintained=[], spare_hosts=[], excluded_hosts=[], max_batch=1, max_moves_in_flight=None)
    params.update(options)
    with pytest.raises(InvalidRequest) as refused:
        check_options(params)
    assert words in refused.value.msg


@pytest.mark.parametrize('options, words', [
    ({'hosts': ['c1', 'c9']}, 'Not a compute host of the cloud: c9 (hosts). Compute hosts: c1, c2, c3, c4.'),
    ({'spare_hosts': ['x']}, 'x (spare_hosts)'),
    ({'hosts': ['c1', 'c3']}, 'c3 (down)'),
    ({'spare_hosts': ['c4']}, 'c4 (disabled)'),
])
def test_hosts_the_cloud_does_not_have_or_cannot_use_are_refused(options, words):
    services = [_service('c1'), _service('c2'), _service('c3', state='down'), _service('c4', status='disabled')]
    cloud = FakeRollCloud([], services=services)
    with pytest.raises(InvalidRequest) as refused:
        cloud.plan(**options)
    assert words in refused.value.msg


def test_a_refusal_names_the_anti_affinity_group_that_blocks_with_room_enough():
    # a1 must leave c1; the only destination, s1, holds its group mate a2.
    group = {'id': 'g-anti', 'name': 'web', 'policy': 'anti-affinity', 'members': ['a1', 'a2']}
    cloud = FakeRollCloud([_server('a1', 'c1'), _server('a2', 's1')], groups=[group])
    with pytest.raises(RollRefused) as refused:
        cloud.plan(hosts=['c1'], excluded_hosts=['c2', 'c3', 'c4'])
    refusal = refused.value.details['refusals'][0]
    assert refusal['anti_affinity_groups'] == ['g-anti'] and 'no two on one host): g-anti' in refused.value.msg
    assert refused.value.details['missing'] == {'nova': {'vcpus': 1, 'ram_mb': 1024, 'disk_gb': 10}}


def test_an_affinity_group_on_a_host_of_the_roll_is_refused_naming_group_and_host():
    """Nova's scheduler will not move an affinity member: the plan refuses before anything moves, and the
    same group on a host outside the roll is no obstacle (it takes instances)."""
    servers = [_server('f1', 'c2'), _server('f2', 'c2'), _server('x1', 'c1')]
    group = {'id': 'g-aff', 'name': 'db', 'policy': 'affinity', 'members': ['f1', 'f2']}
    cloud = FakeRollCloud(servers, groups=[group])
    with pytest.raises(RollRefused) as refused:
        cloud.plan(hosts=['c1', 'c2'])
    affinity = [r for r in refused.value.details['refusals'] if r['reason'] == 'affinity']
    assert [(r['group'], r['host']) for r in affinity] == [('g-aff', 'c2')]
    assert 'Leave c2 out of the roll' in refused.value.msg
    result = cloud.plan(hosts=['c1', 'c3'])
    assert result['ok'] and result['totals']['moves'] == 1


def test_an_anti_affinity_member_avoids_the_host_another_member_left():
    """a1 leaves c1 in batch 1; a2 (on c2, batch 2) must not land on c1, where Nova's late check may still
    count a1."""
    servers = [_server('a1', 'c1'), _server('a2', 'c2')]
    group = {'id': 'g-anti', 'name': 'web', 'policy': 'anti-affinity', 'members': ['a1', 'a2']}
    services = [_service(name) for name in ('c1', 'c2', 'c3', 'c4')]
    cloud = FakeRollCloud(servers, groups=[group], services=services)
    result = cloud.plan(hosts=['c1', 'c2'])
    moves = dict((m['id'], m) for m in result['batches'][0]['moves'] + result['batches'][1]['moves'])
    assert moves['a2']['to'] != moves['a1']['from'] and moves['a1']['to'] != moves['a2']['from']
    _assert_move_once(cloud, result, anti_affinity=[group['members']])
