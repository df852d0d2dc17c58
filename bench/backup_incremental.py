"""Benchmark: instance_backup's incremental against its full, in the same run, on libvirt and on OpenStack.

On each backend: a 1 GiB disk filled with random data; a full point taken with instance_backup's own code
(BackupRun over the backend's BackupSets, through module_utils, as the module runs it); 16 MiB of the disk
changed; an incremental point. For each point: the wall time of the run, the API or libvirt calls it sent,
and the bytes it wrote, read with the storage's own tools, never with the module's word:

  * libvirt (host h1): a running sandbox guest whose 1 GiB qcow2 disk was filled from the host before boot
    (qemu-io); 16 MiB changed by the guest itself (dd from /dev/urandom, O_DIRECT). Bytes: `qemu-img info`
    (actual-size) and `du -B1` of the point's file on the host.
  * OpenStack (kvm1): a server booted from a 1 GB RBD volume with a 1 GB RBD data volume (the integration
    target's setup, tests/integration/targets/instance_backup_openstack/files/os_backupcheck.py); the data
    volume filled with 1 GiB of random data and then 16 MiB changed, both written into RBD from the host
    (Ceph's python bindings). A point holds both volumes. Bytes: `rbd du` of each backup's RBD snapshot in
    the pool `backups`, and Cinder's backup sizes (plain openstacksdk).

Ratios: incremental bytes / changed bytes (target <= 1.25), incremental time / full time (target <= 0.1).

Run:  .venv/bin/python bench/backup_incremental.py [--backends libvirt,openstack] [--json out.json]
Needs sandbox/libvirt/up and sandbox/openstack/up. Removes every domain, server, volume, backup and file it made.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import snapshot_pause_libvirt as pause_bench   # makes the collection importable, and has the guest setup

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backup_chain import (  # noqa: E402
    BackupRequest, BackupRun)

REPO = pause_bench.REPO
MIB = 1024 * 1024
DISK_MIB = 1024
CHANGED_MIB = 16
CHANGED_AT_MIB = 512
SERIES = 'bench'
CLOUDS_YAML = '/var/tmp/vmops-sandbox/openstack/clouds.yaml'
OS_CHECK_DIR = os.path.join(REPO, 'tests', 'integration', 'targets', 'instance_backup_openstack', 'files')


def request(instance, name, mode, **where):
    return BackupRequest(instance=instance, state='present', series=SERIES, point=None, mode=mode, full_every=7,
                         retention=None, quiesce='off', restore_as=None, name=name, timeout=900, **where)


def run_point(sets, req):
    started = time.monotonic()
    result = BackupRun(sets, req).result()
    seconds = time.monotonic() - started
    return result, round(seconds, 3)


def ratios(row):
    full, incr = row['full'], row['incremental']
    changed = row['changed_bytes']
    row['incremental_bytes_per_changed'] = round(incr['bytes_written'] / changed, 3)
    row['incremental_time_per_full'] = round(incr['seconds'] / full['seconds'], 3)
    row['bytes_target_met'] = row['incremental_bytes_per_changed'] <= 1.25
    row['time_target_met'] = row['incremental_time_per_full'] <= 0.1
    return row


# libvirt -------------------------------------------------------------------------------------------------

def libvirt_bytes(host, path_in_host):
    path = str(host.local_path(path_in_host))
    info = json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output', 'json', path], check=True,
                                     capture_output=True, text=True).stdout)
    du = int(subprocess.run(['du', '-B1', path], check=True, capture_output=True, text=True).stdout.split()[0])
    return {'file': path_in_host, 'qemu_img_actual_size': info.get('actual-size'), 'du_bytes': du,
            'virtual_size': info.get('virtual-size'), 'backing': info.get('backing-filename')}


def bench_libvirt(uri):
    from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import LibvirtBackend
    from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.incremental import LibvirtBackupSets
    host = pause_bench.guestctl.find_host(uri)
    name = 'vmops-bk-bench'
    backup_dir = pause_bench.BACKUP_DIR
    pause_bench.prepare(host, name, DISK_MIB)
    row = {'backend': 'libvirt', 'host': uri, 'disk_mib': DISK_MIB, 'changed_bytes': CHANGED_MIB * MIB}
    try:
        for kind in ('full', 'incremental'):
            if kind == 'incremental':
                # The guest changes 16 MiB of its disk itself (random data, past the page cache).
                out = pause_bench.guestctl_run(
                    'exec', '--uri', host.uri, '--json', name, '--',
                    'dd if=/dev/urandom of=/dev/vda bs=1M count=%d seek=%d oflag=direct 2>/dev/null && echo changed'
                    % (CHANGED_MIB, CHANGED_AT_MIB))
                if 'changed' not in out.get('output', ''):
                    raise SystemExit('the guest did not change its disk: %r' % out)
            with LibvirtBackend(host.uri) as backend:
                req = request(name, '%s-%s' % (SERIES, kind), kind, backup_dir=backup_dir)
                sets = LibvirtBackupSets.for_request(backend, req)
                try:
                    result, seconds = run_point(sets, req)
                finally:
                    sets.close()
            point = result['point']
            files = [libvirt_bytes(host, '%s/%s' % (point['path'], disk['file'])) for disk in point['disks']]
            row[kind] = {'point': point['name'], 'kind': point['kind'], 'seconds': seconds,
                         'module_total_seconds': result['timings']['total_seconds'],
                         'libvirt_calls': result['instance']['api_requests'], 'files': files,
                         'bytes_written': sum(f['du_bytes'] for f in files)}
            print(json.dumps({kind: row[kind]}), flush=True)
    finally:
        pause_bench.guestctl_run('undefine', '--uri', host.uri, name)
        subprocess.run(['rm', '-rf', str(host.local_path('%s/%s' % (backup_dir, name)))], check=False)
        subprocess.run(['rmdir', '--ignore-fail-on-non-empty', str(host.local_path(backup_dir))], check=False)
    return ratios(row)


# OpenStack -----------------------------------------------------------------------------------------------

RBD_WRITE = '''
import os, sys, rados, rbd
cluster = rados.Rados(conffile=sys.argv[1], name="client.admin"); cluster.connect()
ioctx = cluster.open_ioctx("volumes"); image = rbd.Image(ioctx, sys.argv[2])
offset, length = int(sys.argv[3]), int(sys.argv[4])
chunk = 4 * 1024 * 1024
for at in range(offset, offset + length, chunk):
    image.write(os.urandom(min(chunk, offset + length - at)), at)
image.flush(); image.close(); ioctx.close(); cluster.shutdown()
'''


def rbd_write(check, volume_id, offset, length):
    subprocess.run(['/usr/bin/python3', '-c', RBD_WRITE, check.CEPH_CONF, 'volume-%s' % volume_id,
                    str(offset), str(length)], check=True, capture_output=True)


def bench_openstack(cloud):
    import openstack
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import OpenStackBackend
    from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backup_sets import CinderBackupSets
    sys.path.insert(0, OS_CHECK_DIR)
    import os_backupcheck as check   # the integration target's independent checks (plain openstacksdk, rbd)
    os.environ.setdefault('OS_CLIENT_CONFIG_FILE', CLOUDS_YAML)
    conn = openstack.connect(cloud=cloud)
    prefix = 'vmops-bk-bench'
    name = '%s-src' % prefix
    row = {'backend': 'openstack', 'cloud': cloud, 'disk_mib': DISK_MIB, 'changed_bytes': CHANGED_MIB * MIB,
           'setup': 'volume-backed server on kvm1 (1 GB boot volume from vmops-guest) with a 1 GB data volume; '
                    'the data volume filled and changed'}
    try:
        started = time.monotonic()
        server = check.setup(conn, name)
        data_volume = [v for v in conn.block_storage.volumes() if v.name == '%s-data' % name][0].id
        row['setup_seconds'] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        rbd_write(check, data_volume, 0, DISK_MIB * MIB)
        row['fill_seconds'] = round(time.monotonic() - started, 1)
        for kind in ('full', 'incremental'):
            if kind == 'incremental':
                rbd_write(check, data_volume, CHANGED_AT_MIB * MIB, CHANGED_MIB * MIB)
            with OpenStackBackend({'cloud': cloud, 'interface': 'public'}) as backend:
                req = request(server['id'], '%s-%s' % (prefix, kind), kind)
                sets = CinderBackupSets.for_request(backend, req)
                try:
                    result, seconds = run_point(sets, req)
                finally:
                    sets.close()
            backups = [b for b in check.backups(conn, server['id']) if b['point'] == '%s-%s' % (prefix, kind)]
            row[kind] = {'point': result['point']['name'], 'kind': result['point']['kind'], 'seconds': seconds,
                         'module_total_seconds': result['timings']['total_seconds'],
                         'api_requests': result['instance']['api_requests'],
                         'backups': [dict(b, data_volume=b['volume_id'] == data_volume) for b in backups],
                         'bytes_written': sum(b['rbd_used_bytes'] or 0 for b in backups),
                         'data_volume_bytes': sum(b['rbd_used_bytes'] or 0 for b in backups
                                                  if b['volume_id'] == data_volume)}
            print(json.dumps({kind: row[kind]}), flush=True)
    finally:
        row['cleanup'] = check.cleanup(conn, prefix)
    return ratios(row)


def table(rows):
    lines = ['| backend | point | seconds | calls | bytes written (storage tools) | incr bytes / changed | '
             'incr time / full time |', '|---|---|---:|---:|---:|---:|---:|']
    for row in rows:
        for kind in ('full', 'incremental'):
            point = row[kind]
            lines.append('| %s | %s | %.2f | %s | %.1f MiB | %s | %s |' % (
                row['backend'], kind, point['seconds'], point.get('libvirt_calls', point.get('api_requests')),
                point['bytes_written'] / MIB,
                '%.2f (<= 1.25: %s)' % (row['incremental_bytes_per_changed'], 'met' if row['bytes_target_met']
                                        else 'missed') if kind == 'incremental' else '',
                '%.2f (<= 0.1: %s)' % (row['incremental_time_per_full'], 'met' if row['time_target_met']
                                       else 'missed') if kind == 'incremental' else ''))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--backends', default='libvirt,openstack', help='libvirt, openstack or both')
    parser.add_argument('--uri', default='h1', help='libvirt sandbox host (default h1)')
    parser.add_argument('--cloud', default='vmops-admin', help='OpenStack cloud of clouds.yaml')
    parser.add_argument('--json', help='write the measurements to this file')
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(','):
        rows.append(bench_libvirt(args.uri) if backend == 'libvirt' else bench_openstack(args.cloud))
    text = table(rows)
    print(text)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'rows': rows, 'table': text}, handle, indent=1)


if __name__ == '__main__':
    main()
