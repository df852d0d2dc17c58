"""nova-compute launcher of the vmops OpenStack sandbox: `python3 vmops_nova_compute.py --config-file ...`.

* Registers the sandbox's fake driver: Zed's Nova imports compute_driver only as
  nova.virt.<name>, so vmops_sandbox_fake (outside Nova's tree) is put into sys.modules under
  that name (compute_driver = vmops_sandbox_fake.VmopsFakeDriver).
* With VMOPS_LIBVIRT_MANAGED_TAP=1 (the libvirt compute kvm1): Nova's plug_tap() for
  vif_type 'tap' does not pre-create the tap device. Nova Zed pre-creates it and then asks
  libvirt for <interface type='ethernet'><target dev='tapX'/> without managed='no', which
  libvirt >= 9 refuses ("The tapX interface already exists"; upstream Nova later added
  managed='no'). Here libvirt creates the tap when the guest starts and removes it when it stops:
  the guest has a NIC connected to nothing, and nothing is left on the host.

`import nova.cmd` comes first: it monkey-patches eventlet.
"""
import os
import sys

import nova.cmd  # noqa: F401  (eventlet monkey patching, first)

import vmops_sandbox_fake

sys.modules['nova.virt.vmops_sandbox_fake'] = vmops_sandbox_fake

if os.environ.get('VMOPS_LIBVIRT_MANAGED_TAP') == '1':
    from oslo_log import log as logging
    from nova.virt.libvirt import vif as libvirt_vif

    _LOG = logging.getLogger('vmops_nova_compute')

    def _plug_tap(self, instance, vif):
        _LOG.debug("vmops: leaving tap %s to libvirt", self.get_vif_devname(vif),
                   instance=instance)

    libvirt_vif.LibvirtGenericVIFDriver.plug_tap = _plug_tap

from nova.cmd import compute  # noqa: E402

if __name__ == '__main__':
    sys.argv[0] = 'nova-compute'
    sys.exit(compute.main())
