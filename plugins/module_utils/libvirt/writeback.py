# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hypervisor's dirty-page writeback threshold, which decides how long a backup stalls the guest at its end.

QEMU writes a push-mode backup through the host's page cache and, when the job ends, flushes whatever the
kernel has not written back yet while it holds its global lock, so the guest's devices wait (its console
stops).  Measured in the sandbox (docs/dev/benchmarks.md): a 1 GiB full stalled the guest 221 ms with
Linux's default threshold (10 % of available memory), 38 ms with vm.dirty_background_bytes at 64 MiB.
libvirt's backup XML has no cache setting for the target and libvirt exposes no sysctl, so the threshold is
read from /proc, and only when the libvirt URI names no host: the module then runs on the hypervisor (a
libvirtd socket in another mount namespace still shares the kernel, whose vm settings are global).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

ADVISED_BYTES = 64 * 1024 * 1024
# Above this the end-of-job flush of a full is long enough for a guest to notice (measured: 1 GiB).
TUNED_MAX_BYTES = 256 * 1024 * 1024
LOCAL_HOSTS = ('', 'localhost', '127.0.0.1', '::1', '[::1]')


def is_local(uri):
    """A libvirt URI whose libvirtd runs on this machine: no host part (qemu:///system, a unix socket)."""
    if not uri or '://' not in uri:
        return False
    rest = uri.split('://', 1)[1]
    host = rest.split('/', 1)[0].rsplit('@', 1)[-1]
    if host.startswith('['):
        host = host.split(']', 1)[0] + ']'
    else:
        host = host.split(':', 1)[0]
    return host in LOCAL_HOSTS


def _read(path):
    with open(path) as handle:
        return handle.read()


def _available_bytes(proc):
    for line in _read(os.path.join(proc, 'meminfo')).splitlines():
        if line.startswith('MemAvailable:'):
            return int(line.split()[1]) * 1024
    raise ValueError('no MemAvailable')


def local_writeback(uri, proc='/proc'):
    """{'threshold_bytes', 'setting', 'tuned', 'advice'} for a local libvirtd, None when unknown."""
    if not is_local(uri):
        return None
    try:
        fixed = int(_read(os.path.join(proc, 'sys/vm/dirty_background_bytes')).strip())
        if fixed:
            threshold, setting = fixed, 'vm.dirty_background_bytes=%d' % fixed
        else:
            ratio = int(_read(os.path.join(proc, 'sys/vm/dirty_background_ratio')).strip())
            available = _available_bytes(proc)
            threshold = available * ratio // 100
            setting = 'vm.dirty_background_ratio=%d (of %d MiB available)' % (ratio, available // (1024 * 1024))
    except (OSError, ValueError):
        return None
    report = {'threshold_bytes': threshold, 'setting': setting, 'tuned': threshold <= TUNED_MAX_BYTES, 'advice': None}
    if not report['tuned']:
        report['advice'] = (
            'this host writes dirty pages back only past %d MiB (%s), so QEMU flushes up to that much of a '
            'backup when its job ends, holding its global lock: the guest stalls (1 GiB full measured: 221 ms, '
            'against 38 ms with vm.dirty_background_bytes=%d). Set vm.dirty_background_bytes=%d on hypervisors '
            'that take backups.' % (threshold // (1024 * 1024), setting, ADVISED_BYTES, ADVISED_BYTES))
    return report
