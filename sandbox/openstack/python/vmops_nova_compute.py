"""nova-compute with the sandbox's fake driver: `python3 vmops_nova_compute.py --config-file ...`.

Zed's Nova imports compute_driver only as nova.virt.<name>, so the driver module (outside Nova's
tree) is registered under that name first. `import nova.cmd` must come before anything else: it
monkey-patches eventlet.
"""
import sys

import nova.cmd  # noqa: F401  (eventlet monkey patching, first)

import vmops_sandbox_fake

sys.modules['nova.virt.vmops_sandbox_fake'] = vmops_sandbox_fake

from nova.cmd import compute  # noqa: E402

if __name__ == '__main__':
    sys.argv[0] = 'nova-compute'
    sys.exit(compute.main())
