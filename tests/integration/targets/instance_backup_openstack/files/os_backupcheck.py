"""Independent checks for instance_backup_openstack: plain openstacksdk and Ceph's own tools, never the
module's word.

  os_backupcheck.py --cloud C setup NAME            -> a server on kvm1 booted from a new 1 GB volume, with a
                                                       1 GB data volume NAME-data: {"id", "domain", "volumes"}
  os_backupcheck.py --cloud C setup-image NAME      -> a server on kvm1 booted from the image vmops-guest (its system
                                                       disk local on kvm1), with a 1 GB data volume NAME-data
  os_backupcheck.py --cloud C images SERVER_ID      -> per point of that server (Cinder's backup metadata), the Glance
                                                       image its backups name: status, size, properties, and the
                                                       bytes of its RBD image in pool images (rbd du)
  os_backupcheck.py --cloud C actions SERVER_ID     -> Nova's instance actions of the server, oldest first
  os_backupcheck.py --cloud C backups SERVER_ID     -> Cinder's backups of that server's points (by metadata), each
                                                       with the bytes its RBD snapshot uses in pool backups (rbd du)
  os_backupcheck.py --cloud C markers SERVER        -> the marker records found on each volume of SERVER, read from
                                                       RBD (volumes/volume-<id>) with the server stopped or not,
                                                       and the server's image, flavor, metadata and libvirt domain
  os_backupcheck.py --cloud C console SERVER        -> {"tick": the guest's last vmops-tick line on its console, or null}
  os_backupcheck.py --cloud C cleanup PREFIX        -> deletes servers, backups (newest first) and volumes of PREFIX
"""
import argparse
import json
import os
import re
import subprocess
import time

import openstack

MARK_SECTORS = (2048 + 8192, 2048 + 2 * 8192, 2048 + 3 * 8192)     # marker i: 4 MiB apart, one RBD object each
SANDBOX = os.environ.get('VMOPS_SANDBOX_DIR') or '/var/tmp/vmops-sandbox'
CEPH_CONF = os.path.join(SANDBOX, 'openstack', 'etc', 'ceph', 'ceph.conf')
RBD = ['rbd', '-c', CEPH_CONF, '-n', 'client.admin']
SNAP_RE = re.compile(r'@backup\.([0-9a-f-]{36})\.snap\.')


def find_server(conn, name):
    servers = [s for s in conn.compute.servers(name='^%s$' % re.escape(name)) if s.name == name]
    return servers[0] if servers else None


def wait_volume(conn, volume, status):
    return conn.block_storage.wait_for_status(volume, status, failures=['error'], wait=180)


def _boot(conn, name, boot_from_image):
    """A server on kvm1 with a 1 GB data volume, booted from a new 1 GB volume or from the image itself."""
    data = conn.block_storage.create_volume(name='%s-data' % name, size=1)
    data = wait_volume(conn, data, 'available')
    image = conn.image.find_image('vmops-guest', ignore_missing=False)
    network = conn.network.find_network('private', ignore_missing=False)
    if boot_from_image:
        boot = {'boot_index': 0, 'uuid': image.id, 'source_type': 'image', 'destination_type': 'local',
                'delete_on_termination': True}
        extra = {'metadata': {'role': 'backup-test-image'}, 'image_id': image.id}
    else:
        boot = {'boot_index': 0, 'uuid': image.id, 'source_type': 'image', 'destination_type': 'volume',
                'volume_size': 1, 'delete_on_termination': True}
        extra = {'metadata': {'role': 'backup-test'}}
    return conn.compute.create_server(
        name=name, flavor_id='vmops.tiny', networks=[{'uuid': network.id}], availability_zone='real:kvm1',
        block_device_mapping=[boot, {'boot_index': -1, 'uuid': data.id, 'source_type': 'volume',
                                     'destination_type': 'volume', 'delete_on_termination': True}], **extra)


def setup(conn, name, boot_from_image=False):
    server = find_server(conn, name) or _boot(conn, name, boot_from_image)
    server = conn.compute.wait_for_server(server, status='ACTIVE', wait=300)
    deadline = time.monotonic() + 120
    while 'vmops-tick' not in (conn.compute.get_server_console_output(server, length=50).get('output') or ''):
        if time.monotonic() > deadline:
            raise SystemExit('the guest of %s never ticked' % name)
        time.sleep(2)
    server = conn.compute.get_server(server.id)
    return {'id': server.id, 'domain': server.instance_name,
            'volumes': [a['id'] for a in server.attached_volumes or []]}


def setup_image(conn, name):
    return setup(conn, name, boot_from_image=True)


def images(conn, server_id):
    """{point: the Glance image its backups name}: read from Cinder and Glance, not from the module."""
    named = {}
    for backup in conn.block_storage.backups(details=True):
        metadata = backup.metadata or {}
        if metadata.get('vmops_instance') == server_id and metadata.get('vmops_image_id'):
            named[metadata['vmops_point']] = metadata['vmops_image_id']
    found = {}
    for point, image_id in sorted(named.items()):
        image = conn.image.find_image(image_id)
        if image is None:
            found[point] = {'id': image_id, 'status': 'gone'}
            continue
        properties = image.properties or {}
        found[point] = {'id': image.id, 'name': image.name, 'status': image.status, 'size': image.size,
                        'disk_format': image.disk_format, 'image_type': getattr(image, 'image_type', None) or properties.get('image_type'),
                        'instance_uuid': getattr(image, 'instance_uuid', None) or properties.get('instance_uuid'),
                        'backup_point': properties.get('vmops_backup_point'), 'rbd_used_bytes': image_usage(image.id)}
    return found


def actions(conn, server_id):
    """Nova lists a server's actions newest first, in the order it recorded them (its start times have only
    whole seconds, so a pause and the createImage sent right after it can share one)."""
    listed = [{'action': a.action, 'start_time': a.start_time, 'request_id': a.request_id}
              for a in conn.compute.server_actions(server_id)]
    return list(reversed(listed))


def image_usage(image_id):
    """Bytes Glance's RBD image images/<id> uses (its snapshot and head), from `rbd du` on that image alone
    (a du of the whole pool trips over images being deleted)."""
    out = subprocess.run(RBD + ['du', 'images/%s' % image_id, '--format', 'json'], check=True, capture_output=True,
                         text=True).stdout
    return sum(entry.get('used_size') or 0 for entry in json.loads(out).get('images', []))


def pool_usage():
    """{backup_id: bytes its RBD snapshot holds in pool backups}, from `rbd du`."""
    out = subprocess.run(RBD + ['du', '-p', 'backups', '--format', 'json'], check=True, capture_output=True,
                         text=True).stdout
    used = {}
    for image in json.loads(out).get('images', []):
        match = SNAP_RE.search('@%s' % image.get('snapshot', '')) if image.get('snapshot') else None
        if match:
            used[match.group(1)] = image.get('used_size')
    return used


def backups(conn, server_id):
    used = pool_usage()
    found = []
    for backup in conn.block_storage.backups(details=True):
        metadata = backup.metadata or {}
        if metadata.get('vmops_instance') != server_id:
            continue
        found.append({'id': backup.id, 'volume_id': backup.volume_id, 'status': backup.status,
                      'size_gb': backup.size, 'incremental': backup.is_incremental,
                      'point': metadata.get('vmops_point'), 'kind': metadata.get('vmops_kind'),
                      'complete': metadata.get('vmops_complete'), 'rbd_used_bytes': used.get(backup.id)})
    return sorted(found, key=lambda b: (b['point'] or '', b['volume_id']))


def read_markers(volume_id):
    """The marker records at MARK_SECTORS of RBD image volumes/volume-<id> (Ceph's python bindings, as root)."""
    code = ('import rados, rbd, sys, json\n'
            'c = rados.Rados(conffile=sys.argv[1], name="client.admin"); c.connect()\n'
            'io = c.open_ioctx("volumes"); im = rbd.Image(io, sys.argv[2], read_only=True)\n'
            'out = [im.read(int(s) * 512, 512).rstrip(b"\\0").decode("ascii", "replace").strip() for s in sys.argv[3:]]\n'
            'im.close(); io.close(); c.shutdown(); print(json.dumps(out))\n')
    out = subprocess.run(['/usr/bin/python3', '-c', code, CEPH_CONF, 'volume-%s' % volume_id]
                         + [str(s) for s in MARK_SECTORS], check=True, capture_output=True, text=True).stdout
    return [record for record in json.loads(out) if record.startswith('vmops-mark')]


def markers(conn, name):
    server = find_server(conn, name)
    if server is None:
        raise SystemExit('no server %s' % name)
    attachments = sorted(conn.compute.volume_attachments(server), key=lambda a: a.device)
    return {'status': server.status, 'image_id': (server.image or {}).get('id'), 'domain': server.instance_name,
            'flavor': (server.flavor or {}).get('original_name'), 'metadata': server.metadata, 'volumes': [
        {'device': a.device, 'volume_id': a.volume_id, 'markers': read_markers(a.volume_id)} for a in attachments]}


def console(conn, name):
    server = find_server(conn, name)
    output = conn.compute.get_server_console_output(server, length=50).get('output') or '' if server else ''
    ticks = [line for line in output.splitlines() if 'vmops-tick' in line]
    return {'tick': ticks[-1] if ticks else None}


def cleanup(conn, prefix):
    servers = [s for s in conn.compute.servers() if s.name.startswith(prefix)]
    server_ids = set(s.id for s in servers)
    for server in servers:
        conn.compute.delete_server(server)
    for server in servers:
        conn.compute.wait_for_delete(server, wait=180)
    ours = [b for b in conn.block_storage.backups(details=True)
            if (b.metadata or {}).get('vmops_instance') in server_ids or (b.name or '').startswith(prefix)]
    for backup in sorted(ours, key=lambda b: b.created_at, reverse=True):
        conn.block_storage.delete_backup(backup)
        deadline = time.monotonic() + 120
        while conn.block_storage.find_backup(backup.id) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
    for image in conn.image.images():
        properties = image.properties or {}
        if properties.get('vmops_backup_instance') in server_ids or (image.name or '').startswith(prefix):
            conn.image.delete_image(image, ignore_missing=True)
    for volume in conn.block_storage.volumes():
        if volume.name and volume.name.startswith(prefix):
            volume = conn.block_storage.wait_for_status(volume, 'available', failures=['error'], wait=120)
            conn.block_storage.delete_volume(volume)
    return {'servers': len(servers), 'backups': len(ours)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    parser.add_argument('command', choices=['setup', 'setup-image', 'images', 'actions', 'backups', 'markers', 'console',
                                            'cleanup'])
    parser.add_argument('arg')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    out = {'setup': setup, 'setup-image': setup_image, 'images': images, 'actions': actions, 'backups': backups,
           'markers': markers, 'console': console, 'cleanup': cleanup}[args.command](conn, args.arg)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
