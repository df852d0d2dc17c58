# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a rolling maintenance over many hosts, in which each instance moves at most once.

Pure: no I/O.  The caller reads the cloud (hosts and their capacity, instances) and gets back the batches.

The one rule that makes every instance move at most once: an instance leaves a host only for a host
that is already maintained or that is not in the roll.  So the first batch lands on free room outside
the roll (or on a spare host), and every later batch lands on hosts maintained before it.

Besides that rule, every plan keeps:
  * server groups: members of an anti-affinity group never share a host; the members of an affinity
    group on a host move together to one host (a group that already spans hosts, or whose members
    would be split because one of them stays, is refused);
  * availability zones: an instance lands in its own zone;
  * capacity as Placement counts it: used + wanted <= (total - reserved) * allocation_ratio, for vCPU,
    RAM and disk, on every host after every move;
  * the drain's state policies (core/move_backend.policy_decision with the same defaults as
    host_evacuate): running, paused, stopped and suspended instances move; shelved ones are offloaded
    (they leave the host and land nowhere); error ones stay (error_policy=skip) and go down with the
    host; shelved_offloaded ones have no host; a `fail` policy (rescued by default) refuses the plan.

When the room is not there, the plan says how much is missing, per availability zone, so the
operator can add a spare host before anything moves.

Resumable: hosts listed in `maintained` are not drained again and already count as destinations.

Two limits of a scheduler that checks every move (Nova's), each a switch of plan_roll:
  * move_affinity=False: a member of an affinity group cannot be moved at all (the scheduler accepts only
    hosts where the group already is), so a roll that must drain one is refused, naming the group and host;
  * reuse_group_sources=False: a host that a member of an anti-affinity group left by a live move during
    the roll takes no other member of that group.  After a live move the scheduler's cached view of the
    source host still holds the member until the compute's periodic sync (and the destination's late
    check counts a migration not yet closed), so a planned move onto it would be refused.  A cold move
    is confirmed by the drain, which clears both.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import heapq

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_request import MoveRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    FAIL, LIVE, NONE, OFFLOAD, SKIP, UNMOVABLE, MoveSubject, policy_decision)

RESOURCES = ('vcpus', 'ram_mb', 'disk_gb')

# One host's room, as Placement reports it.  total, reserved, used: (vcpus, ram_mb, disk_gb);
# ratio: the allocation ratios in the same order.  used=None: the sum of the instances listed on it.
RollHost = collections.namedtuple('RollHost', 'name az total reserved ratio used')
RollHost.__new__.__defaults__ = ((0, 0, 0), (1.0, 1.0, 1.0), None)

# One instance.  size: (vcpus, ram_mb, disk_gb); group: server group id or None; policy: the group's
# policy (anti-affinity, affinity, soft-anti-affinity, soft-affinity); az: None = its host's zone.
RollInstance = collections.namedtuple('RollInstance', 'id name host state size group policy az')
RollInstance.__new__.__defaults__ = (None, None, None)

HARD_POLICIES = ('anti-affinity', 'affinity')


class RollingPlan(object):
    """The batches in order, what stays where it is, and the refusals (the plan is usable when ok)."""

    def __init__(self, batches, refusals, missing, maintained):
        self.batches = batches
        self.refusals = refusals
        self.missing = missing          # {az: {vcpus, ram_mb, disk_gb}} to add before the roll can go on
        self.maintained = maintained    # hosts already maintained before this plan (resumed run)

    @property
    def ok(self):
        return not self.refusals

    def moves(self):
        return [move for batch in self.batches for move in batch['moves']]

    def as_dict(self):
        return {'ok': self.ok, 'batches': self.batches, 'refusals': self.refusals, 'missing': self.missing,
                'already_maintained': sorted(self.maintained)}


class _Host(object):
    """A host's room while planning: capacity and used per resource, and the anti-affinity groups on it."""

    __slots__ = ('name', 'az', 'capacity', 'used', 'groups', 'version')

    def __init__(self, spec):
        self.name = spec.name
        self.az = spec.az
        self.capacity = [(spec.total[i] - spec.reserved[i]) * spec.ratio[i] for i in range(3)]
        self.used = list(spec.used) if spec.used is not None else None
        self.groups = collections.Counter()
        self.version = 0

    def free(self):
        return [self.capacity[i] - self.used[i] for i in range(3)]

    def fits(self, size):
        used, capacity = self.used, self.capacity
        return (used[0] + size[0] <= capacity[0] and used[1] + size[1] <= capacity[1]
                and used[2] + size[2] <= capacity[2])

    def room_key(self):
        """Worst fit: the host with the most free room (as a share of its capacity) first."""
        shares = [(self.capacity[i] - self.used[i]) / self.capacity[i] for i in range(3) if self.capacity[i] > 0]
        return -min(shares) if shares else 0.0


class _Unit(object):
    """What moves as one: one instance, or the members of an affinity group on one host.  decisions:
    each member's Decision (the move it takes, live or cold, and its note), in the members' order."""

    __slots__ = ('members', 'decisions', 'size', 'anti_groups', 'source', 'az')

    def __init__(self, members, source, az, decisions):
        self.members = members
        self.decisions = decisions
        self.source = source
        self.az = az
        self.size = [sum(m.size[i] for m in members) for i in range(3)]
        self.anti_groups = [m.group for m in members if m.group and m.policy == 'anti-affinity']


class _Pool(object):
    """The destinations of one availability zone: hosts maintained or outside the roll, in a heap by room."""

    def __init__(self):
        self.heap = []
        self.free = [0.0, 0.0, 0.0]

    def add(self, host):
        self.push(host)
        for i, value in enumerate(host.free()):
            self.free[i] += value

    def push(self, host):
        host.version += 1
        heapq.heappush(self.heap, (host.room_key(), host.name, host.version, host))

    def place(self, unit):
        """The host with the most room that takes the unit, or None.  Hosts passed over go back."""
        passed, chosen = [], None
        heap = self.heap
        while heap:
            entry = heapq.heappop(heap)
            host = entry[3]
            if entry[2] != host.version:
                continue
            if host.fits(unit.size) and not any(host.groups[g] for g in unit.anti_groups):
                chosen = host
                break
            passed.append(entry)
        for entry in passed:
            heapq.heappush(heap, entry)
        if chosen is not None:
            self.take(chosen, unit.size, unit.anti_groups, 1)
            self.push(chosen)
        return chosen

    def take(self, host, size, anti_groups, sign):
        for i in range(3):
            host.used[i] += sign * size[i]
            self.free[i] -= sign * size[i]
        for group in anti_groups:
            host.groups[group] += sign


def _policy_request(policies):
    try:
        return MoveRequest(host='rolling maintenance', **(policies or {}))
    except TypeError as error:
        raise InvalidRequest('policies: %s' % error)


def plan_roll(hosts, instances, roll, maintained=(), spares=(), excluded=(), max_batch=1,
              max_moves_in_flight=None, policies=None, move_affinity=True, reuse_group_sources=True):
    """Plan the roll.

    hosts: [RollHost] of every host that may take part (the roll, the rest of the cloud, the spares);
    instances: [RollInstance] on those hosts; roll: host names to maintain, in the order preferred when
    all else is equal; maintained: hosts of the roll already done (a resumed run); spares: hosts outside
    the roll that are there to take instances (listed in hosts); excluded: hosts that take nothing
    (disabled or down); max_batch: hosts down at once; max_moves_in_flight: moves at once across the
    cloud (each host of a batch gets an equal share as its window, so a batch has at most that many
    hosts); policies: host_evacuate's suspended/shelved/rescued/error_policy; move_affinity: False when
    the backend cannot move a member of an affinity group (the plan refuses to drain one);
    reuse_group_sources: False to keep an anti-affinity group's members off the hosts another member
    left by a live move during the roll (see the module's docstring).
    """
    if max_batch < 1:
        raise InvalidRequest('max_batch must be at least 1, got %s.' % max_batch)
    if max_moves_in_flight is not None and max_moves_in_flight < 1:
        raise InvalidRequest('max_moves_in_flight must be at least 1, got %s.' % max_moves_in_flight)
    request = _policy_request(policies)
    by_name = {}
    for spec in hosts:
        if spec.name in by_name:
            raise InvalidRequest('host %s is listed twice.' % spec.name)
        by_name[spec.name] = _Host(spec)
    for name in list(roll) + list(maintained) + list(spares) + list(excluded):
        if name not in by_name:
            raise InvalidRequest('host %s is not among the hosts whose capacity was given.' % name)
    in_roll = set(roll)
    clash = in_roll & set(spares)
    if clash:
        raise InvalidRequest('spare hosts cannot be in the roll: %s.' % ', '.join(sorted(clash)))
    done = set(maintained) & in_roll
    batch_cap = max_batch if max_moves_in_flight is None else min(max_batch, max_moves_in_flight)

    on_host = collections.defaultdict(list)
    unknown_usage = dict((name, host) for name, host in by_name.items() if host.used is None)
    for host in unknown_usage.values():
        host.used = [0, 0, 0]
    for instance in instances:
        host = by_name.get(instance.host)
        if host is None:
            continue                                 # no host (shelved_offloaded) or outside what was read
        on_host[instance.host].append(instance)
        if instance.host in unknown_usage:
            for i in range(3):
                host.used[i] += instance.size[i]
        if instance.group and instance.policy == 'anti-affinity':
            host.groups[instance.group] += 1

    refusals = []
    units, stays, offloads = _units_per_host(roll, done, on_host, by_name, request, refusals)
    if not move_affinity:
        _refuse_affinity_moves(units, refusals)
    if refusals:
        return RollingPlan([], refusals, {}, done)

    pools = collections.defaultdict(_Pool)
    for name, host in sorted(by_name.items()):
        if name in excluded or (name in in_roll and name not in done):
            continue
        pools[host.az].add(host)

    todo = [name for name in roll if name not in done]
    order = dict((name, index) for index, name in enumerate(roll))
    load = dict((name, [sum(u.size[i] for u in units[name]) for i in range(3)]) for name in todo)
    todo.sort(key=lambda name: (_weight(load[name], by_name[name]), order[name]))

    batches, stuck = [], {}
    while todo:
        batch, moves, left = [], [], []
        for name in todo:
            host = by_name[name]
            if len(batch) >= batch_cap or host.az in stuck:
                left.append(name)
                continue
            placed = _place_host(pools[host.az], units[name], load[name])
            if placed is None:
                left.append(name)
                continue
            batch.append(name)
            moves.extend(placed)
        if not batch:
            for name in left:
                stuck.setdefault(by_name[name].az, []).append(name)
            break
        window = max(1, max_moves_in_flight // len(batch)) if max_moves_in_flight else None
        free_before = _free_by_az(pools)
        for name in batch:
            host = by_name[name]
            if name in excluded:
                continue
            for unit in units[name]:                  # the instances leave: their room on the host is freed
                for i in range(3):
                    host.used[i] -= unit.size[i]
                if reuse_group_sources or unit.decisions[0].move != LIVE:    # else its ghost stays there
                    for group in unit.anti_groups:
                        host.groups[group] -= 1
            for instance in offloads[name]:
                for i in range(3):
                    host.used[i] -= instance.size[i]
            pools[host.az].add(host)
        batches.append({
            'hosts': batch, 'window': window, 'moves': moves,
            'offloads': [_offload_entry(i) for name in batch for i in offloads[name]],
            'stay': [entry for name in batch for entry in stays[name]],
            'free_before': free_before, 'free_after': _free_by_az(pools)})
        todo = left

    missing = {}
    for az, names in sorted(stuck.items(), key=lambda item: str(item[0])):
        shortfall = _shortfall(pools[az], names, load, by_name, units)
        missing[az] = shortfall
        refusals.append({
            'reason': 'capacity',
            'az': az, 'hosts': sorted(names), 'missing': shortfall,
            'message': 'Not enough room to roll %d host(s) of availability zone %s with each instance moving '
                       'once: add at least %s vCPU, %s MiB RAM and %s GB disk (e.g. a spare host), or raise '
                       'allocation ratios.  Hosts waiting: %s.'
                       % (len(names), az, _num(shortfall['vcpus']), _num(shortfall['ram_mb']),
                          _num(shortfall['disk_gb']), ', '.join(sorted(names)))})
    return RollingPlan(batches, refusals, missing, done)


def _units_per_host(roll, done, on_host, by_name, request, refusals):
    """Split each host's instances into units that move, instances that stay and instances offloaded."""
    units, stays, offloads = {}, {}, {}
    affinity_hosts = collections.defaultdict(set)
    for name, instances in on_host.items():
        for instance in instances:
            if instance.group and instance.policy == 'affinity':
                affinity_hosts[instance.group].add(name)
    for group, names in sorted(affinity_hosts.items()):
        if len(names) > 1:
            refusals.append({'reason': 'affinity', 'group': group, 'hosts': sorted(names),
                             'message': 'affinity group %s already spans hosts %s: the roll will not decide '
                                        'which host it belongs on.' % (group, ', '.join(sorted(names)))})
    for name in roll:
        if name in done:
            continue
        host = by_name[name]
        units[name], stays[name], offloads[name] = [], [], []
        together = collections.defaultdict(list)
        staying_groups = {}
        decided = {}
        for instance in sorted(on_host.get(name, ()), key=lambda i: (i.name or '', i.id)):
            subject = MoveSubject(instance.id, instance.name, instance.state, None, name, False, {})
            decision = decided[instance.id] = policy_decision(subject, request)
            az = instance.az if instance.az is not None else host.az
            if decision.move in (FAIL, UNMOVABLE):
                refusals.append({'reason': 'state', 'instance': instance.name, 'id': instance.id, 'host': name,
                                 'message': '%s (%s) on %s: %s' % (instance.name, instance.id, name,
                                                                   decision.reason)})
            elif decision.move in (SKIP, NONE):
                stays[name].append({'instance': instance.name, 'id': instance.id, 'host': name,
                                    'reason': decision.reason})
                if instance.group and instance.policy == 'affinity':
                    staying_groups[instance.group] = instance
            elif decision.move == OFFLOAD:
                offloads[name].append(instance)
            elif az != host.az:
                refusals.append({'reason': 'az', 'instance': instance.name, 'id': instance.id, 'host': name,
                                 'message': '%s (%s) is in availability zone %s but runs on %s in zone %s.'
                                            % (instance.name, instance.id, az, name, host.az)})
            elif instance.group and instance.policy == 'affinity':
                together[instance.group].append(instance)
            else:
                units[name].append(_Unit([instance], name, az, [decision]))
        for group, members in sorted(together.items()):
            if group in staying_groups:
                stay = staying_groups[group]
                refusals.append({'reason': 'affinity', 'group': group, 'host': name,
                                 'message': 'affinity group %s on %s: %s (%s) stays (%s) while its other members '
                                            'must leave, which splits the group.'
                                            % (group, name, stay.name, stay.id, stays[name][-1]['reason'])})
                continue
            units[name].append(_Unit(members, name, host.az, [decided[m.id] for m in members]))
        # The biggest first: the hardest to fit gets the most choice.
        units[name].sort(key=lambda unit: (-unit.size[1], -unit.size[0], -unit.size[2], unit.members[0].id))
    return units, stays, offloads


def _refuse_affinity_moves(units, refusals):
    """The backend's scheduler will not move an affinity member away from the others: refuse each such unit."""
    for name in sorted(units):
        for unit in units[name]:
            member = unit.members[0]
            if not (member.group and member.policy == 'affinity'):
                continue
            names = ', '.join('%s (%s)' % (m.name, m.id) for m in unit.members)
            refusals.append({
                'reason': 'affinity', 'group': member.group, 'host': name,
                'instances': [m.id for m in unit.members],
                'message': 'affinity group %s has %d member(s) on %s, a host of the roll: %s. The compute '
                           'scheduler moves no member of an affinity group away from the others, so they cannot '
                           'be drained. Leave %s out of the roll (it can still take instances), or move the '
                           'group yourself before the roll.' % (member.group, len(unit.members), name, names, name)})


def _place_host(pool, units, load):
    """Place every unit of one host in the pool, or place none (returns the moves, or None)."""
    if any(load[i] > pool.free[i] for i in range(3)):
        return None
    journal = []
    for unit in units:
        target = pool.place(unit)
        if target is None:
            for host, placed in reversed(journal):
                pool.take(host, placed.size, placed.anti_groups, -1)
                pool.push(host)
            return None
        journal.append((target, unit))
    moves = []
    for target, unit in journal:
        for member, decision in zip(unit.members, unit.decisions):
            moves.append({'instance': member.name, 'id': member.id, 'state': member.state, 'from': unit.source,
                          'to': target.name, 'move': decision.move, 'note': decision.note, 'az': unit.az,
                          'group': member.group, 'size': dict(zip(RESOURCES, member.size))})
    return moves


def _offload_entry(instance):
    return {'instance': instance.name, 'id': instance.id, 'state': instance.state, 'from': instance.host,
            'to': None, 'move': OFFLOAD, 'size': dict(zip(RESOURCES, instance.size))}


def _weight(load, host):
    """How heavy a host's moving load is, as a share of its own capacity (lightest go first)."""
    return max([load[i] / host.capacity[i] for i in range(3) if host.capacity[i] > 0] or [0])


def _free_by_az(pools):
    return dict((str(az), dict(zip(RESOURCES, [_num(v) for v in pool.free]))) for az, pool in pools.items())


def _shortfall(pool, names, load, by_name, units):
    """The room to add so that the waiting hosts can roll, one after the other, lightest first.

    Per resource: the pool grows by each maintained host's free room, so the missing room is the largest
    gap between a host's moving load and the pool's free room when its turn comes.  Bin packing can need
    a little more than this sum; an instance bigger than any host's room counts whole.
    """
    free = list(pool.free)
    missing = [0.0, 0.0, 0.0]
    for name in sorted(names, key=lambda n: _weight(load[n], by_name[n])):
        host = by_name[name]
        for i in range(3):
            missing[i] = max(missing[i], load[name][i] - free[i])
            free[i] += host.capacity[i] - host.used[i]
    if not any(missing):
        # Enough room in sum, but no host takes some unit: the biggest unit waiting is what a spare must hold.
        waiting = [unit for name in names for unit in units[name]]
        if waiting:
            missing = list(max(waiting, key=lambda u: (u.size[1], u.size[0])).size)
    return dict(zip(RESOURCES, [_num(max(0, v)) for v in missing]))


def _num(value):
    """Whole numbers as int (JSON and messages read better), others rounded."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


# What a caller (the rolling_plan module) hands to a playbook ---------------------------------------

class RollRefused(VmopsError):
    """No move-once plan exists for what was asked; `details` is the whole result, refusals included."""


def check_roll_options(roll, maintained=(), spares=(), excluded=(), max_batch=1, max_moves_in_flight=None):
    """Refuse contradictory options before anything is read.  roll: None means every host (the caller
    fills it in once the hosts are known), so only the lists given can clash."""
    if max_batch is None or max_batch < 1:
        raise InvalidRequest('max_batch must be at least 1, got %s.' % max_batch)
    if max_moves_in_flight is not None and max_moves_in_flight < 1:
        raise InvalidRequest('max_moves_in_flight must be at least 1, got %s.' % max_moves_in_flight)
    clashes = (('hosts', roll, 'spare_hosts', spares), ('spare_hosts', spares, 'excluded_hosts', excluded),
               ('spare_hosts', spares, 'maintained', maintained))
    for name, first, other, second in clashes:
        both = sorted(set(first or ()) & set(second or ()))
        if both:
            raise InvalidRequest('Host(s) %s listed in both %s and %s: a host is either one or the other.'
                                 % (', '.join(both), name, other))
    if roll is not None:
        outside = sorted(set(maintained or ()) - set(roll))
        if outside:
            raise InvalidRequest('maintained names host(s) that are not in hosts: %s. List the whole roll in hosts '
                                 'and the part of it already done in maintained.' % ', '.join(outside))


def unique_names(names):
    """The names in their order, each once (a host named twice is rolled once)."""
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def roll_result(plan):
    """The plan as plain data for a playbook: the planner's batches (each numbered), the refusals and the
    missing room, plus the totals and the free room per zone before the first batch and after the last."""
    result = plan.as_dict()
    moves = plan.moves()
    offloads = [entry for batch in plan.batches for entry in batch['offloads']]
    stays = [entry for batch in plan.batches for entry in batch['stay']]
    for index, batch in enumerate(result['batches'], 1):
        batch['index'] = index
    result['stay'] = stays
    result['offloads'] = offloads
    result['free_before'] = plan.batches[0]['free_before'] if plan.batches else {}
    result['free_after'] = plan.batches[-1]['free_after'] if plan.batches else {}
    result['totals'] = {
        'batches': len(plan.batches), 'hosts': sum(len(batch['hosts']) for batch in plan.batches),
        'moves': len(moves), 'live': sum(1 for m in moves if m['move'] == 'live'),
        'cold': sum(1 for m in moves if m['move'] == 'cold'), 'offloads': len(offloads), 'stay': len(stays)}
    return result


def name_what_waits(plan, instances, largest=3):
    """Add to each capacity refusal what stands in the way: the largest instances of its waiting hosts
    (`largest`: the room a spare needs starts there) and the anti-affinity groups with members on them
    (their members cannot share a destination, so room in sum may not be enough)."""
    for refusal in plan.refusals:
        if refusal['reason'] != 'capacity':
            continue
        waiting = set(refusal['hosts'])
        on_them = [i for i in instances if i.host in waiting]
        biggest = sorted(on_them, key=lambda i: (-i.size[1], -i.size[0], -i.size[2], i.name or '', i.id))[:largest]
        groups = sorted(set(i.group for i in on_them if i.group and i.policy == 'anti-affinity'))
        refusal['largest'] = [{'instance': i.name, 'id': i.id, 'host': i.host, 'size': dict(zip(RESOURCES, i.size))}
                              for i in biggest]
        refusal['anti_affinity_groups'] = groups
        if biggest:
            sizes = ['%s on %s (%s vCPU, %s MiB, %s GB)'
                     % (i.name, i.host, _num(i.size[0]), _num(i.size[1]), _num(i.size[2])) for i in biggest]
            refusal['message'] += '  Largest instances waiting: %s.' % ', '.join(sizes)
        if groups:
            refusal['message'] += '  Anti-affinity groups with members there (no two on one host): %s.' % ', '.join(groups)


def refusal_message(plan):
    """One message for a refused plan: every refusal's own message, capacity (what to add per zone) first."""
    ordered = sorted(plan.refusals, key=lambda r: (r['reason'] != 'capacity', r['reason']))
    return ('No plan in which each instance moves at most once (%d refusal(s)): %s'
            % (len(ordered), ' '.join(r['message'] for r in ordered)))
