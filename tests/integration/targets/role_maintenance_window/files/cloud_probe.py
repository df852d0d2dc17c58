"""Independent look at the cloud for the role tests: plain openstacksdk, never the collection.

  cloud_probe.py --cloud C service HOST          -> JSON: status, state, forced_down, disabled_reason
  cloud_probe.py --cloud C servers PREFIX        -> JSON: [{name, id, host, status, task_state, locked, image}]
  cloud_probe.py --cloud C image NAME            -> JSON: the image's id
  cloud_probe.py --cloud C lock NAME             -> locks the server (admin lock)
  cloud_probe.py --cloud C disable HOST REASON   -> disables the host's nova-compute
  cloud_probe.py --cloud C migrations PREFIX SOURCE
        -> JSON: {name: [migration types ("live-migration", "migration", "evacuation") of the server's
           migrations that left SOURCE, oldest first]}
  cloud_probe.py --cloud C wait-usable HOST [S] [--own PREFIX]
        -> waits up to S seconds (default 900) until the host's service is enabled, up and not forced
           down, and (with --own) no server but ours (named PREFIX...) is on it: other test suites share
           the sandbox's hosts, and a drain would move their servers too. JSON of the service.
"""

import argparse
import json
import re
import sys
import time

import openstack


def service(conn, host):
    found = [s for s in conn.compute.services(binary='nova-compute') if s.host == host]
    if not found:
        sys.exit('no nova-compute on %s' % host)
    s = found[0]
    return {'status': s.status, 'state': s.state, 'forced_down': bool(s.is_forced_down),
            'disabled_reason': s.disabled_reason}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('service').add_argument('host')
    sub.add_parser('servers').add_argument('prefix')
    sub.add_parser('lock').add_argument('name')
    sub.add_parser('image').add_argument('name')
    disable = sub.add_parser('disable')
    disable.add_argument('host')
    disable.add_argument('reason')
    migrations = sub.add_parser('migrations')
    migrations.add_argument('prefix')
    migrations.add_argument('source')
    usable = sub.add_parser('wait-usable')
    usable.add_argument('host')
    usable.add_argument('seconds', type=int, nargs='?', default=900)
    usable.add_argument('--own')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    if args.command == 'service':
        print(json.dumps(service(conn, args.host)))
    elif args.command == 'servers':
        servers = [{'name': s.name, 'id': s.id, 'host': s.compute_host, 'status': s.status,
                    'task_state': s.task_state, 'locked': bool(s.is_locked), 'image': (s.image or {}).get('id')}
                   for s in conn.compute.servers(all_projects=True, name='^%s' % re.escape(args.prefix))]
        print(json.dumps(sorted(servers, key=lambda s: s['name'])))
    elif args.command == 'lock':
        server = list(conn.compute.servers(name='^%s$' % re.escape(args.name)))[0]
        conn.compute.lock_server(server, locked_reason='vmops role test')
        print(json.dumps({'locked': args.name}))
    elif args.command == 'image':
        print(json.dumps(conn.image.find_image(args.name, ignore_missing=False).id))
    elif args.command == 'disable':
        found = [s for s in conn.compute.services(binary='nova-compute') if s.host == args.host][0]
        conn.compute.disable_service(found, args.host, 'nova-compute', disabled_reason=args.reason)
        print(json.dumps(service(conn, args.host)))
    elif args.command == 'migrations':
        found = {}
        for server in conn.compute.servers(all_projects=True, name='^%s' % re.escape(args.prefix)):
            records = [m for m in conn.compute.migrations(instance_uuid=server.id)
                       if m.source_compute == args.source]
            found[server.name] = [m.migration_type for m in sorted(records, key=lambda m: m.created_at)]
        print(json.dumps(found))
    elif args.command == 'wait-usable':
        deadline = time.monotonic() + args.seconds
        while True:
            current = service(conn, args.host)
            foreign = []
            if args.own is not None:
                foreign = [s.name for s in conn.compute.servers(all_projects=True, host=args.host)
                           if not (s.name or '').startswith(args.own)]
            current['foreign_servers'] = foreign
            if current['status'] == 'enabled' and current['state'] == 'up' and not current['forced_down'] \
                    and not foreign:
                print(json.dumps(current))
                break
            if time.monotonic() > deadline:
                sys.exit('%s is still not usable after %d s: %s' % (args.host, args.seconds, current))
            time.sleep(5)
    conn.close()


if __name__ == '__main__':
    main()
