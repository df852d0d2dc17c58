"""Nova fake virt driver of the vmops OpenStack sandbox (compute_driver = vmops_sandbox_fake.VmopsFakeDriver).

A small subclass of nova.virt.fake.FakeDriver that

* uploads a small (blank, sparse) qcow2 disk to Glance in snapshot(), so createImage/createBackup
  images reach 'active' (the stock fake leaves them 'queued' forever, and rebuilding from such an
  image then fails "image is not active");
* reports the power states a real hypervisor would (PAUSED, SUSPENDED, ...) where the stock fake
  keeps saying RUNNING, a paused guest staying paused through a live migration too (an evacuated
  guest is spawned anew, running, as on a real hypervisor: host_evacuate pauses or suspends it again);
* keeps its guests in <instances_path>/vmops-fake-instances.json, so a restarted nova-compute (down
  then up) still knows its servers instead of Nova's power-state sync stopping them later;
* reports a fixed, large inventory (the scheduler's weighers prefer these hosts to the real
  libvirt compute, which is only used when asked for with availability_zone nova:kvm1).

Zed's Nova loads compute drivers only from nova.virt.<name>: vmops_nova_compute.py registers this
module as nova.virt.vmops_sandbox_fake after `import nova.cmd` (eventlet monkey-patching first).
"""
import json
import os
import tempfile
import time

from oslo_concurrency import processutils
from oslo_log import log as logging

import nova.conf
from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
from nova import exception
from nova.image import glance
from nova.virt import fake

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

_STORE = None


class _PersistedFakeInstance(fake.FakeInstance):
    """FakeInstance that saves the driver's guest list whenever its state changes."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == 'state' and _STORE is not None:
            _STORE.save()


class _InstanceStore(dict):
    """uuid -> FakeInstance, written to a JSON file on every change."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.loading = False

    def load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except ValueError:
            LOG.warning("vmops fake: ignoring unreadable %s", self.path)
            return
        self.loading = True
        try:
            for uuid, item in data.items():
                dict.__setitem__(self, uuid,
                                 _PersistedFakeInstance(item['name'], item['state'], uuid))
        finally:
            self.loading = False
        LOG.info("vmops fake: %d guest(s) restored from %s", len(self), self.path)

    def save(self):
        if self.loading:
            return
        data = {uuid: {'name': i.name, 'state': i.state} for uuid, i in self.items()}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix='.fake-instances.')
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.save()

    def __delitem__(self, key):
        super().__delitem__(key)
        self.save()

    def pop(self, *args):
        value = super().pop(*args)
        self.save()
        return value


# FakeDriver creates its guests as nova.virt.fake.FakeInstance(...): make those persisted ones.
fake.FakeInstance = _PersistedFakeInstance


class VmopsFakeDriver(fake.FakeDriver):

    capabilities = dict(fake.FakeDriver.capabilities,
                        supports_image_type_qcow2=True,
                        supports_image_type_aki=True,
                        supports_image_type_ari=True)

    # Per fake host. Large on purpose: the RAM/CPU/disk weighers then always rank the fake hosts
    # above the real libvirt compute (whatever the machine has), so unforced boots, resizes,
    # migrations and evacuations stay on fake hosts.
    vcpus = 256
    memory_mb = 1048576
    local_gb = 10240

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        global _STORE
        os.makedirs(CONF.instances_path, exist_ok=True)
        self.instances = _InstanceStore(
            os.path.join(CONF.instances_path, 'vmops-fake-instances.json'))
        _STORE = self.instances
        self._image_api = glance.API()

    def init_host(self, host):
        super().init_host(host)
        self.instances.load()

    def _set_state(self, instance, state):
        if instance.uuid not in self.instances:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        self.instances[instance.uuid].state = state

    def pause(self, instance):
        self._set_state(instance, power_state.PAUSED)

    def unpause(self, instance):
        self._set_state(instance, power_state.RUNNING)

    def suspend(self, context, instance):
        self._set_state(instance, power_state.SUSPENDED)

    def resume(self, context, instance, network_info, block_device_info=None):
        self._set_state(instance, power_state.RUNNING)

    def rescue(self, context, instance, network_info, image_meta, rescue_password,
               block_device_info):
        self._set_state(instance, power_state.RUNNING)

    def resume_state_on_host_boot(self, context, instance, network_info,
                                  block_device_info=None):
        if instance.uuid not in self.instances:
            self.spawn(context, instance, instance.image_meta, None, None, None,
                       network_info=network_info, block_device_info=block_device_info)

    # Opt-in slow live migration (tests of deadlines, abort and force-complete): a server whose
    # metadata has vmops_fake_live_migration_seconds=N takes N seconds to live-migrate, unless
    # aborted (DELETE /servers/{id}/migrations/{mid}: rolled back, stays on the source) or
    # force-completed (POST .../action force_complete: completes at once) meanwhile.
    SLOW_LIVE_MIGRATION_KEY = 'vmops_fake_live_migration_seconds'
    _live_migration_verdicts = {}

    def live_migration(self, context, instance, dest, post_method, recover_method,
                       block_migration=False, migrate_data=None):
        try:
            seconds = float((instance.metadata or {}).get(self.SLOW_LIVE_MIGRATION_KEY) or 0)
        except (TypeError, ValueError):
            seconds = 0
        if seconds > 0:
            verdicts = self._live_migration_verdicts
            verdicts.pop(instance.uuid, None)
            ends = time.monotonic() + seconds
            LOG.info("vmops fake: slow live migration (%.1f s) to %s", seconds, dest, instance=instance)
            while time.monotonic() < ends and instance.uuid not in verdicts:
                time.sleep(0.1)
            if verdicts.pop(instance.uuid, None) == 'abort':
                LOG.info("vmops fake: live migration aborted", instance=instance)
                recover_method(context, instance, dest, migrate_data, migration_status='cancelled')
                return
        super().live_migration(context, instance, dest, post_method, recover_method,
                               block_migration, migrate_data)
        # The guest runs on dest now (post_live_migration_at_destination spawned it there); the
        # stock fake keeps a stale copy on the source.
        self.instances.pop(instance.uuid, None)

    def post_live_migration_at_destination(self, context, instance, network_info,
                                           block_migration=False, block_device_info=None):
        # The stock fake spawns the guest running here; a real hypervisor keeps a paused guest paused
        # through a live migration (Nova keeps vm_state PAUSED and reads the power state back from us).
        super().post_live_migration_at_destination(context, instance, network_info,
                                                   block_migration, block_device_info)
        if instance.vm_state == vm_states.PAUSED:
            self._set_state(instance, power_state.PAUSED)

    def live_migration_abort(self, instance):
        self._live_migration_verdicts[instance.uuid] = 'abort'

    def live_migration_force_complete(self, instance):
        self._live_migration_verdicts[instance.uuid] = 'complete'

    def get_host_uptime(self):
        with open('/proc/uptime') as f:
            seconds = float(f.read().split()[0])
        return ' %s up %d min,  0 users,  load average: 0.00, 0.00, 0.00' % (
            time.strftime('%H:%M:%S'), seconds // 60)

    def snapshot(self, context, instance, image_id, update_task_state):
        if instance.uuid not in self.instances:
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        snapshot = self._image_api.get(context, image_id)
        metadata = {
            'status': 'active',
            'name': snapshot['name'],
            'disk_format': 'qcow2',
            'container_format': 'bare',
            'properties': {
                'image_location': 'snapshot',
                'image_state': 'available',
                'owner_id': instance.project_id,
            },
        }
        if instance.kernel_id:
            metadata['properties']['kernel_id'] = instance.kernel_id
        if instance.ramdisk_id:
            metadata['properties']['ramdisk_id'] = instance.ramdisk_id
        size_gb = max(instance.flavor.root_gb or 0, 1)
        with tempfile.TemporaryDirectory(prefix='vmops-snap-') as tmp:
            path = os.path.join(tmp, 'disk.qcow2')
            # A blank sparse qcow2 of the root disk's size (~200 KiB): small, yet a valid disk
            # the libvirt compute can boot the test guest from (it boots from kernel_id).
            processutils.execute('qemu-img', 'create', '-f', 'qcow2', path, '%dG' % size_gb)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(path, 'rb') as data:
                self._image_api.update(context, image_id, metadata, data, purge_props=False)
        LOG.info("vmops fake: snapshot %s uploaded", image_id, instance=instance)
