"""Independent look at Nova for the integration tests: reads and sets server state with plain
openstacksdk calls, never through the collection, so the tests do not take the module's word.

  nova_probe.py --cloud C state NAME            -> JSON: status, task_state, locked, ..., state
  nova_probe.py --cloud C create NAME [--host H] [--flavor F] [--image I] [--network N]
  nova_probe.py --cloud C drive NAME STATE      -> puts the server in STATE with raw SDK calls
  nova_probe.py --cloud C delete NAME...
  nova_probe.py --cloud C console NAME          -> JSON: boot ids and last tick of the test guest
"""

import argparse
import json
import re
import sys
import time

import openstack

NAMES = {'ACTIVE': 'running', 'SHUTOFF': 'stopped', 'PAUSED': 'paused', 'SUSPENDED': 'suspended',
         'SHELVED': 'shelved', 'SHELVED_OFFLOADED': 'shelved_offloaded', 'RESCUE': 'rescued',
         'VERIFY_RESIZE': 'resize_pending', 'ERROR': 'error'}
TICK = re.compile(r'vmops-tick boot=(\S+) uptime=([0-9.]+) counter=([0-9]+)')


def find(conn, name):
    servers = list(conn.compute.servers(name='^%s$' % re.escape(name)))
    return servers[0] if servers else None


def report(server):
    if server is None:
        return {'exists': False, 'state': 'absent'}
    return {'exists': True, 'id': server.id, 'status': server.status, 'task_state': server.task_state,
            'locked': bool(server.is_locked), 'locked_reason': getattr(server, 'locked_reason', None),
            'host': server.compute_host, 'flavor': (server.flavor or {}).get('original_name'),
            'volumes': [attachment['id'] for attachment in (server.attached_volumes or [])],
            'image': (server.image or {}).get('id') or None, 'metadata': dict(server.metadata or {}),
            'state': NAMES.get(server.status, 'other:' + str(server.status))}


def settle(conn, server, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        server = conn.compute.get_server(server.id)
        if server.task_state is None and server.status not in ('BUILD', 'REBOOT', 'HARD_REBOOT', 'RESIZE',
                                                               'MIGRATING', 'REVERT_RESIZE', 'REBUILD'):
            return server
        if time.monotonic() > deadline:
            sys.exit('timed out: %s %s' % (server.status, server.task_state))
        time.sleep(0.5)


def drive(conn, server, wanted):
    """Straight-line SDK calls, first back to ACTIVE, then to the wanted state."""
    compute = conn.compute
    server = settle(conn, server)
    back = {'SHUTOFF': compute.start_server, 'PAUSED': compute.unpause_server,
            'SUSPENDED': compute.resume_server, 'SHELVED': compute.unshelve_server,
            'SHELVED_OFFLOADED': compute.unshelve_server, 'RESCUE': compute.unrescue_server}
    if server.status in back:
        back[server.status](server)
        server = settle(conn, server)
    if server.status == 'ERROR':
        compute.reset_server_state(server, 'active')
        server = settle(conn, server)
    steps = {'running': [], 'stopped': [compute.stop_server], 'paused': [compute.pause_server],
             'suspended': [compute.suspend_server], 'shelved': [compute.shelve_server],
             'shelved_offloaded': [compute.shelve_server, compute.shelve_offload_server],
             'rescued': [compute.rescue_server],
             'error': [lambda s: compute.reset_server_state(s, 'error')]}[wanted]
    for step in steps:
        step(server)
        server = settle(conn, server)
    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('state').add_argument('name')
    create = sub.add_parser('create')
    create.add_argument('name')
    create.add_argument('--host')
    create.add_argument('--zone', default='nova', help='availability zone of --host (kvm1 is in zone real)')
    create.add_argument('--flavor', default='vmops.tiny')
    create.add_argument('--image', default='vmops-guest')
    create.add_argument('--network', default='private')
    drive_parser = sub.add_parser('drive')
    drive_parser.add_argument('name')
    drive_parser.add_argument('state')
    sub.add_parser('delete').add_argument('names', nargs='+')
    sub.add_parser('console').add_argument('name')
    snapshot = sub.add_parser('snapshot')
    snapshot.add_argument('server')
    snapshot.add_argument('image_name')
    volume = sub.add_parser('volume-from-image')
    volume.add_argument('name')
    volume.add_argument('image')
    volume.add_argument('size', type=int)
    flavor = sub.add_parser('flavor-create')
    flavor.add_argument('name')
    flavor.add_argument('ram_mib', type=int)
    flavor.add_argument('--require-trait', help='an extra spec trait:NAME=required (no host has CUSTOM_ ones)')
    sub.add_parser('cleanup').add_argument('prefix')
    args = parser.parse_args()

    conn = openstack.connect(cloud=args.cloud)
    if args.command == 'state':
        print(json.dumps(report(find(conn, args.name))))
    elif args.command == 'create':
        server = find(conn, args.name)
        if server is None:
            image = conn.image.find_image(args.image, ignore_missing=False)
            flavor = conn.compute.find_flavor(args.flavor, ignore_missing=False)
            network = conn.network.find_network(args.network, ignore_missing=False)
            extra = {'availability_zone': '%s:%s' % (args.zone, args.host)} if args.host else {}
            server = conn.compute.create_server(name=args.name, image_id=image.id, flavor_id=flavor.id,
                                                networks=[{'uuid': network.id}], **extra)
        server = conn.compute.wait_for_server(server, status='ACTIVE', wait=300)
        print(json.dumps(report(server)))
    elif args.command == 'drive':
        print(json.dumps(report(drive(conn, find(conn, args.name), args.state))))
    elif args.command == 'delete':
        for name in args.names:
            server = find(conn, name)
            if server is not None:
                conn.compute.delete_server(server)
                conn.compute.wait_for_delete(server, wait=300)
        print(json.dumps({'deleted': args.names}))
    elif args.command == 'snapshot':
        server = find(conn, args.server)
        image_id = conn.compute.create_server_image(server, args.image_name, wait=True, timeout=300).id
        image = conn.image.wait_for_status(conn.image.get_image(image_id), status='active', wait=300)
        print(json.dumps({'id': image.id, 'status': image.status}))
    elif args.command == 'volume-from-image':
        image = conn.image.find_image(args.image, ignore_missing=False)
        volume = conn.block_storage.create_volume(name=args.name, size=args.size, image_id=image.id)
        volume = conn.block_storage.wait_for_status(volume, status='available', wait=300)
        print(json.dumps({'id': volume.id, 'bootable': volume.is_bootable}))
    elif args.command == 'flavor-create':
        flavor = conn.compute.find_flavor(args.name)
        if flavor is None:
            flavor = conn.compute.create_flavor(name=args.name, ram=args.ram_mib, vcpus=1, disk=1)
            if args.require_trait:
                conn.compute.create_flavor_extra_specs(flavor, {'trait:%s' % args.require_trait: 'required'})
        print(json.dumps({'id': flavor.id}))
    elif args.command == 'cleanup':
        # Everything the tests made whose name starts with the prefix: servers, images, volumes, flavors.
        for server in conn.compute.servers(name='^%s' % re.escape(args.prefix)):
            conn.compute.unlock_server(server)
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=300)
        for image in conn.image.images():
            if image.name and image.name.startswith(args.prefix):
                conn.image.delete_image(image)
        for volume in conn.block_storage.volumes():
            if volume.name and volume.name.startswith(args.prefix):
                conn.block_storage.wait_for_status(volume, status='available', failures=['error'], wait=120)
                conn.block_storage.delete_volume(volume)
        for flavor in conn.compute.flavors():
            if flavor.name.startswith(args.prefix):
                conn.compute.delete_flavor(flavor)
        print(json.dumps({'cleaned': args.prefix}))
    elif args.command == 'console':
        server = find(conn, args.name)
        text = conn.compute.get_server_console_output(server)['output']
        ticks = [{'boot': m.group(1), 'uptime': float(m.group(2)), 'counter': int(m.group(3))}
                 for m in TICK.finditer(text)]
        boots = []
        for tick in ticks:
            if tick['boot'] not in boots:
                boots.append(tick['boot'])
        print(json.dumps({'boots': boots, 'last': ticks[-1] if ticks else None}))
    conn.close()


if __name__ == '__main__':
    main()
