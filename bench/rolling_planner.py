"""Benchmark: the rolling planner alone on a simulated cloud of 500 hosts and 20,000 instances.

No sandbox: the planner is pure (plugins/module_utils/core/rolling_plan.py).  The cloud is generated
from a seed: 500 compute hosts in 4 availability zones (48 or 64 vCPU, 512 or 768 GiB, 4 TB disk; CPU
allocation ratio 4, RAM 1.0, 8 GiB and 2 vCPU reserved), 20,000 instances of six flavors (mostly
running, some stopped, paused, suspended, shelved and in error), 200 anti-affinity groups of 3 to 5
members and 100 affinity groups of 2 to 3, placed so that the cloud starts legal.  All 500 hosts are in
the roll; nothing is outside it, so a move-once roll needs spare room.

Measured:
  * plan time of the whole roll (median of --rounds), once the spares it needs are there;
  * the spare capacity a move-once roll needs: the planner, run with no spare, says what is missing per
    zone; spares of that size (rounded up to whole hosts of the zone's biggest size) are added and the
    plan is run again until it goes through.  Reported: spare hosts, vCPU, RAM, disk per zone, and the
    plan's batches and moves;
  * the independent checker of the unit tests replays the plan (every invariant), outside the timing.

Usage (collection linked: . scripts/lib.sh && link_collection):
  .venv/bin/python bench/rolling_planner.py [--hosts 500] [--instances 20000] [--max-batch 10]
      [--in-flight 40] [--rounds 3] [--seed 1] [--markdown FILE]
"""

import argparse
import collections
import os
import random
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.build', 'collections'))

FLAVORS = [(1, 2048, 20), (2, 4096, 40), (2, 8192, 40), (4, 8192, 80), (4, 16384, 80), (8, 32768, 160)]
# Small flavors are the most common, as in most clouds.
FLAVOR_MIX = FLAVORS[:2] * 3 + FLAVORS[2:4] * 2 + FLAVORS[4:]
STATES = ['running'] * 14 + ['stopped'] * 3 + ['paused', 'suspended', 'shelved', 'error']
ZONES = 4


def generate(hosts_count, instances_count, seed):
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import RollHost, RollInstance
    rnd = random.Random(seed)
    hosts = []
    for n in range(hosts_count):
        vcpus = rnd.choice([48, 64])
        hosts.append(RollHost('cmp%04d' % n, 'az%d' % (n % ZONES), (vcpus, rnd.choice([524288, 786432]), 4000),
                              (2, 8192, 0), (4.0, 1.0, 1.0), None))
    limit = dict((h.name, [(h.total[k] - h.reserved[k]) * h.ratio[k] for k in range(3)]) for h in hosts)
    used = dict((h.name, [0, 0, 0]) for h in hosts)
    by_zone = collections.defaultdict(list)
    for h in hosts:
        by_zone[h.az].append(h.name)
    instances = []

    def fits(name, size):
        return all(used[name][k] + size[k] <= limit[name][k] for k in range(3))

    def add(name, size, state, group=None, policy=None):
        used[name] = [a + b for a, b in zip(used[name], size)]
        instances.append(RollInstance('i%06d' % len(instances), 'vm%06d' % len(instances), name, state, size,
                                      group, policy, None))

    for g in range(100):
        name, size = rnd.choice(hosts).name, rnd.choice(FLAVORS[:4])
        for _ in range(rnd.randint(2, 3)):
            if fits(name, size):
                add(name, size, rnd.choice(['running', 'stopped']), 'aff%03d' % g, 'affinity')
    for g in range(200):
        zone = by_zone['az%d' % rnd.randrange(ZONES)]
        size = rnd.choice(FLAVORS[:4])
        for name in rnd.sample(zone, rnd.randint(3, 5)):
            if fits(name, size):
                add(name, size, rnd.choice(STATES), 'anti%03d' % g, 'anti-affinity')
    names = [h.name for h in hosts]
    for _ in range(instances_count * 20):
        if len(instances) >= instances_count:
            break
        name, size = rnd.choice(names), rnd.choice(FLAVOR_MIX)
        if fits(name, size):
            add(name, size, rnd.choice(STATES))
    return hosts, instances


def plan_with_spares(hosts, instances, roll, args):
    """Add spares of the size the planner says is missing until the plan goes through."""
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import RollHost, plan_roll
    biggest = max(hosts, key=lambda h: h.total[0]).total
    spares, rounds, first_missing = [], 0, None
    while True:
        rounds += 1
        plan = plan_roll(hosts + spares, instances, roll, spares=[s.name for s in spares],
                         max_batch=args.max_batch, max_moves_in_flight=args.in_flight)
        if plan.ok or rounds > 20:
            return plan, spares, first_missing
        if first_missing is None:
            first_missing = plan.missing
        for az, missing in plan.missing.items():
            per_host = [(biggest[k] - (2, 8192, 0)[k]) * (4.0, 1.0, 1.0)[k] for k in range(3)]
            count = max(1, max(int(-(-missing[key] // per_host[k])) for k, key in
                               enumerate(('vcpus', 'ram_mb', 'disk_gb'))))
            for _ in range(count):
                spares.append(RollHost('spare%03d' % len(spares), az, biggest, (2, 8192, 0), (4.0, 1.0, 1.0),
                                       (0, 0, 0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--hosts', type=int, default=500)
    parser.add_argument('--instances', type=int, default=20000)
    parser.add_argument('--max-batch', type=int, default=10)
    parser.add_argument('--in-flight', type=int, default=40)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--markdown')
    args = parser.parse_args()
    from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import plan_roll

    hosts, instances = generate(args.hosts, args.instances, args.seed)
    roll = [h.name for h in hosts]
    plan, spares, first_missing = plan_with_spares(hosts, instances, roll, args)
    if not plan.ok:
        sys.exit('no plan even with %d spares: %s' % (len(spares), plan.refusals[:2]))
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        plan = plan_roll(hosts + spares, instances, roll, spares=[s.name for s in spares],
                         max_batch=args.max_batch, max_moves_in_flight=args.in_flight)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    refused = plan_roll(hosts, instances, roll, max_batch=args.max_batch, max_moves_in_flight=args.in_flight)
    refusal_time = time.perf_counter() - started

    checked = 'not run (tests tree not found)'
    try:
        from ansible_collections.vmops.lifecycle.tests.unit.plugins.module_utils.core.test_rolling_plan import (
            RollChecker)
        RollChecker(hosts + spares, instances, roll, max_batch=args.max_batch,
                    max_moves_in_flight=args.in_flight).check(plan)
        checked = 'every invariant holds'
    except ImportError:
        pass

    states = collections.Counter(i.state for i in instances)
    spare_room = collections.defaultdict(lambda: [0, 0, 0, 0])
    for s in spares:
        row = spare_room[s.az]
        row[0] += 1
        for k in range(3):
            row[k + 1] += s.total[k]
    moved = len(plan.moves())
    offloaded = sum(len(b['offloads']) for b in plan.batches)
    stay = sum(len(b['stay']) for b in plan.batches)
    lines = [
        '%d hosts (%d zones), %d instances (%s), max_batch %d, max_moves_in_flight %d, seed %d'
        % (len(hosts), ZONES, len(instances), ', '.join('%s %d' % kv for kv in sorted(states.items())),
           args.max_batch, args.in_flight, args.seed),
        '',
        '| figure | value |', '|---|---:|',
        '| plan time, median of %d (s) | %.3f |' % (args.rounds, statistics.median(times)),
        '| plan time, min / max (s) | %.3f / %.3f |' % (min(times), max(times)),
        '| refusal with no spare (s) | %.3f |' % refusal_time,
        '| batches | %d |' % len(plan.batches),
        '| instances moved (each once) | %d |' % moved,
        '| shelved offloaded | %d |' % offloaded,
        '| left on their host (error_policy=skip) | %d |' % stay,
        '| spare hosts the move-once roll needed | %d |' % len(spares),
        '| independent checker | %s |' % checked,
        '',
        '| zone | missing with no spare (vCPU / RAM MiB / disk GB) | spares added | spare vCPU / RAM MiB / disk GB |',
        '|---|---|---:|---|',
    ]
    for az in sorted(spare_room):
        miss = (first_missing or {}).get(az, {})
        row = spare_room[az]
        lines.append('| %s | %s / %s / %s | %d | %d / %d / %d |' % (
            az, miss.get('vcpus'), miss.get('ram_mb'), miss.get('disk_gb'), row[0], row[1], row[2], row[3]))
    text = '\n'.join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, 'w') as handle:
            handle.write(text + '\n')


if __name__ == '__main__':
    main()
