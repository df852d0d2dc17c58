"""Seeds the vmops OpenStack sandbox (run by `up` with the system python3 and Debian's openstacksdk).

    python3 seed.py identity   # service project/user, catalog, project vmops and its users
    python3 seed.py resources  # flavors, images, network, clouds.yaml

Idempotent: everything is looked up by name first and only created when missing.
Settings come from the environment (`up` exports them): VMOPS_OS_STATE, VMOPS_GUEST_DIR and the
passwords of secrets.env.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import time

import openstack
import yaml
from openstack import exceptions

STATE = os.environ['VMOPS_OS_STATE']
AUTH_URL = 'http://127.0.0.1:5000/v3'
REGION = 'RegionOne'
SERVICE_PROJECT = 'service'
SERVICE_USER = 'sandbox-service'
PROJECT = 'vmops'
USERS = {  # name -> (role on project vmops, password variable)
    'vmops-admin': ('admin', 'VMOPS_ADMIN_PASSWORD'),
    'vmops-member': ('member', 'VMOPS_MEMBER_PASSWORD'),
}
CATALOG = [  # (service name, type, url)
    ('glance', 'image', 'http://127.0.0.1:9292'),
    ('placement', 'placement', 'http://127.0.0.1:8778'),
    ('nova', 'compute', 'http://127.0.0.1:8774/v2.1'),
    ('neutron', 'network', 'http://127.0.0.1:9696'),
    ('cinderv3', 'volumev3', 'http://127.0.0.1:8776/v3/%(project_id)s'),
    ('cinder', 'block-storage', 'http://127.0.0.1:8776/v3/%(project_id)s'),
]
FLAVORS = [  # name, MiB, vCPUs, GB
    ('vmops.tiny', 128, 1, 1),
    ('vmops.small', 256, 1, 2),
]
NETWORK = 'private'
SUBNET = 'private-subnet'
CIDR = '10.77.0.0/24'
GUEST_CMDLINE = 'console=ttyS0 panic=-1 quiet'
GUEST_IMAGES = [  # name, properties beyond the kernel, ramdisk and virtio disk bus they share
    ('vmops-guest', {'os_command_line': GUEST_CMDLINE}),
    # With the agent's channel (Nova adds it for hw_qemu_guest_agent) and a filesystem on vdb that
    # the guest writes every second: Nova freezes it for its snapshots (os_require_quiesce).
    ('vmops-guest-agent', {'os_command_line': GUEST_CMDLINE + ' vmops.fs=vdb',
                           'hw_qemu_guest_agent': 'yes', 'os_require_quiesce': 'yes'}),
]


def log(msg):
    print('seed: %s' % msg, file=sys.stderr, flush=True)


def admin_connection():
    return openstack.connect(
        load_yaml_config=False, load_envvars=False,
        auth_url=AUTH_URL, username='admin', password=os.environ['ADMIN_PASSWORD'],
        project_name='admin', user_domain_name='Default', project_domain_name='Default',
        region_name=REGION, interface='public', identity_api_version='3')


def first(iterable):
    """First item or None (listing with filters: no 404 lookups, which Keystone logs as errors)."""
    return next(iter(iterable), None)


def ensure(kind, find, create):
    obj = find()
    if obj is None:
        obj = create()
        log('created %s %s' % (kind, getattr(obj, 'name', obj.id)))
    return obj


def seed_identity(conn):
    idn = conn.identity
    domain = idn.get_domain('default')
    roles = {}
    for name in ('admin', 'member', 'reader', 'service'):
        roles[name] = ensure('role', lambda n=name: first(idn.roles(name=n)),
                             lambda n=name: idn.create_role(name=n))

    def project(name, desc):
        return ensure('project', lambda: first(idn.projects(name=name, domain_id=domain.id)),
                      lambda: idn.create_project(name=name, domain_id=domain.id,
                                                 description=desc))

    def user(name, password, proj):
        return ensure('user', lambda: first(idn.users(name=name, domain_id=domain.id)),
                      lambda: idn.create_user(name=name, password=password, domain_id=domain.id,
                                              default_project_id=proj.id))

    svc_project = project(SERVICE_PROJECT, 'OpenStack service users')
    svc_user = user(SERVICE_USER, os.environ['SERVICE_PASSWORD'], svc_project)
    for role in ('admin', 'service'):
        idn.assign_project_role_to_user(svc_project, svc_user, roles[role])

    vmops = project(PROJECT, 'vmops collection tests')
    for name, (role, var) in USERS.items():
        u = user(name, os.environ[var], vmops)
        idn.assign_project_role_to_user(vmops, u, roles[role])

    services = {s.type: s for s in idn.services()}
    endpoints = {(e.service_id, e.interface) for e in idn.endpoints()}
    for name, stype, url in CATALOG:
        svc = services.get(stype)
        if svc is None:
            svc = idn.create_service(name=name, type=stype, is_enabled=True)
            log('created service %s (%s)' % (name, stype))
        for interface in ('public', 'internal', 'admin'):
            if (svc.id, interface) not in endpoints:
                idn.create_endpoint(service_id=svc.id, interface=interface, url=url,
                                    region_id=REGION, is_enabled=True)


def wait_image_active(conn, image_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        image = conn.image.get_image(image_id)
        if image.status == 'active':
            return image
        if image.status in ('killed', 'deleted') or time.monotonic() > deadline:
            raise RuntimeError('image %s is %s' % (image_id, image.status))
        time.sleep(0.5)


def upload_image(conn, name, path, disk_format, container_format, **props):
    body = dict(name=name, disk_format=disk_format, container_format=container_format,
                visibility='public', **props)
    resp = conn.image.post('/images', json=body)
    exceptions.raise_from_response(resp)
    image_id = resp.json()['id']
    with open(path, 'rb') as data:
        resp = conn.image.put('/images/%s/file' % image_id, data=data,
                              headers={'Content-Type': 'application/octet-stream'})
        exceptions.raise_from_response(resp)
    image = wait_image_active(conn, image_id)
    log('uploaded image %s (%s, %d bytes)' % (name, disk_format, image.size or 0))
    return image


def ensure_image(conn, name, path, disk_format, container_format, **props):
    found = [i for i in conn.image.images(name=name) if i.status == 'active']
    if found:
        return found[0]
    for stale in conn.image.images(name=name):  # an upload that did not finish
        conn.image.delete_image(stale)
    return upload_image(conn, name, path, disk_format, container_format, **props)


def md5_of(path):
    digest = hashlib.md5()
    with open(path, 'rb') as data:
        for chunk in iter(lambda: data.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_current_image(conn, name, path, disk_format):
    """The guest's kernel or ramdisk as built now: a rebuilt guest is uploaded anew (Glance data
    cannot change); seed_resources removes the replaced one once the guest images point past it."""
    checksum = md5_of(path)
    for image in conn.image.images(name=name):
        if image.status == 'active' and image.checksum == checksum:
            return image
    return upload_image(conn, name, path, disk_format, disk_format)


def seed_real_zone(conn):
    """kvm1 (the real libvirt compute) gets its own availability zone, `real`.

    With default_schedule_zone = nova, unforced boots, resizes and migrations stay among the
    fake computes: a move between the fake driver and libvirt cannot work (the libvirt driver
    cannot finish a migration whose disk_info the fake source never wrote).  Servers for kvm1
    are created with availability_zone real:kvm1 (or plain `real`).
    """
    services = [svc for svc in conn.compute.services() if svc.binary == 'nova-compute' and svc.host == 'kvm1']
    if not services:
        return      # up --no-kvm
    aggregate = first(a for a in conn.compute.aggregates() if a.name == 'real')
    if aggregate is None:
        aggregate = conn.compute.create_aggregate(name='real', availability_zone='real')
        log('created aggregate real (availability zone real)')
    if 'kvm1' not in (aggregate.hosts or []):
        conn.compute.add_host_to_aggregate(aggregate, 'kvm1')
        log('added kvm1 to availability zone real')


def seed_resources(conn):
    idn = conn.identity
    vmops = first(idn.projects(name=PROJECT, domain_id='default'))
    if vmops is None:
        raise RuntimeError('project %s is missing (seed identity first)' % PROJECT)

    for name, ram, vcpus, disk in FLAVORS:
        ensure('flavor', lambda n=name: first(f for f in conn.compute.flavors() if f.name == n),
               lambda n=name, r=ram, v=vcpus, d=disk: conn.compute.create_flavor(
                   name=n, id=n, ram=r, vcpus=v, disk=d, is_public=True))

    guest_dir = os.environ['VMOPS_GUEST_DIR']
    kernel = ensure_current_image(conn, 'vmops-guest-kernel', os.path.join(guest_dir, 'vmlinuz'), 'aki')
    ramdisk = ensure_current_image(conn, 'vmops-guest-ramdisk', os.path.join(guest_dir, 'initramfs.img'), 'ari')
    for name, props in GUEST_IMAGES:
        found = [i for i in conn.image.images(name=name) if i.status == 'active']
        if found:
            # Kept as they are (tests rely on their properties), only pointed at the current boot files.
            for image in found:
                if (image.kernel_id, image.ramdisk_id) != (kernel.id, ramdisk.id):
                    conn.image.update_image(image, kernel_id=kernel.id, ramdisk_id=ramdisk.id)
                    log('image %s now boots kernel %s, ramdisk %s' % (name, kernel.id, ramdisk.id))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            disk = os.path.join(tmp, name + '.qcow2')
            # A blank disk: the guest boots from kernel_id/ramdisk_id and writes its tick
            # record to the first sector of vda (it never formats it).
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '64M'], check=True)
            ensure_image(conn, name, disk, 'qcow2', 'bare',
                         kernel_id=kernel.id, ramdisk_id=ramdisk.id, hw_disk_bus='virtio',
                         vmops_guest='busybox', **props)
    for name in ('vmops-guest-kernel', 'vmops-guest-ramdisk'):
        for stale in conn.image.images(name=name):
            if stale.id not in (kernel.id, ramdisk.id):
                # Servers already booted keep their own copy on the compute host.
                conn.image.delete_image(stale)
                log('deleted the replaced image %s %s' % (name, stale.id))

    net = first(conn.network.networks(name=NETWORK, project_id=vmops.id))
    if net is None:
        net = conn.network.create_network(name=NETWORK, project_id=vmops.id)
        log('created network %s' % NETWORK)
    if first(conn.network.subnets(name=SUBNET, network_id=net.id)) is None:
        conn.network.create_subnet(name=SUBNET, network_id=net.id, project_id=vmops.id,
                                   ip_version=4, cidr=CIDR, gateway_ip='10.77.0.1',
                                   enable_dhcp=False)
        log('created subnet %s %s' % (SUBNET, CIDR))

    seed_real_zone(conn)

    types = [t.name for t in conn.block_storage.types()]
    if '__DEFAULT__' not in types:
        raise RuntimeError('cinder has no __DEFAULT__ volume type: %s' % types)


def write_clouds_yaml():
    path = os.path.join(STATE, 'clouds.yaml')
    clouds = {}
    for name, (_, var) in USERS.items():
        clouds[name] = {
            'auth': {'auth_url': AUTH_URL, 'username': name, 'password': os.environ[var],
                     'project_name': PROJECT, 'user_domain_name': 'Default',
                     'project_domain_name': 'Default'},
            'region_name': REGION, 'interface': 'public', 'identity_api_version': 3,
        }
    clouds['vmops-cloud-admin'] = {
        'auth': {'auth_url': AUTH_URL, 'username': 'admin',
                 'password': os.environ['ADMIN_PASSWORD'], 'project_name': 'admin',
                 'user_domain_name': 'Default', 'project_domain_name': 'Default'},
        'region_name': REGION, 'interface': 'public', 'identity_api_version': 3,
    }
    text = '# vmops OpenStack sandbox (written by sandbox/openstack/up)\n' + \
        yaml.safe_dump({'clouds': clouds}, default_flow_style=False, sort_keys=False)
    tmp = path + '.new'
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    phase = sys.argv[1]
    conn = admin_connection()
    if phase == 'identity':
        seed_identity(conn)
    elif phase == 'resources':
        seed_resources(conn)
        write_clouds_yaml()
    else:
        raise SystemExit('unknown phase %s' % phase)


if __name__ == '__main__':
    main()
