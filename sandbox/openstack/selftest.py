"""End-to-end proof of the OpenStack sandbox through openstacksdk (run with the repo's venv):

    OS_CLIENT_CONFIG_FILE=/var/tmp/vmops-sandbox/openstack/clouds.yaml \
        .venv/bin/python sandbox/openstack/selftest.py [--no-kvm] [--keep]

Every Nova server action the collection cares about, on the fake computes (fake1..fake4), a
boot-from-volume server (Cinder on Ceph RBD), evacuation, the real libvirt compute kvm1 (a busybox
guest whose console log must show `vmops-tick` lines) and the member's limits. Prints one line
per step with its duration, then a JSON summary. Everything it creates is named st-* and deleted
at the end (also after a failure, unless --keep).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import openstack
from openstack import exceptions

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_HOSTS = ('fake1', 'fake2', 'fake3', 'fake4')
TIMINGS = {}


def log(msg):
    print(msg, flush=True)


class Failed(Exception):
    pass


def wait_server(conn, server, status, timeout=120, pred=None, what=None):
    """Poll until status matches, task_state is None and pred(server) holds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        s = conn.compute.get_server(server)
        last = s
        if s.status == 'ERROR':
            raise Failed('%s: server %s went to ERROR: %s' % (what or status, s.name, s.fault))
        if s.status == status and s.task_state is None and (pred is None or pred(s)):
            return s
        if time.monotonic() > deadline:
            raise Failed('%s: timed out after %ss; last status=%s task_state=%s host=%s' % (
                what or status, timeout, last.status, last.task_state, last.compute_host))
        time.sleep(0.25)


def timed(label, func, *args, **kwargs):
    t0 = time.monotonic()
    result = func(*args, **kwargs)
    dt = time.monotonic() - t0
    TIMINGS[label] = round(dt, 2)
    log('  %-44s %6.2f s' % (label, dt))
    return result


def act(conn, label, call, server, status, timeout=120, pred=None):
    def run():
        call()
        return wait_server(conn, server, status, timeout=timeout, pred=pred, what=label)
    return timed(label, run)


def expect_http(status_code, func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except exceptions.HttpException as e:
        if e.status_code == status_code:
            return e
        raise Failed('expected HTTP %s, got %s: %s' % (status_code, e.status_code, e))
    raise Failed('expected HTTP %s, the call succeeded' % status_code)


def service_of(conn, host):
    for svc in conn.compute.services(binary='nova-compute', host=host):
        return svc
    raise Failed('no nova-compute service on %s' % host)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--no-kvm', action='store_true')
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()

    admin = openstack.connect(cloud='vmops-admin')
    member = openstack.connect(cloud='vmops-member')
    cloud_admin = openstack.connect(cloud='vmops-cloud-admin')
    image = admin.image.find_image('vmops-guest', ignore_missing=False)
    tiny = admin.compute.find_flavor('vmops.tiny', ignore_missing=False)
    small = admin.compute.find_flavor('vmops.small', ignore_missing=False)
    net = admin.network.find_network('private', ignore_missing=False)
    nets = [{'uuid': net.id}]
    created = {'servers': [], 'images': [], 'forced': []}

    def boot(conn, name, **kw):
        kw.setdefault('image_id', image.id)
        if kw['image_id'] is None:  # boot from volume: no imageRef at all
            del kw['image_id']
        server = conn.compute.create_server(name=name, flavor_id=tiny.id, networks=nets, **kw)
        created['servers'].append(server.id)
        return server

    try:
        # ---------------- fake computes ----------------
        log('fake computes:')
        srv = timed('boot (fake host) -> ACTIVE', lambda: wait_server(
            admin, boot(admin, 'st-fake'), 'ACTIVE', what='boot'))
        log('    on %s, addresses %s' % (srv.compute_host, json.dumps(srv.addresses)))
        if srv.compute_host not in FAKE_HOSTS:
            raise Failed('unforced boot landed on %s' % srv.compute_host)
        port = next(admin.network.ports(device_id=srv.id))
        log('    port status=%s binding:vif_type=%s host=%s' % (
            port.status, port.binding_vif_type, port.binding_host_id))
        c = admin.compute
        act(admin, 'stop', lambda: c.stop_server(srv), srv, 'SHUTOFF')
        act(admin, 'start', lambda: c.start_server(srv), srv, 'ACTIVE')
        act(admin, 'pause', lambda: c.pause_server(srv), srv, 'PAUSED')
        act(admin, 'unpause', lambda: c.unpause_server(srv), srv, 'ACTIVE')
        act(admin, 'suspend', lambda: c.suspend_server(srv), srv, 'SUSPENDED')
        act(admin, 'resume', lambda: c.resume_server(srv), srv, 'ACTIVE')
        act(admin, 'shelve', lambda: c.shelve_server(srv), srv, 'SHELVED')
        time.sleep(3)
        s = c.get_server(srv)
        if s.status != 'SHELVED':
            raise Failed('SHELVED did not stay SHELVED: %s' % s.status)
        log('    still SHELVED after 3 s (host %s)' % s.compute_host)
        act(admin, 'shelve_offload', lambda: c.shelve_offload_server(srv), srv,
            'SHELVED_OFFLOADED')
        s = act(admin, 'unshelve', lambda: c.unshelve_server(srv), srv, 'ACTIVE')
        log('    unshelved onto %s' % s.compute_host)
        act(admin, 'rescue', lambda: c.rescue_server(srv), srv, 'RESCUE')
        act(admin, 'unrescue', lambda: c.unrescue_server(srv), srv, 'ACTIVE')

        timed('lock (reason)', lambda: c.lock_server(srv, locked_reason='selftest'))
        s = c.get_server(srv)
        log('    locked=%s reason=%r' % (s.is_locked, s.locked_reason))
        expect_http(409, member.compute.stop_server, srv)
        log('    member stop of the locked server: HTTP 409')
        timed('unlock', lambda: c.unlock_server(srv))
        # Locked by an admin of another project (locked_by=admin): the member cannot unlock it.
        cloud_admin.compute.lock_server(srv, locked_reason='selftest cloud admin')
        expect_http(403, member.compute.unlock_server, srv)
        log('    member unlock of a lock set by the cloud admin: HTTP 403')
        cloud_admin.compute.unlock_server(srv)

        src = c.get_server(srv).compute_host
        act(admin, 'resize -> VERIFY_RESIZE', lambda: c.resize_server(srv, small), srv,
            'VERIFY_RESIZE')
        s = act(admin, 'resize confirm', lambda: c.confirm_server_resize(srv), srv, 'ACTIVE')
        log('    resized %s -> %s, flavor %s' % (src, s.compute_host, s.flavor.name))
        src = s.compute_host
        act(admin, 'resize (2) -> VERIFY_RESIZE', lambda: c.resize_server(srv, tiny), srv,
            'VERIFY_RESIZE')
        s = act(admin, 'resize revert', lambda: c.revert_server_resize(srv), srv, 'ACTIVE')
        log('    reverted: host %s flavor %s' % (s.compute_host, s.flavor.name))
        if s.compute_host != src or s.flavor.name != 'vmops.small':
            raise Failed('revert did not go back to %s/vmops.small' % src)

        src = s.compute_host
        act(admin, 'cold migrate -> VERIFY_RESIZE', lambda: c.migrate_server(srv), srv,
            'VERIFY_RESIZE')
        s = act(admin, 'cold migrate confirm', lambda: c.confirm_server_resize(srv), srv,
                'ACTIVE')
        log('    migrated %s -> %s' % (src, s.compute_host))

        src = s.compute_host
        s = act(admin, 'live migrate (block_migration auto)',
                lambda: c.live_migrate_server(srv, host=None, block_migration='auto'),
                srv, 'ACTIVE', pred=lambda x: x.compute_host != src)
        log('    live-migrated %s -> %s' % (src, s.compute_host))

        def snapshot():
            img = c.create_server_image(srv, name='st-snap', wait=False)
            created['images'].append(img.id)
            admin.image.wait_for_status(img, status='active', failures=['killed', 'deleted'],
                                        interval=0.25, wait=120)
            return admin.image.get_image(img.id)
        snap = timed('createImage -> snapshot active', snapshot)
        log('    snapshot %s: %s, %s bytes, image_type=%s' % (
            snap.id, snap.status, snap.size, snap.properties.get('image_type')))

        # ---------------- boot from volume (Cinder on Ceph) ----------------
        log('boot from volume:')
        bdm = [{'boot_index': 0, 'uuid': image.id, 'source_type': 'image',
                'destination_type': 'volume', 'volume_size': 1,
                'delete_on_termination': True}]
        bfv = timed('boot from volume -> ACTIVE', lambda: wait_server(
            admin, boot(admin, 'st-bfv', image_id=None, block_device_mapping=bdm), 'ACTIVE',
            timeout=180, what='bfv'))
        vols = [a['id'] for a in bfv.attached_volumes]
        vol = admin.block_storage.get_volume(vols[0])
        log('    on %s, volume %s %s %s GB type %s backend %s' % (
            bfv.compute_host, vol.id, vol.status, vol.size, vol.volume_type, vol.host))
        rbd = subprocess.run(['rbd', '-c', '/var/tmp/vmops-sandbox/openstack/etc/ceph/ceph.conf',
                              '-n', 'client.admin', 'ls', 'volumes'],
                             capture_output=True, text=True, check=True).stdout.split()
        if 'volume-%s' % vol.id not in rbd:
            raise Failed('volume-%s not in the RBD pool volumes: %s' % (vol.id, rbd))
        log('    RBD image volumes/volume-%s exists' % vol.id)

        # ---------------- evacuate ----------------
        log('evacuate:')
        victim = c.get_server(srv).compute_host
        svc = service_of(admin, victim)
        timed('force-down %s' % victim,
              lambda: c.update_service_forced_down(svc, victim, 'nova-compute', True))
        created['forced'].append(victim)
        s = act(admin, 'evacuate -> ACTIVE elsewhere', lambda: c.evacuate_server(srv), srv,
                'ACTIVE', pred=lambda x: x.compute_host != victim)
        log('    evacuated %s -> %s' % (victim, s.compute_host))
        restore_service(admin, victim)
        created['forced'].remove(victim)

        # ---------------- member limits ----------------
        log('member:')
        e = expect_http(403, member.compute.create_server, name='st-member-forced',
                        image_id=image.id, flavor_id=tiny.id, networks=nets,
                        availability_zone='nova:fake1')
        log('    member boot with availability_zone nova:fake1: HTTP 403')
        ms = timed('member boot -> ACTIVE', lambda: wait_server(
            member, boot(member, 'st-member'), 'ACTIVE', what='member boot'))
        log('    member server %s (hosts are hidden from members)' % ms.status)

        # ---------------- libvirt compute ----------------
        if not args.no_kvm:
            log('libvirt compute kvm1 (TCG):')
            kvm = timed('boot (real:kvm1) -> ACTIVE', lambda: wait_server(
                admin, boot(admin, 'st-kvm', availability_zone='real:kvm1'), 'ACTIVE',
                timeout=180, what='kvm boot'))
            if kvm.compute_host != 'kvm1':
                raise Failed('forced boot landed on %s' % kvm.compute_host)

            def ticks(n=1, timeout=90):
                deadline = time.monotonic() + timeout
                while True:
                    out = c.get_server_console_output(kvm, length=400)['output']
                    lines = [x for x in out.splitlines() if x.startswith('vmops-tick')]
                    if len(lines) >= n:
                        return lines
                    if time.monotonic() > deadline:
                        raise Failed('no vmops-tick in the console after %ss:\n%s' % (
                            timeout, out[-800:]))
                    time.sleep(0.5)
            lines = timed('first vmops-tick in console output', ticks)
            log('    console: %s' % lines[-1])
            act(admin, 'kvm pause', lambda: c.pause_server(kvm), kvm, 'PAUSED')
            act(admin, 'kvm unpause', lambda: c.unpause_server(kvm), kvm, 'ACTIVE')
            act(admin, 'kvm suspend', lambda: c.suspend_server(kvm), kvm, 'SUSPENDED')
            act(admin, 'kvm resume', lambda: c.resume_server(kvm), kvm, 'ACTIVE')
            before = len(ticks())
            lines = ticks(before + 2)
            log('    ticking after resume: %s' % lines[-1])
            act(admin, 'kvm stop (ACPI)', lambda: c.stop_server(kvm), kvm, 'SHUTOFF')
            act(admin, 'kvm start', lambda: c.start_server(kvm), kvm, 'ACTIVE')
            lines = timed('kvm tick after start', ticks)
            log('    console after start: %s' % lines[-1])
    finally:
        if not args.keep:
            cleanup(admin, created)
    log(json.dumps({'timings_s': TIMINGS}, indent=1))


def restore_service(admin, host):
    c = admin.compute
    svc = service_of(admin, host)
    t0 = time.monotonic()
    try:
        c.update_service_forced_down(svc, host, 'nova-compute', False)
        log('    un-forced %s directly' % host)
    except exceptions.HttpException as e:
        # Zed refuses while "done" evacuation records remain; the source compute cleans them up
        # when it starts again.
        log('    un-force refused (%s): restarting nova-compute-%s' % (e.status_code, host))
        subprocess.run([os.path.join(HERE, 'up'), '--restart', 'nova-compute-%s' % host],
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                c.update_service_forced_down(svc, host, 'nova-compute', False)
                break
            except exceptions.HttpException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    deadline = time.monotonic() + 60
    while service_of(admin, host).state != 'up':
        if time.monotonic() > deadline:
            raise Failed('%s did not come back up' % host)
        time.sleep(0.5)
    TIMINGS['restore %s' % host] = round(time.monotonic() - t0, 2)
    log('  %-44s %6.2f s' % ('restore %s (service up)' % host, time.monotonic() - t0))


def cleanup(admin, created):
    log('cleanup:')
    for host in list(created['forced']):
        try:
            restore_service(admin, host)
        except Exception as e:  # noqa: BLE001
            log('    could not restore %s: %s' % (host, e))
    t0 = time.monotonic()
    for sid in created['servers']:
        try:
            admin.compute.delete_server(sid, force=False)
        except exceptions.NotFoundException:
            pass
    for sid in created['servers']:
        try:
            admin.compute.wait_for_delete(admin.compute.get_server(sid), interval=0.5, wait=120)
        except exceptions.NotFoundException:
            pass
    for iid in created['images']:
        admin.image.delete_image(iid, ignore_missing=True)
    left = [v.name for v in admin.block_storage.volumes(all_projects=True)]
    log('  %-44s %6.2f s (volumes left: %s)' % ('delete servers + images',
                                                time.monotonic() - t0, left or 'none'))


if __name__ == '__main__':
    try:
        main()
    except Failed as e:
        log('FAILED: %s' % e)
        sys.exit(1)
