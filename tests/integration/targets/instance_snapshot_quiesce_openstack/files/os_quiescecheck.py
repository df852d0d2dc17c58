"""Independent look at the quiesce test's server, with plain openstacksdk and libvirt-python calls,
never through the collection:

  os_quiescecheck.py --cloud C create NAME HOST ZONE  -> a server booted from a new volume of image
                                                         vmops-guest-agent, with a new blank volume as vdb
  os_quiescecheck.py --cloud C console NAME           -> the guest's own record from its console: current
                                                         boot, freezes and thaws of that boot, last tick
  os_quiescecheck.py --cloud C server NAME            -> {"status", "task_state", "vm_state", "instance_name", ...}
  os_quiescecheck.py --cloud C volumes NAME           -> the server's volumes and every Cinder snapshot of them
  os_quiescecheck.py --cloud C image NAME             -> {"exists", "status", "bdm_snapshots", "properties"}
  os_quiescecheck.py --uri URI ping DOMAIN            -> {"answered", "error"}: guest-ping through the agent
  os_quiescecheck.py --uri URI agent-xml DOMAIN       -> the domain's agent channel: {"state", "name"}
  os_quiescecheck.py --cloud C cleanup PREFIX         -> deletes servers, images, volume snapshots, volumes
"""
import argparse
import json
import re
import xml.etree.ElementTree as ET

BOOT = re.compile(r'vmops-boot id=([0-9a-f-]{36})')
TICK = re.compile(r'vmops-tick boot=(\S+) uptime=([0-9.]+) counter=([0-9]+)')
FREEZE = re.compile(r'vmops-fsfreeze (freeze|thaw) boot=(\S+) uptime=([0-9.]+)')
AGENT_CHANNEL = 'org.qemu.guest_agent.0'


def find_server(conn, name):
    servers = [s for s in conn.compute.servers(name='^%s$' % re.escape(name)) if s.name == name]
    return servers[0] if servers else None


def create(conn, name, host, zone):
    server = find_server(conn, name)
    if server is None:
        image = conn.image.find_image('vmops-guest-agent', ignore_missing=False)
        network = conn.network.find_network('private', ignore_missing=False)
        server = conn.compute.create_server(
            name=name, flavor_id='vmops.tiny', networks=[{'uuid': network.id}],
            availability_zone='%s:%s' % (zone, host),
            block_device_mapping=[
                {'boot_index': 0, 'uuid': image.id, 'source_type': 'image', 'destination_type': 'volume',
                 'volume_size': 1, 'delete_on_termination': True},
                # Blank: the guest makes its filesystem there on first boot (vmops.fs=vdb).
                {'boot_index': -1, 'source_type': 'blank', 'destination_type': 'volume', 'volume_size': 1,
                 'delete_on_termination': True}])
    server = conn.compute.wait_for_server(server, status='ACTIVE', wait=300)
    return {'id': server.id, 'status': server.status, 'instance_name': server.instance_name}


def console(conn, name):
    server = find_server(conn, name)
    text = conn.compute.get_server_console_output(server)['output']
    boots = BOOT.findall(text)
    boot = boots[-1] if boots else None
    ticks = [(b, float(u)) for b, u, _n in TICK.findall(text) if b == boot]
    events = [{'event': e, 'uptime': float(u)} for e, b, u in FREEZE.findall(text) if b == boot]
    return {'boot': boot, 'boots': len(boots), 'uptime': ticks[-1][1] if ticks else None,
            'agent': 'vmops-agent port=' in text, 'fs_mounted': 'vmops-fs mounted dev=vdb' in text,
            'fsfreeze': events}


def volumes(conn, name):
    server = find_server(conn, name)
    out = []
    for attachment in conn.compute.volume_attachments(server):
        snapshots = [{'id': s.id, 'name': s.name, 'status': s.status}
                     for s in conn.block_storage.snapshots(details=True, volume_id=attachment.volume_id)]
        out.append({'device': attachment.device, 'volume_id': attachment.volume_id, 'snapshots': snapshots})
    out.sort(key=lambda item: item['device'])
    return {'volumes': out, 'snapshot_ids': sorted(s['id'] for item in out for s in item['snapshots'])}


def image(conn, name):
    images = [i for i in conn.image.images(name=name) if i.name == name]
    if not images:
        return {'exists': False}
    found = images[0]
    props = dict(found.properties or {})
    bdm = json.loads(props.get('block_device_mapping') or '[]')
    return {'exists': True, 'count': len(images), 'id': found.id, 'status': found.status, 'size': found.size,
            'bdm_snapshots': sorted(item['snapshot_id'] for item in bdm if item.get('snapshot_id')),
            'properties': dict((k, v) for k, v in props.items() if k.startswith('vmops_'))}


def domain(uri, name):
    import libvirt     # only for the kvm1 commands
    return libvirt.open(uri).lookupByName(name)


def ping(uri, name):
    import libvirt
    import libvirt_qemu
    try:
        libvirt_qemu.qemuAgentCommand(domain(uri, name), json.dumps({'execute': 'guest-ping'}), 5, 0)
        return {'answered': True, 'error': None}
    except libvirt.libvirtError as error:
        return {'answered': False, 'error': str(error)}


def agent_xml(uri, name):
    tree = ET.fromstring(domain(uri, name).XMLDesc(0))
    for channel in tree.iterfind('./devices/channel'):
        target = channel.find('target')
        if target is not None and target.get('name') == AGENT_CHANNEL:
            return {'name': AGENT_CHANNEL, 'type': target.get('type'), 'state': target.get('state')}
    return {'name': None, 'state': None}


def cleanup(conn, prefix):
    for found in conn.image.images():
        if found.name and found.name.startswith(prefix):
            bdm = json.loads((found.properties or {}).get('block_device_mapping') or '[]')
            for snapshot_id in [item.get('snapshot_id') for item in bdm if item.get('snapshot_id')]:
                conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
            conn.image.delete_image(found)
    servers = list(conn.compute.servers(name='^%s' % re.escape(prefix)))
    for server in servers:
        for attachment in conn.compute.volume_attachments(server):
            for snapshot in conn.block_storage.snapshots(details=True, volume_id=attachment.volume_id):
                conn.block_storage.delete_snapshot(snapshot, ignore_missing=True)
                conn.block_storage.wait_for_delete(snapshot, wait=120)
    for server in servers:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=300)
    for volume in conn.block_storage.volumes():
        if volume.name and volume.name.startswith(prefix):
            conn.block_storage.delete_volume(volume)
    return {'cleaned': prefix, 'servers': len(servers)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud')
    parser.add_argument('--uri')
    parser.add_argument('command')
    parser.add_argument('args', nargs='*')
    args = parser.parse_args()
    if args.command == 'ping':
        out = ping(args.uri, args.args[0])
    elif args.command == 'agent-xml':
        out = agent_xml(args.uri, args.args[0])
    else:
        import openstack
        conn = openstack.connect(cloud=args.cloud)
        commands = {'create': create, 'console': console, 'volumes': volumes, 'image': image, 'cleanup': cleanup}
        if args.command == 'server':
            server = find_server(conn, args.args[0])
            out = {'exists': False} if server is None else {
                'exists': True, 'id': server.id, 'status': server.status, 'task_state': server.task_state,
                'vm_state': server.vm_state, 'instance_name': server.instance_name, 'host': server.compute_host}
        elif args.command in commands:
            out = commands[args.command](conn, *args.args)
        else:
            parser.error('unknown command %s' % args.command)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
