"""Independent look at Nova for the integration tests: reads and sets server state with plain
openstacksdk calls, never through the collection, so the tests do not take the module's word.

  nova_probe.py --cloud C state NAME            -> JSON: status, task_state, locked, ..., state
  nova_probe.py --cloud C create NAME [--host H] [--flavor F] [--image I] [--network N]
  nova_probe.py --cloud C drive NAME STATE      -> puts the server in STATE with raw SDK calls
  nova_probe.py --cloud C delete NAME...
  nova_probe.py --cloud C console NAME          -> JSON: boot ids and last tick of the test guest
  nova_probe.py --cloud C service HOST | host-servers HOST | migrations PREFIX | watch-migrations HOST STOP
"""

import argparse
import concurrent.futures
import json
import os
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


IN_PROGRESS = ('queued', 'preparing', 'running', 'accepted', 'pre-migrating', 'migrating', 'post-migrating',
               'finished', 'confirming')


def evac_command(conn, args):
    compute = conn.compute
    if args.command in ('service', 'service-set'):
        services = [s for s in compute.services(binary='nova-compute') if s.host == args.host]
        if not services:
            return {'exists': False}
        service = services[0]
        if args.command == 'service-set':
            body = {}
            if args.status:
                body['status'] = args.status
            if args.forced_down:
                body['forced_down'] = args.forced_down == 'true'
            compute.put('/os-services/%s' % service.id, json=body, microversion='2.53')
            service = [s for s in compute.services(binary='nova-compute') if s.host == args.host][0]
        return {'exists': True, 'id': service.id, 'status': service.status, 'state': service.state,
                'forced_down': bool(service.is_forced_down), 'disabled_reason': service.disabled_reason}
    if args.command == 'host-servers':
        servers = compute.servers(all_projects=True, compute_host=args.host)
        return {'host': args.host, 'servers': sorted(s.name for s in servers)}
    if args.command == 'migrations':
        # GET /os-migrations: every record of the servers whose names start with the prefix.
        ids = dict((s.id, s.name) for s in compute.servers(all_projects=True, name='^%s' % re.escape(args.prefix)))
        records = compute.get('/os-migrations', microversion='2.80').json()['migrations']
        out = {}
        for record in sorted(records, key=lambda r: r['id']):
            if record['instance_uuid'] in ids and args.source in (None, record['source_compute']):
                out.setdefault(ids[record['instance_uuid']], []).append(
                    {'type': record['migration_type'], 'status': record['status'],
                     'source': record['source_compute'], 'dest': record['dest_compute']})
        return out
    if args.command == 'watch-migrations':
        # Samples GET /os-migrations?source_compute=HOST and counts moves in progress; runs until the
        # stop file appears.  Only records created after the watch started count.
        started = time.monotonic()
        ours = set(s.id for s in compute.servers(all_projects=True, name='^%s' % re.escape(args.prefix)))
        known = set(r['id'] for r in compute.get('/os-migrations', params={'source_compute': args.host},
                                                 microversion='2.80').json()['migrations'])
        peak, samples, seen = 0, 0, set()
        while time.monotonic() - started < args.seconds:
            records = compute.get('/os-migrations', params={'source_compute': args.host},
                                  microversion='2.80').json()['migrations']
            records = [r for r in records if r['id'] not in known and r['instance_uuid'] in ours]
            active = [r for r in records if r['status'] in IN_PROGRESS]
            seen.update(r['id'] for r in records)
            peak = max(peak, len(active))
            samples += 1
            try:
                with open(args.stop_file):
                    break
            except OSError:
                time.sleep(args.interval)
        return {'max_in_progress': peak, 'samples': samples, 'migrations': len(seen)}
    if args.command == 'set-metadata':
        server = find(conn, args.name)
        compute.set_server_metadata(server, **dict(item.split('=', 1) for item in args.items))
        return report(compute.get_server(server.id))
    if args.command == 'create-many':
        image = conn.image.find_image('vmops-guest', ignore_missing=False)
        flavor = compute.find_flavor('vmops.tiny', ignore_missing=False)
        network = conn.network.find_network('private', ignore_missing=False)
        ids, hosts, attempts = {}, dict(spec.split('@') for spec in args.specs), {}

        def boot(name):
            attempts[name] = attempts.get(name, 0) + 1
            server = find(conn, name) or compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks=[{'uuid': network.id}],
                availability_zone='nova:%s' % hosts[name])
            ids[server.id] = name
        for name in hosts:
            boot(name)
        deadline = time.monotonic() + args.wait
        while True:
            found = dict((s.id, s) for s in compute.servers(all_projects=True, name='^%s' % re.escape(
                os.path.commonprefix(list(hosts)))) if s.id in ids)
            pending = [ids[i] for i in ids if i not in found or found[i].status != 'ACTIVE']
            failed = [i for i in ids if i in found and found[i].status == 'ERROR']
            for server_id in failed:
                # Another test may have disabled the host for a moment (NoValidHost): boot again.
                name = ids.pop(server_id)
                if attempts[name] >= 6:
                    sys.exit('boot of %s failed %d times: %s' % (name, attempts[name], found[server_id].fault))
                compute.delete_server(server_id)
                compute.wait_for_delete(found[server_id], wait=300)
                time.sleep(5)
                boot(name)
            if failed:
                continue
            if not pending:
                return dict((ids[i], report(found[i])) for i in ids)
            if time.monotonic() > deadline:
                sys.exit('timed out booting: %s' % ', '.join(sorted(pending)))
            time.sleep(2)
    if args.command == 'drive-many':
        def one(spec):
            name, wanted = spec.split('=')
            own = openstack.connect(cloud=args.cloud)
            try:
                return name, report(drive(own, find(own, name), wanted))
            finally:
                own.close()
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            return dict(pool.map(one, args.specs))
    if args.command == 'states':
        return dict((server.name, report(server))
                    for server in compute.servers(all_projects=True, name='^%s' % re.escape(args.prefix)))
    if args.command == 'lock':
        server = find(conn, args.name)
        compute.lock_server(server)
        return report(compute.get_server(server.id))
    return {}


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
    # Added for instance_rescue / instance_restore (RESCUE):
    copy = sub.add_parser('image-copy', help='copy an image (data and kernel/ramdisk ids) with extra properties')
    copy.add_argument('name')
    copy.add_argument('source')
    copy.add_argument('--property', action='append', default=[], metavar='KEY=VALUE')
    sub.add_parser('image-show').add_argument('image')
    upload = sub.add_parser('image-upload', help='upload a file as a new image (idempotent by name)')
    upload.add_argument('name')
    upload.add_argument('file')
    upload.add_argument('--format', default='ari', help='disk and container format (ari, aki, qcow2+bare ...)')
    sub.add_parser('ports', help='IDs of the ports of a server').add_argument('name')
    sub.add_parser('volume-snapshot-cleanup',
                   help='delete the Cinder snapshots Nova made for images of this prefix ("snapshot for PREFIX..."), '
                        'then their source volumes when detached and unnamed').add_argument('prefix')
    sub.add_parser('libvirt-name', help='the libvirt domain name and host of a server (admin)').add_argument('name')
    # Added for host_service / host_evacuate (EVAC): hosts, services and migrations.
    sub.add_parser('service', help='the nova-compute service of a host').add_argument('host')
    service_set = sub.add_parser('service-set', help='set status / forced_down of a host (cleanup)')
    service_set.add_argument('host')
    service_set.add_argument('--status', choices=['enabled', 'disabled'])
    service_set.add_argument('--forced-down', choices=['true', 'false'])
    sub.add_parser('host-servers', help='servers on a host, all projects').add_argument('host')
    migrations = sub.add_parser('migrations', help='migration records of servers (by name prefix)')
    migrations.add_argument('prefix')
    migrations.add_argument('--source', help='only migrations off this host')
    watch = sub.add_parser('watch-migrations', help='sample in-progress migrations off a host until a stop file')
    watch.add_argument('host')
    watch.add_argument('stop_file')
    watch.add_argument('--interval', type=float, default=0.2)
    watch.add_argument('--seconds', type=float, default=600)
    watch.add_argument('--prefix', default='', help='count only servers whose names start with it')
    metadata = sub.add_parser('set-metadata')
    metadata.add_argument('name')
    metadata.add_argument('items', nargs='+', metavar='KEY=VALUE')
    sub.add_parser('lock').add_argument('name')
    sub.add_parser('states', help='state, host and lock of every server whose name starts with PREFIX').add_argument('prefix')
    many = sub.add_parser('create-many', help='boot servers NAME@HOST without waiting, then wait for all in one loop')
    many.add_argument('specs', nargs='+', metavar='NAME@HOST')
    many.add_argument('--wait', type=float, default=900)
    drive_many = sub.add_parser('drive-many', help='drive servers NAME=STATE, a few at a time')
    drive_many.add_argument('specs', nargs='+', metavar='NAME=STATE')
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
    elif args.command == 'image-copy':
        source = conn.image.find_image(args.source, ignore_missing=False)
        image = conn.image.find_image(args.name)
        if image is None:
            data = b''.join(conn.image.download_image(source, stream=True).iter_content(1024 * 1024))
            extra = dict(item.split('=', 1) for item in args.property)
            for key in ('kernel_id', 'ramdisk_id', 'os_command_line'):
                value = (source.properties or {}).get(key) or getattr(source, key, None)
                if value:
                    extra.setdefault(key, value)
            image = conn.image.create_image(name=args.name, data=data, disk_format=source.disk_format,
                                            container_format=source.container_format, **extra)
            image = conn.image.wait_for_status(image, status='active', wait=120)
        print(json.dumps({'id': image.id, 'status': image.status}))
    elif args.command == 'image-upload':
        image = conn.image.find_image(args.name)
        if image is None:
            disk_format, container = (args.format.split('+', 1) + [None])[:2]
            with open(args.file, 'rb') as handle:
                image = conn.image.create_image(name=args.name, data=handle.read(), disk_format=disk_format,
                                                container_format=container or disk_format)
            image = conn.image.wait_for_status(image, status='active', wait=120)
        print(json.dumps({'id': image.id, 'status': image.status}))
    elif args.command == 'image-show':
        image = conn.image.find_image(args.image)
        print(json.dumps({'exists': False} if image is None else
                         {'exists': True, 'id': image.id, 'name': image.name, 'status': image.status,
                          'properties': dict(image.properties or {})}))
    elif args.command == 'volume-snapshot-cleanup':
        sources, deleted = set(), []
        for snap in conn.block_storage.snapshots(details=True):
            if (snap.name or '').startswith('snapshot for %s' % args.prefix):
                conn.block_storage.delete_snapshot(snap)
                conn.block_storage.wait_for_delete(snap, wait=120)
                sources.add(snap.volume_id)
                deleted.append(snap.id)
        for volume_id in sources:
            volume = conn.block_storage.find_volume(volume_id)
            if volume is not None and not volume.name and volume.status == 'available' and not volume.attachments:
                conn.block_storage.delete_volume(volume)
                deleted.append(volume.id)
        print(json.dumps({'deleted': deleted}))
    elif args.command == 'ports':
        server = find(conn, args.name)
        print(json.dumps(sorted(port.id for port in conn.network.ports(device_id=server.id))))
    elif args.command == 'libvirt-name':
        server = find(conn, args.name)
        print(json.dumps({'instance_name': server.instance_name, 'host': server.compute_host,
                          'hypervisor_hostname': server.hypervisor_hostname}))
    elif args.command in ('service', 'service-set', 'host-servers', 'migrations', 'watch-migrations',
                          'set-metadata', 'lock', 'states', 'create-many', 'drive-many'):
        print(json.dumps(evac_command(conn, args)))
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
