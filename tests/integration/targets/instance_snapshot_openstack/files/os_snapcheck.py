"""Independent look at Glance, Cinder and Nova for the instance_snapshot_openstack tests.

Plain openstacksdk calls, never through the collection:

  os_snapcheck.py --cloud C create-bfv NAME HOST ZONE  -> a server booted from a new 1 GB volume
  os_snapcheck.py --cloud C attach NAME VOLUME_NAME    -> a new 1 GB volume attached to server NAME
  os_snapcheck.py --cloud C image NAME_OR_ID           -> {"exists", "id", "status", "properties", "bdm_snapshots", ...}
  os_snapcheck.py --cloud C vsnap ID                   -> {"status"} of a Cinder snapshot ("absent" when gone)
  os_snapcheck.py --cloud C vsnaps VOLUME_NAME         -> Cinder snapshots of a volume [{"id","name","status"}]
  os_snapcheck.py --cloud C download NAME_OR_ID        -> reads the image data from Glance: {"mark", "tick", "bytes"}
  os_snapcheck.py --cloud C server NAME                -> {"status", "task_state", "instance_name", "host"}
  os_snapcheck.py --cloud C cleanup PREFIX             -> deletes servers, images, volume snapshots, volumes
"""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import openstack

MARK_OFFSET = 1024 * 1024
HEX_RE = re.compile(r'^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})')


def find_server(conn, name):
    servers = [s for s in conn.compute.servers(name='^%s$' % re.escape(name)) if s.name == name]
    return servers[0] if servers else None


def find_image(conn, name):
    image = None
    try:
        image = conn.image.get_image(name)
    except openstack.exceptions.NotFoundException:
        pass
    except openstack.exceptions.HttpException:
        pass
    if image is None:
        images = [i for i in conn.image.images(name=name) if i.name == name]
        image = images[0] if images else None
    return image


def read_record(path, offset, fmt):
    out = subprocess.run(['qemu-io', '-r', '-U', '-f', fmt, '-c', 'read -v %d 512' % offset, path],
                         check=True, capture_output=True, text=True).stdout
    data = bytearray()
    for line in out.splitlines():
        match = HEX_RE.match(line)
        if match:
            data.extend(bytes.fromhex(match.group(1).replace(' ', '')))
    return data.decode('ascii', errors='replace').strip(' \n\x00') or None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    parser.add_argument('command')
    parser.add_argument('args', nargs='*')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    out = None
    if args.command == 'create-bfv':
        name, host, zone = args.args
        server = find_server(conn, name)
        if server is None:
            image = conn.image.find_image('vmops-guest', ignore_missing=False)
            network = conn.network.find_network('private', ignore_missing=False)
            server = conn.compute.create_server(
                name=name, flavor_id='vmops.tiny', networks=[{'uuid': network.id}],
                availability_zone='%s:%s' % (zone, host),
                block_device_mapping=[{'boot_index': 0, 'uuid': image.id, 'source_type': 'image',
                                       'destination_type': 'volume', 'volume_size': 1,
                                       'delete_on_termination': True}])
        server = conn.compute.wait_for_server(server, status='ACTIVE', wait=300)
        out = {'id': server.id, 'status': server.status}
    elif args.command == 'attach':
        name, volume_name = args.args
        server = find_server(conn, name)
        volume = conn.block_storage.find_volume(volume_name)
        if volume is None:
            volume = conn.block_storage.create_volume(name=volume_name, size=1)
            volume = conn.block_storage.wait_for_status(volume, 'available', failures=['error'], wait=120)
        if volume.status == 'available':
            conn.compute.create_volume_attachment(server, volume_id=volume.id)
        volume = conn.block_storage.wait_for_status(volume, 'in-use', failures=['error'], wait=120)
        out = {'id': volume.id, 'status': volume.status}
    elif args.command == 'image':
        image = find_image(conn, args.args[0])
        if image is None:
            out = {'exists': False}
        else:
            props = dict(image.properties or {})
            bdm = json.loads(props.get('block_device_mapping') or '[]')
            out = {'exists': True, 'id': image.id, 'name': image.name, 'status': image.status, 'size': image.size,
                   'image_type': props.get('image_type'), 'instance_uuid': getattr(image, 'instance_uuid', None) or props.get('instance_uuid'),
                   'properties': dict((k, v) for k, v in props.items() if k.startswith('vmops_')),
                   'bdm_snapshots': [item['snapshot_id'] for item in bdm if item.get('snapshot_id')]}
    elif args.command == 'vsnap':
        try:
            out = {'status': conn.block_storage.get_snapshot(args.args[0]).status}
        except openstack.exceptions.NotFoundException:
            out = {'status': 'absent'}
    elif args.command == 'vsnaps':
        volume = conn.block_storage.find_volume(args.args[0], ignore_missing=False)
        out = [{'id': s.id, 'name': s.name, 'status': s.status}
               for s in conn.block_storage.snapshots(details=True, volume_id=volume.id)]
    elif args.command == 'download':
        image = find_image(conn, args.args[0])
        with tempfile.TemporaryDirectory(prefix='vmops-snap-dl-') as tmp:
            path = os.path.join(tmp, 'image')
            with open(path, 'wb') as handle:
                response = conn.image.download_image(image, stream=True)
                for chunk in response.iter_content(1024 * 1024):
                    handle.write(chunk)
            out = {'bytes': os.path.getsize(path), 'disk_format': image.disk_format,
                   'tick': read_record(path, 0, image.disk_format), 'mark': read_record(path, MARK_OFFSET, image.disk_format)}
    elif args.command == 'server':
        server = find_server(conn, args.args[0])
        out = {'status': server.status, 'task_state': server.task_state, 'instance_name': server.instance_name,
               'host': server.compute_host, 'id': server.id}
    elif args.command == 'cleanup':
        prefix = args.args[0]
        # Volume snapshots first: a volume with snapshots cannot be deleted with its server.
        for image in conn.image.images():
            if image.name and image.name.startswith(prefix):
                props = image.properties or {}
                ids = [item.get('snapshot_id') for item in json.loads(props.get('block_device_mapping') or '[]')]
                ids += [item.get('snapshot_id') for item in json.loads(props.get('vmops_volume_snapshots') or '[]')]
                for snapshot_id in [i for i in ids if i]:
                    conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
                    conn.block_storage.wait_for_delete(conn.block_storage.get_snapshot(snapshot_id), wait=120) \
                        if conn.block_storage.find_snapshot(snapshot_id) else None
        for snapshot in list(conn.block_storage.snapshots(details=True)):
            if (snapshot.name or '').startswith(prefix) or (snapshot.description or '').startswith('snapshot for ' + prefix):
                conn.block_storage.delete_snapshot(snapshot)
                conn.block_storage.wait_for_delete(snapshot, wait=120)
        for server in conn.compute.servers(name='^%s' % re.escape(prefix)):
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=300)
        for image in conn.image.images():
            if image.name and image.name.startswith(prefix):
                conn.image.delete_image(image)
        for volume in conn.block_storage.volumes():
            if volume.name and volume.name.startswith(prefix):
                conn.block_storage.wait_for_status(volume, status='available', failures=['error'], wait=120)
                conn.block_storage.delete_volume(volume)
        for _attempt in range(60):
            if not [v for v in conn.block_storage.volumes() if (v.name or '').startswith(prefix)]:
                break
            time.sleep(1)
        out = {'cleaned': prefix}
    else:
        parser.error('unknown command %s' % args.command)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
