# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling planner on generated clouds, checked by a simulation that does not share its code.

`RollChecker` replays a plan batch by batch on its own copy of the cloud and asserts every invariant:
each instance moves at most once, only to a host already maintained or outside the roll, within its
availability zone, never past Placement's capacity, never breaking a server group; every host of the
roll goes down once, empty of everything that must leave.  With a scheduler's limits (Nova's), also: no
affinity member moves, and no anti-affinity member lands where another member of its group left by a
live move.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import random

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import (
    RollHost, RollInstance, plan_roll)

# What the checker expects of each state with host_evacuate's default policies, written out here on
# purpose rather than taken from the planner: 'move' lands on a host, 'offload' leaves for nowhere,
# 'stay' goes down with the host, 'refuse' must make the plan refuse.
EXPECTED = {'running': 'move', 'stopped': 'move', 'paused': 'move', 'suspended': 'move',
            'shelved': 'offload', 'error': 'stay', 'rescued': 'refuse', 'resize_pending': 'refuse'}

FLAVORS = [(1, 512, 1), (1, 1024, 10), (2, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160)]


class RollChecker(object):
    """Replays a plan on its own model of the cloud; every assertion names the invariant it guards."""

    def __init__(self, hosts, instances, roll, maintained=(), excluded=(), max_batch=1, max_moves_in_flight=None,
                 move_affinity=True, reuse_group_sources=True):
        self.spec = dict((h.name, h) for h in hosts)
        self.where = dict((i.id, i.host) for i in instances)
        self.instances = dict((i.id, i) for i in instances)
        self.roll = set(roll)
        self.maintained = set(maintained) & self.roll
        self.excluded = set(excluded)
        self.max_batch = max_batch
        self.max_moves_in_flight = max_moves_in_flight
        self.used = {}
        for host in hosts:
            if host.used is not None:
                self.used[host.name] = list(host.used)
            else:
                self.used[host.name] = [0, 0, 0]
                for i in instances:
                    if i.host == host.name:
                        self.used[host.name] = [a + b for a, b in zip(self.used[host.name], i.size)]
        self.moved = collections.Counter()
        self.move_affinity = move_affinity
        self.reuse_group_sources = reuse_group_sources
        self.left_by_group = collections.defaultdict(set)     # anti-affinity group -> hosts a member left

    def limit(self, name, k):
        h = self.spec[name]
        return (h.total[k] - h.reserved[k]) * h.ratio[k]

    def az_of(self, instance):
        return instance.az if instance.az is not None else self.spec[instance.host].az

    def check(self, plan):
        assert plan.ok, plan.refusals
        for batch in plan.batches:
            self.check_batch(batch)
        left = self.roll - self.maintained
        assert not left, 'hosts of the roll never maintained: %s' % sorted(left)
        assert max(self.moved.values() or [0]) <= 1, 'an instance moved twice: %s' % self.moved.most_common(3)

    def check_batch(self, batch):
        down = set(batch['hosts'])
        assert len(down) == len(batch['hosts']), 'a host twice in one batch'
        assert len(down) <= self.max_batch, 'batch larger than max_batch'
        if self.max_moves_in_flight:
            assert len(down) <= self.max_moves_in_flight, 'more hosts than moves allowed in flight'
            assert batch['window'] * len(down) <= max(self.max_moves_in_flight, len(down)), 'window too wide'
        assert down <= self.roll, 'a host outside the roll is taken down'
        assert not down & self.maintained, 'a host maintained twice: %s' % sorted(down & self.maintained)
        for move in batch['moves'] + batch['offloads']:
            instance = self.instances[move['id']]
            assert self.where[move['id']] == move['from'] and move['from'] in down, \
                'moves from a host not going down in this batch: %s' % move
            self.moved[move['id']] += 1
            target = move['to']
            if target is not None:
                assert EXPECTED[instance.state] == 'move', 'a %s instance is moved' % instance.state
                assert self.move_affinity or instance.policy != 'affinity', \
                    'an affinity member is moved, which the scheduler refuses: %s' % move
                if instance.policy == 'anti-affinity' and not self.reuse_group_sources:
                    assert target not in self.left_by_group[instance.group], \
                        'lands where a member of its anti-affinity group left live during the roll: %s' % move
                assert target not in down, 'lands on a host of its own batch: %s' % move
                assert target not in self.roll or target in self.maintained, \
                    'lands on a host still to be maintained (it would move again): %s' % move
                assert target not in self.excluded, 'lands on an excluded host'
                assert self.spec[target].az == self.az_of(instance), 'leaves its availability zone: %s' % move
                self.used[target] = [a + b for a, b in zip(self.used[target], instance.size)]
            else:
                assert EXPECTED[instance.state] == 'offload', 'a %s instance is offloaded' % instance.state
            self.used[move['from']] = [a - b for a, b in zip(self.used[move['from']], instance.size)]
            self.where[move['id']] = target
            if instance.policy == 'anti-affinity' and move['move'] == 'live':
                self.left_by_group[instance.group].add(move['from'])
        for instance_id, host in self.where.items():
            if host in down:
                state = self.instances[instance_id].state
                assert EXPECTED[state] == 'stay', 'a %s instance is left on %s while it is down' % (state, host)
        for name, used in self.used.items():
            for k in range(3):
                assert used[k] <= self.limit(name, k) + 1e-6, 'capacity exceeded on %s (%d)' % (name, k)
        self.check_groups()
        self.maintained |= down

    def check_groups(self):
        hosts_of = collections.defaultdict(list)
        for instance_id, host in self.where.items():
            instance = self.instances[instance_id]
            if instance.group and host is not None:
                hosts_of[(instance.group, instance.policy)].append(host)
        for (group, policy), hosts in hosts_of.items():
            if policy == 'anti-affinity':
                assert len(set(hosts)) == len(hosts), 'anti-affinity group %s shares a host: %s' % (group, hosts)
            if policy == 'affinity':
                assert len(set(hosts)) == 1, 'affinity group %s split over %s' % (group, sorted(set(hosts)))


def generate_cloud(seed, azs=2, hosts_per_az=8, fill=0.5, spares_per_az=1, outside_per_az=1,
                   states=None, groups=True):
    """A random cloud whose starting placement keeps every rule (the planner must keep them too)."""
    rnd = random.Random(seed)
    states = states or ['running'] * 10 + ['stopped'] * 3 + ['paused', 'suspended', 'shelved', 'error']
    hosts, roll, spares, hosted = [], [], [], []
    for a in range(azs):
        az = 'az%d' % a
        for h in range(hosts_per_az + spares_per_az + outside_per_az):
            name = '%s-h%02d' % (az, h)
            vcpus = rnd.choice([16, 24, 32])
            ram = vcpus * rnd.choice([2048, 4096])
            disk = rnd.choice([500, 1000])
            ratio = (rnd.choice([1.0, 2.0, 4.0]), rnd.choice([1.0, 1.5]), 1.0)
            reserved = (rnd.choice([0, 2]), rnd.choice([0, 1024]), 0)
            hosts.append(RollHost(name, az, (vcpus, ram, disk), reserved, ratio, None))
            if h < hosts_per_az:
                roll.append(name)
            elif h < hosts_per_az + spares_per_az:
                spares.append(name)
                continue                          # spares start empty
            hosted.append(hosts[-1])
    used = dict((h.name, [0, 0, 0]) for h in hosts)
    anti = collections.defaultdict(set)
    instances = []

    def room(host, size):
        return all(used[host.name][k] + size[k] <= (host.total[k] - host.reserved[k]) * host.ratio[k] * fill
                   for k in range(3))

    def add(host, size, state, group=None, policy=None):
        used[host.name] = [u + s for u, s in zip(used[host.name], size)]
        instances.append(RollInstance('i%05d' % len(instances), 'vm%05d' % len(instances), host.name, state,
                                      size, group, policy, None))

    if groups:
        for g in range(rnd.randint(1, 3)):                    # affinity groups: 2-3 members on one host
            host = rnd.choice(hosted)
            size = rnd.choice(FLAVORS[:3])
            for _member in range(rnd.randint(2, 3)):
                if room(host, size):
                    add(host, size, rnd.choice(['running', 'stopped']), 'aff%d' % g, 'affinity')
        for g in range(rnd.randint(1, 4)):                    # anti-affinity groups within one zone
            az = 'az%d' % rnd.randrange(azs)
            candidates = [h for h in hosted if h.az == az]
            rnd.shuffle(candidates)
            size = rnd.choice(FLAVORS[:4])
            for host in candidates[:rnd.randint(2, max(2, len(candidates) // 2))]:
                if room(host, size):
                    add(host, size, rnd.choice(states), 'anti%d' % g, 'anti-affinity')
                    anti['anti%d' % g].add(host.name)
    for _attempt in range(len(hosted) * 12):
        host = rnd.choice(hosted)
        size = rnd.choice(FLAVORS)
        if room(host, size):
            add(host, size, rnd.choice(states))
    # A few shelved_offloaded instances: they have no host and must be left alone.
    for _offloaded in range(3):
        instances.append(RollInstance('o%05d' % len(instances), 'off%05d' % len(instances), None,
                                      'shelved_offloaded', (1, 512, 1), None, None, None))
    return hosts, instances, roll, spares


def _used_with_others(hosts, instances, rnd):
    """Placement's usage includes consumers the instance list does not show: add some on each host."""
    result = []
    totals = collections.defaultdict(lambda: [0, 0, 0])
    for i in instances:
        if i.host:
            totals[i.host] = [a + b for a, b in zip(totals[i.host], i.size)]
    for h in hosts:
        extra = (rnd.choice([0, 1]), rnd.choice([0, 256]), 0)
        result.append(h._replace(used=tuple(a + b for a, b in zip(totals[h.name], extra))))
    return result


@pytest.mark.parametrize('seed', range(40))
def test_generated_clouds_keep_every_rule(seed):
    rnd = random.Random(1000 + seed)
    hosts, instances, roll, spares = generate_cloud(seed, azs=rnd.randint(1, 3), hosts_per_az=rnd.randint(3, 10),
                                                    fill=rnd.choice([0.4, 0.5, 0.6]), spares_per_az=1)
    if seed % 2:
        hosts = _used_with_others(hosts, instances, rnd)
    max_batch = rnd.choice([1, 2, 3, 5])
    in_flight = rnd.choice([None, 2, 4, 8])
    plan = plan_roll(hosts, instances, roll, spares=spares, max_batch=max_batch, max_moves_in_flight=in_flight)
    RollChecker(hosts, instances, roll, max_batch=max_batch, max_moves_in_flight=in_flight).check(plan)
    moved = [m['id'] for m in plan.moves()]
    assert len(moved) == len(set(moved))


def test_most_generated_clouds_with_room_are_planned():
    planned = 0
    for seed in range(30):
        hosts, instances, roll, spares = generate_cloud(seed, fill=0.5, spares_per_az=1)
        plan = plan_roll(hosts, instances, roll, spares=spares, max_batch=2)
        if plan.ok:
            RollChecker(hosts, instances, roll, max_batch=2).check(plan)
            planned += 1
    assert planned >= 27


def test_refusal_says_what_is_missing_and_that_much_more_room_lets_the_roll_through():
    hosts, instances, roll, spares = generate_cloud(7, azs=2, hosts_per_az=6, fill=0.9, spares_per_az=0,
                                                    outside_per_az=0, groups=False,
                                                    states=['running', 'stopped'])
    plan = plan_roll(hosts, instances, roll, max_batch=2)
    assert not plan.ok
    assert set(plan.missing) == {'az0', 'az1'}
    for refusal in plan.refusals:
        assert refusal['reason'] == 'capacity'
        assert 'add at least' in refusal['message']
    spare_hosts = []
    for az, missing in plan.missing.items():
        assert missing['vcpus'] > 0 and missing['ram_mb'] > 0
        spare_hosts.append(RollHost('spare-%s' % az, az, (missing['vcpus'] + 8, missing['ram_mb'] + 8192,
                                                          missing['disk_gb'] + 200), used=(0, 0, 0)))
    hosts = hosts + spare_hosts
    plan = plan_roll(hosts, instances, roll, spares=[h.name for h in spare_hosts], max_batch=2)
    assert plan.ok, plan.refusals
    RollChecker(hosts, instances, roll, max_batch=2).check(plan)


def _small_cloud():
    hosts = [RollHost('a', 'z', (8, 8192, 100)), RollHost('b', 'z', (8, 8192, 100)),
             RollHost('c', 'z', (8, 8192, 100)), RollHost('spare', 'z', (8, 8192, 100))]
    instances = [
        RollInstance('1', 'web1', 'a', 'running', (2, 2048, 10), 'g-anti', 'anti-affinity'),
        RollInstance('2', 'web2', 'b', 'running', (2, 2048, 10), 'g-anti', 'anti-affinity'),
        RollInstance('3', 'db1', 'c', 'stopped', (2, 2048, 10), 'g-aff', 'affinity'),
        RollInstance('4', 'db2', 'c', 'running', (2, 2048, 10), 'g-aff', 'affinity'),
        RollInstance('5', 'broken', 'a', 'error', (1, 1024, 10)),
        RollInstance('6', 'parked', 'b', 'shelved', (1, 1024, 10)),
        RollInstance('7', 'gone', None, 'shelved_offloaded', (1, 1024, 10)),
    ]
    return hosts, instances, ['a', 'b', 'c']


def test_small_cloud_plan_by_hand():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, roll, spares=['spare'], max_batch=1)
    RollChecker(hosts, instances, roll).check(plan)
    assert [b['hosts'] for b in plan.batches] == [['a'], ['b'], ['c']]
    assert [(m['instance'], m['to']) for m in plan.batches[0]['moves']] == [('web1', 'spare')]
    assert plan.batches[0]['stay'][0]['instance'] == 'broken'
    # web2 cannot join web1 on the spare: it lands on a, maintained just before.
    assert [(m['instance'], m['to']) for m in plan.batches[1]['moves']] == [('web2', 'a')]
    assert [(o['instance'], o['to']) for o in plan.batches[1]['offloads']] == [('parked', None)]
    assert set(m['to'] for m in plan.batches[2]['moves']) in ({'spare'}, {'a'}, {'b'})
    assert 'gone' not in [m['instance'] for m in plan.moves()]


def test_without_room_outside_the_roll_the_first_batch_cannot_go():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts[:3], instances, roll)
    assert not plan.ok
    assert plan.refusals[0]['reason'] == 'capacity'
    assert plan.missing['z']['vcpus'] > 0


def test_resumed_roll_does_not_drain_maintained_hosts_again():
    hosts, instances, roll = _small_cloud()
    # a was maintained by the interrupted run: web1 is on the spare now.
    instances = [i._replace(host='spare') if i.name == 'web1' else i for i in instances]
    plan = plan_roll(hosts, instances, roll, spares=['spare'], maintained=['a'])
    assert 'a' not in [h for b in plan.batches for h in b['hosts']]
    assert plan.as_dict()['already_maintained'] == ['a']
    RollChecker(hosts, instances, roll, maintained=['a']).check(plan)
    assert any(m['to'] == 'a' for m in plan.moves())


def test_rescued_instance_refuses_the_plan_with_the_drains_policy():
    hosts, instances, roll = _small_cloud()
    instances.append(RollInstance('8', 'saved', 'b', 'rescued', (1, 1024, 10)))
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    assert not plan.ok and plan.batches == []
    assert 'saved' in plan.refusals[0]['message'] and 'rescued_policy=fail' in plan.refusals[0]['message']
    plan = plan_roll(hosts, instances, roll, spares=['spare'], policies={'rescued_policy': 'skip'})
    assert plan.ok


def test_error_instance_moves_when_the_policy_says_so():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, roll, spares=['spare'], policies={'error_policy': 'move'})
    assert 'broken' in [m['instance'] for m in plan.moves()]


def test_affinity_group_split_by_a_member_that_stays_is_refused():
    hosts, instances, roll = _small_cloud()
    instances.append(RollInstance('9', 'db3', 'c', 'error', (1, 1024, 10), 'g-aff', 'affinity'))
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    assert not plan.ok
    assert plan.refusals[0]['reason'] == 'affinity' and 'db3' in plan.refusals[0]['message']


def test_affinity_group_spanning_hosts_is_refused():
    hosts, instances, roll = _small_cloud()
    instances = [i._replace(host='b') if i.name == 'db1' else i for i in instances]
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    assert [r['reason'] for r in plan.refusals] == ['affinity']


def test_affinity_members_land_together_or_wait():
    hosts = [RollHost('c', 'z', (8, 8192, 100)), RollHost('s1', 'z', (4, 4096, 100)),
             RollHost('s2', 'z', (4, 4096, 100))]
    instances = [RollInstance(str(n), 'db%d' % n, 'c', 'running', (2, 2048, 10), 'g', 'affinity') for n in range(3)]
    plan = plan_roll(hosts, instances, ['c'], spares=['s1', 's2'])
    assert not plan.ok      # 6 vCPU together: no single spare holds them, although the two hold them in sum
    assert plan.missing['z']['vcpus'] == 6
    hosts.append(RollHost('s3', 'z', (8, 8192, 100)))
    plan = plan_roll(hosts, instances, ['c'], spares=['s1', 's2', 's3'])
    assert set(m['to'] for m in plan.moves()) == {'s3'}


def test_instances_stay_in_their_zone():
    hosts = [RollHost('a', 'z1', (8, 8192, 100)), RollHost('b', 'z2', (64, 65536, 1000))]
    instances = [RollInstance('1', 'vm', 'a', 'running', (2, 2048, 10))]
    plan = plan_roll(hosts, instances, ['a'])
    assert not plan.ok and list(plan.missing) == ['z1']


def test_allocation_ratio_and_reserved_count():
    instances = [RollInstance('1', 'vm', 'a', 'running', (4, 2048, 10))]
    tight = [RollHost('a', 'z', (8, 8192, 100)), RollHost('b', 'z', (4, 8192, 100), reserved=(1, 0, 0))]
    assert not plan_roll(tight, instances, ['a']).ok
    loose = [tight[0], tight[1]._replace(ratio=(2.0, 1.0, 1.0))]
    assert plan_roll(loose, instances, ['a']).moves()[0]['to'] == 'b'


def test_excluded_hosts_take_nothing():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, roll, spares=['spare'], excluded=['spare'])
    assert not plan.ok


def test_moves_in_flight_cap_the_batch():
    hosts, instances, roll, spares = generate_cloud(3, azs=1, hosts_per_az=8, fill=0.3, spares_per_az=2)
    plan = plan_roll(hosts, instances, roll, spares=spares, max_batch=6, max_moves_in_flight=4)
    assert plan.ok
    assert max(len(b['hosts']) for b in plan.batches) <= 4
    assert all(b['window'] * len(b['hosts']) <= 4 for b in plan.batches)
    RollChecker(hosts, instances, roll, max_batch=6, max_moves_in_flight=4).check(plan)


@pytest.mark.parametrize('kwargs, words', [
    (dict(max_batch=0), 'max_batch'),
    (dict(max_moves_in_flight=0), 'max_moves_in_flight'),
    (dict(spares=['a']), 'spare hosts cannot be in the roll'),
    (dict(spares=['nowhere']), 'nowhere'),
    (dict(policies={'colour': 'red'}), 'colour'),
])
def test_bad_input_is_refused(kwargs, words):
    hosts, instances, roll = _small_cloud()
    with pytest.raises(InvalidRequest) as error:
        plan_roll(hosts, instances, roll, **kwargs)
    assert words in str(error.value)


def test_checker_catches_a_broken_plan():
    """The checker is not a rubber stamp: a plan moving an instance onto a host still to be maintained fails."""
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    plan.batches[0]['moves'][0]['to'] = 'c'
    with pytest.raises(AssertionError, match='still to be maintained'):
        RollChecker(hosts, instances, roll).check(plan)
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    plan.batches[1]['moves'][0]['to'] = 'spare'          # next to web1
    with pytest.raises(AssertionError, match='anti-affinity'):
        RollChecker(hosts, instances, roll).check(plan)


@pytest.mark.parametrize('seed', range(10))
def test_interrupted_roll_resumed_moves_nobody_twice(seed):
    """Run part of a plan, read the cloud as it is then, plan again with the hosts done: over both runs
    each instance moves at most once and every host is maintained once."""
    hosts, instances, roll, spares = generate_cloud(seed, azs=2, hosts_per_az=6, fill=0.5, spares_per_az=1)
    first = plan_roll(hosts, instances, roll, spares=spares, max_batch=2)
    assert first.ok and len(first.batches) >= 3
    cut = len(first.batches) // 2
    checker = RollChecker(hosts, instances, roll, max_batch=2)
    for batch in first.batches[:cut]:
        checker.check_batch(batch)
    # The cloud after the interruption: instances where the checker's replay put them, Placement's usage
    # recomputed (as a new read would give it), offloaded instances without a host.
    now = [i._replace(host=checker.where[i.id], state='shelved_offloaded' if checker.where[i.id] is None
                      and i.host is not None else i.state) for i in instances]
    read_again = [h._replace(used=tuple(checker.used[h.name])) for h in hosts]
    done = sorted(checker.maintained)
    second = plan_roll(read_again, now, roll, spares=spares, maintained=done, max_batch=2)
    assert second.ok, second.refusals
    assert not set(done) & set(h for b in second.batches for h in b['hosts'])
    for batch in second.batches:
        checker.check_batch(batch)
    assert checker.maintained == set(roll)
    assert max(checker.moved.values()) == 1


def must_refuse_affinity(instances, roll, maintained=()):
    """(group, host) of every affinity member that a roll would have to move: written out here, apart from
    the planner, from EXPECTED."""
    todo = set(roll) - set(maintained)
    return set((i.group, i.host) for i in instances
               if i.policy == 'affinity' and i.host in todo and EXPECTED[i.state] == 'move')


@pytest.mark.parametrize('seed', range(30))
def test_with_the_schedulers_limits_affinity_hosts_are_refused_and_group_sources_avoided(seed):
    """Nova's limits: an affinity member cannot be moved (the plan refuses, naming group and host), and an
    anti-affinity member never lands where another member of its group left.  Leaving the refused hosts out
    of the roll gives a plan that keeps both."""
    rnd = random.Random(5000 + seed)
    hosts, instances, roll, spares = generate_cloud(seed, azs=rnd.randint(1, 2), hosts_per_az=rnd.randint(3, 8),
                                                    fill=0.4, spares_per_az=1,
                                                    states=['running', 'stopped', 'paused', 'suspended'])
    limits = dict(move_affinity=False, reuse_group_sources=False)
    max_batch = rnd.choice([1, 2, 3])
    plan = plan_roll(hosts, instances, roll, spares=spares, max_batch=max_batch, **limits)
    expected = must_refuse_affinity(instances, roll)
    refused = set((r['group'], r['host']) for r in plan.refusals if r['reason'] == 'affinity')
    assert refused == expected
    for refusal in plan.refusals:
        if refusal['reason'] == 'affinity':
            assert refusal['host'] in refusal['message'] and 'out of the roll' in refusal['message']
    if not expected:
        assert plan.ok, plan.refusals
    roll = [name for name in roll if name not in set(host for _group, host in expected)]
    plan = plan_roll(hosts, instances, roll, spares=spares, max_batch=max_batch, **limits)
    assert plan.ok, plan.refusals
    RollChecker(hosts, instances, roll, max_batch=max_batch, **limits).check(plan)


def test_an_anti_affinity_member_does_not_land_where_another_left():
    """web1 leaves a for the spare; without the limit web2 lands on a (maintained just before), with it
    web2 goes elsewhere."""
    hosts, instances, roll = _small_cloud()
    roll = ['a', 'b']
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    assert [(m['instance'], m['to']) for m in plan.batches[1]['moves']] == [('web2', 'a')]
    plan = plan_roll(hosts, instances, roll, spares=['spare'], reuse_group_sources=False)
    assert [(m['instance'], m['to']) for m in plan.batches[1]['moves']] == [('web2', 'c')]
    RollChecker(hosts, instances, roll, reuse_group_sources=False).check(plan)


def test_checker_catches_a_move_onto_a_group_source_and_an_affinity_move():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, ['a', 'b'], spares=['spare'], reuse_group_sources=False)
    plan.batches[1]['moves'][0]['to'] = 'a'
    with pytest.raises(AssertionError, match='where a member of its anti-affinity group left'):
        RollChecker(hosts, instances, ['a', 'b'], reuse_group_sources=False).check(plan)
    plan = plan_roll(hosts, instances, roll, spares=['spare'])
    with pytest.raises(AssertionError, match='affinity member is moved'):
        RollChecker(hosts, instances, roll, move_affinity=False).check(plan)


def test_affinity_refusal_names_group_host_and_members():
    hosts, instances, roll = _small_cloud()
    plan = plan_roll(hosts, instances, roll, spares=['spare'], move_affinity=False)
    assert not plan.ok and plan.batches == []
    assert [(r['reason'], r['group'], r['host']) for r in plan.refusals] == [('affinity', 'g-aff', 'c')]
    assert sorted(plan.refusals[0]['instances']) == ['3', '4']
    assert 'db1' in plan.refusals[0]['message'] and 'db2' in plan.refusals[0]['message']
    plan = plan_roll(hosts, instances, roll, spares=['spare'], maintained=['c'], move_affinity=False)
    assert plan.ok


def test_a_cold_move_leaves_no_ghost():
    """Stopped web1 leaves a cold (the drain confirms it, Nova forgets it there): web2 may land on a."""
    hosts, instances, roll = _small_cloud()
    instances = [i._replace(state='stopped') if i.name == 'web1' else i for i in instances]
    plan = plan_roll(hosts, instances, ['a', 'b'], spares=['spare'], reuse_group_sources=False)
    assert [(m['instance'], m['to']) for m in plan.batches[1]['moves']] == [('web2', 'a')]
    RollChecker(hosts, instances, ['a', 'b'], reuse_group_sources=False).check(plan)
