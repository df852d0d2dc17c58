#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role_rolling_maintenance target's own reads, with plain openstacksdk (never the collection's code).

  pause PREFIX NAME...                       pause these servers of PREFIX and wait until PAUSED
  snapshot PREFIX                            the servers of PREFIX (host, status), their migration records
                                             (count per server) and every compute service; JSON on stdout
  check PREFIX BASELINE [--batch JSON] [--final] [--rolled HOST,...]
                                             against a snapshot: each server moved at most once since it
                                             (migration records), its status kept, server groups intact;
                                             with --rolled, those on these hosts moved exactly once and
                                             the others not at all;
                                             with --batch, the batch's hosts hold none of PREFIX's servers
                                             and each planned move of the batch ended on its destination;
                                             with --final, every compute service enabled and up.
                                             Prints the problems (exit 1 if any).
"""

import argparse
import json
import re
import sys
import time

import openstack


def mine(conn, prefix):
    return [s for s in conn.compute.servers(all_projects=True, name='^%s' % re.escape(prefix))
            if s.name.startswith(prefix)]


def migrations(conn, server_id):
    # GET /os-migrations?instance_uuid=: every migration record of the server (live and cold), 2.59+
    response = conn.compute.get('/os-migrations', params={'instance_uuid': server_id},
                                microversion='2.59')
    return [m for m in response.json()['migrations'] if m['instance_uuid'] == server_id]


def snapshot(conn, prefix):
    servers = dict((s.id, {'name': s.name, 'host': s.compute_host, 'status': s.status}) for s in mine(conn, prefix))
    moves = dict((i, len(migrations(conn, i))) for i in servers)
    services = dict((s.host, {'status': s.status, 'state': s.state, 'disabled_reason': s.disabled_reason})
                    for s in conn.compute.services(binary='nova-compute'))
    groups = dict((g.name, {'policy': g.policy, 'members': sorted(g.member_ids)})
                  for g in conn.compute.server_groups(all_projects=True) if g.name.startswith(prefix))
    return {'servers': servers, 'migrations': moves, 'services': services, 'groups': groups}


def check(conn, prefix, baseline, batch=None, final=False, rolled=None):
    now = snapshot(conn, prefix)
    problems = []
    for server_id, before in baseline['servers'].items():
        after = now['servers'].get(server_id)
        if after is None:
            problems.append('%s is gone' % before['name'])
            continue
        count = now['migrations'][server_id] - baseline['migrations'][server_id]
        if count > 1:
            problems.append('%s moved %d times (migration records)' % (before['name'], count))
        if rolled is not None and count != (1 if before['host'] in rolled else 0):
            problems.append('%s (on %s) moved %d times' % (before['name'], before['host'], count))
        if after['status'] != before['status']:
            problems.append('%s is %s, was %s' % (before['name'], after['status'], before['status']))
    if now['groups'] != baseline['groups']:
        problems.append('server groups changed: %s -> %s' % (baseline['groups'], now['groups']))
    for name, group in now['groups'].items():
        hosts = [now['servers'][m]['host'] for m in group['members'] if m in now['servers']]
        if group['policy'] == 'anti-affinity' and len(hosts) != len(set(hosts)):
            problems.append('anti-affinity group %s shares a host: %s' % (name, hosts))
        if group['policy'] == 'affinity' and len(set(hosts)) > 1:
            problems.append('affinity group %s spans hosts: %s' % (name, hosts))
    if batch:
        for server in now['servers'].values():
            if server['host'] in batch['hosts']:
                problems.append('%s is still on %s (batch %s)' % (server['name'], server['host'], batch['index']))
        for move in batch['moves']:
            server = now['servers'].get(move['id'])
            if server is not None and server['host'] != move['to']:
                problems.append('%s is on %s, planned %s' % (server['name'], server['host'], move['to']))
    if final:
        problems += ['%s is %s, %s (%s)' % (host, s['status'], s['state'], s['disabled_reason'])
                     for host, s in now['services'].items() if s['status'] != 'enabled' or s['state'] != 'up']
    return problems, now


def pause(conn, prefix, names):
    servers = [s for s in mine(conn, prefix) if s.name in [prefix + n for n in names]]
    for server in servers:
        conn.compute.pause_server(server)
    for server in servers:
        conn.compute.wait_for_server(server, status='PAUSED', wait=120)
    time.sleep(1)   # the task ends just after the status
    return sorted(s.name for s in servers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', default='vmops-admin')
    sub = parser.add_subparsers(dest='command', required=True)
    paused = sub.add_parser('pause')
    paused.add_argument('prefix')
    paused.add_argument('names', nargs='+')
    sub.add_parser('snapshot').add_argument('prefix')
    checked = sub.add_parser('check')
    checked.add_argument('prefix')
    checked.add_argument('baseline')
    checked.add_argument('--batch')
    checked.add_argument('--final', action='store_true')
    checked.add_argument('--rolled', type=lambda text: text.split(','))
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    reads = {'pause': lambda: pause(conn, args.prefix, args.names), 'snapshot': lambda: snapshot(conn, args.prefix)}
    if args.command in reads:
        print(json.dumps(reads[args.command](), sort_keys=True))
        return
    with open(args.baseline) as handle:
        baseline = json.load(handle)
    problems, now = check(conn, args.prefix, baseline, json.loads(args.batch) if args.batch else None,
                          args.final, args.rolled)
    print(json.dumps({'problems': problems, 'now': now}, sort_keys=True))
    if problems:
        sys.exit(1)


if __name__ == '__main__':
    main()
