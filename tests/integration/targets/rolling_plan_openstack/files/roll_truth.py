#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling_plan target's own reads and writes, with plain openstacksdk (never the collection's code).

  setup PREFIX NAME@HOST[@GROUP][=STATE] ...   server groups PREFIX<GROUP>: anti* anti-affinity, aff* affinity
                                              (affinity), the servers booted on their hosts, then driven
                                              to STATE (stopped or rescued); prints {name: id}
  state PREFIX                                 the host, status and task of the servers of PREFIX, and every
                                              compute service's status (to show that nothing changed)
  check PLAN_JSON                              the plan against Nova: prints the problems (exit 1 if any)
  cleanup PREFIX                               delete the servers and groups of PREFIX and wait until gone
"""

import argparse
import collections
import json
import re
import sys
import time

import openstack

CLOUD = 'vmops-admin'
SETTLING = ('BUILD', 'REBOOT', 'HARD_REBOOT', 'RESIZE', 'MIGRATING', 'REVERT_RESIZE', 'REBUILD')


def wait_settled(conn, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        servers = dict((i, conn.compute.get_server(i)) for i in ids)
        failed = [s.name for s in servers.values() if s.status == 'ERROR']
        if failed:
            sys.exit('servers in ERROR: %s' % ', '.join(failed))
        if all(s.task_state is None and s.status not in SETTLING for s in servers.values()):
            return servers
        if time.monotonic() > deadline:
            sys.exit('timed out: %s' % dict((s.name, (s.status, s.task_state)) for s in servers.values()))
        time.sleep(0.5)


def setup(conn, prefix, specs):
    compute = conn.compute
    image = conn.image.find_image('vmops-guest', ignore_missing=False)
    flavor = compute.find_flavor('vmops.tiny', ignore_missing=False)
    network = conn.network.find_network('private', ignore_missing=False)
    # a group named anti... is anti-affinity, aff... affinity; made once, when a spec first names it
    groups = {}
    for spec in specs:
        group = (spec.partition('=')[0].split('@') + [None])[2]
        if group and group not in groups:
            policy = 'anti-affinity' if group.startswith('anti') else 'affinity'
            groups[group] = compute.create_server_group(name=prefix + group, policy=policy)
    ids, wanted = {}, {}
    for spec in specs:
        spec, _sep, state = spec.partition('=')
        name, host, group = (spec.split('@') + [None])[:3]
        extra = {'scheduler_hints': {'group': groups[group].id}} if group else {}
        server = compute.create_server(name=prefix + name, image_id=image.id, flavor_id=flavor.id,
                                       networks=[{'uuid': network.id}], availability_zone='nova:%s' % host, **extra)
        ids[server.id] = prefix + name
        wanted[server.id] = state or 'running'
    servers = wait_settled(conn, list(ids))
    for server_id, state in wanted.items():
        if state == 'stopped':
            compute.stop_server(servers[server_id])
        elif state == 'rescued':
            compute.rescue_server(servers[server_id])
    wait_settled(conn, list(ids))
    return dict((name, server_id) for server_id, name in ids.items())


def state(conn, prefix):
    """The target's own servers (another run's servers may move meanwhile) and every compute service."""
    servers = dict((s.id, {'name': s.name, 'host': s.compute_host, 'status': s.status, 'task': s.task_state})
                   for s in conn.compute.servers(all_projects=True) if s.name.startswith(prefix))
    services = dict((s.host, {'status': s.status, 'state': s.state, 'forced_down': bool(s.is_forced_down),
                              'disabled_reason': s.disabled_reason})
                    for s in conn.compute.services(binary='nova-compute'))
    return {'servers': servers, 'services': services, 'mine': sorted(v['name'] for v in servers.values())}


def check(conn, plan):
    """Every rule the plan claims, read back from Nova; returns the list of problems."""
    problems = []
    servers = dict((s.id, s) for s in conn.compute.servers(all_projects=True))
    zone_of = dict((s.host, s.availability_zone) for s in conn.compute.services(binary='nova-compute'))
    batch_of = {}
    for number, batch in enumerate(plan['batches'], 1):
        for host in batch['hosts']:
            if host in batch_of:
                problems.append('host %s in batches %s and %s' % (host, batch_of[host], number))
            batch_of[host] = number
    listed = collections.Counter()
    end = dict((s.id, s.compute_host) for s in servers.values())
    for number, batch in enumerate(plan['batches'], 1):
        entries = [('move', m, m['from']) for m in batch['moves']] + \
                  [('offload', o, o['from']) for o in batch['offloads']] + \
                  [('stay', s, s['host']) for s in batch['stay']]
        for kind, entry, source in entries:
            listed[entry['id']] += 1
            server = servers.get(entry['id'])
            if server is None:
                problems.append('%s %s is not a server of the cloud' % (kind, entry['id']))
                continue
            if server.compute_host != source:
                problems.append('%s is on %s, not on %s as planned' % (server.name, server.compute_host, source))
            if source not in batch['hosts']:
                problems.append('%s leaves %s in batch %d, which does not take that host down'
                                % (server.name, source, number))
            if kind == 'move':
                target = entry['to']
                if batch_of.get(target, 0) >= number:
                    problems.append('%s goes to %s, a host of batch %d (this is batch %d)'
                                    % (server.name, target, batch_of[target], number))
                if zone_of.get(target) != server.availability_zone:
                    problems.append('%s (zone %s) goes to %s in zone %s'
                                    % (server.name, server.availability_zone, target, zone_of.get(target)))
                end[entry['id']] = target
            elif kind == 'offload':
                end[entry['id']] = None
    problems += ['%s is listed %d times' % (servers[i].name if i in servers else i, n)
                 for i, n in listed.items() if n > 1]
    for server in servers.values():
        if server.compute_host in batch_of and server.id not in listed and server.status != 'SHELVED_OFFLOADED':
            problems.append('%s on %s (batch %d) is not in the plan'
                            % (server.name, server.compute_host, batch_of[server.compute_host]))
    groups = list(conn.compute.server_groups(all_projects=True))
    group_of = dict((member, group) for group in groups for member in group.member_ids)
    left = collections.defaultdict(dict)        # anti-affinity group id -> {host a member left live: batch}
    for number, batch in enumerate(plan['batches'], 1):
        for move in batch['moves']:
            group = group_of.get(move['id'])
            name = servers[move['id']].name if move['id'] in servers else move['id']
            if group is not None and group.policy == 'affinity':
                problems.append('%s, a member of affinity group %s, is moved (Nova refuses it)' % (name, group.name))
            if group is not None and group.policy == 'anti-affinity':
                if move['to'] in left[group.id]:
                    problems.append('%s lands on %s, which another member of %s left in batch %d'
                                    % (name, move['to'], group.name, left[group.id][move['to']]))
        for move in batch['moves']:
            group = group_of.get(move['id'])
            if group is not None and group.policy == 'anti-affinity' and move['move'] == 'live':
                left[group.id].setdefault(move['from'], number)
    for group in groups:
        hosts = [end.get(member) for member in group.member_ids if end.get(member)]
        if group.policy == 'anti-affinity' and len(hosts) != len(set(hosts)):
            problems.append('anti-affinity group %s shares hosts at the end: %s' % (group.name, sorted(hosts)))
        if group.policy == 'affinity' and len(set(hosts)) > 1:
            problems.append('affinity group %s spans hosts at the end: %s' % (group.name, sorted(set(hosts))))
    return problems


def cleanup(conn, prefix):
    compute = conn.compute
    mine = list(compute.servers(all_projects=True, name='^%s' % re.escape(prefix)))
    for server in mine:
        compute.delete_server(server)
    for server in mine:
        compute.wait_for_delete(server, wait=120)
    for group in compute.server_groups(all_projects=True):
        if group.name.startswith(prefix):
            compute.delete_server_group(group)
    return {'deleted': sorted(s.name for s in mine)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', default=CLOUD)
    sub = parser.add_subparsers(dest='command', required=True)
    create = sub.add_parser('setup')
    create.add_argument('prefix')
    create.add_argument('specs', nargs='+')
    sub.add_parser('state').add_argument('prefix')
    sub.add_parser('check').add_argument('plan')
    sub.add_parser('cleanup').add_argument('prefix')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    if args.command == 'setup':
        print(json.dumps(setup(conn, args.prefix, args.specs)))
    elif args.command == 'state':
        print(json.dumps(state(conn, args.prefix), sort_keys=True))
    elif args.command == 'check':
        with open(args.plan) as handle:
            plan = json.load(handle)
        problems = check(conn, plan)
        print(json.dumps({'problems': problems, 'batches': len(plan['batches']),
                          'moves': sum(len(b['moves']) for b in plan['batches'])}))
        if problems:
            sys.exit(1)
    else:
        print(json.dumps(cleanup(conn, args.prefix)))


if __name__ == '__main__':
    main()
