# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the compute_hosts inventory knows of a libvirt host: its domains by state and its capacity.

Read-only connections, closed after the read.  Capacity is the node's (virNodeGetInfo), the memory
free now is virNodeGetFreeMemory, and what the defined domains ask for is summed from each domain's
info (maximum memory, vCPUs).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import ConnectionFailed
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import (
    HAS_LIBRARY, LIBRARY_IMPORT_ERROR, libvirt, redact_uri)


def _state_names():
    if not HAS_LIBRARY:
        return {}
    return {libvirt.VIR_DOMAIN_RUNNING: states.RUNNING, libvirt.VIR_DOMAIN_BLOCKED: states.RUNNING,
            libvirt.VIR_DOMAIN_PAUSED: states.PAUSED, libvirt.VIR_DOMAIN_SHUTDOWN: states.RUNNING,
            libvirt.VIR_DOMAIN_SHUTOFF: states.STOPPED, libvirt.VIR_DOMAIN_CRASHED: states.ERROR,
            libvirt.VIR_DOMAIN_PMSUSPENDED: states.SUSPENDED}


def domain_state(domain, state, names=None):
    """The collection's state name of a domain whose virDomainGetInfo state is `state` (managed save: suspended)."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and domain.hasManagedSaveImage(0):
        return states.SUSPENDED
    return (names if names is not None else _state_names()).get(state, states.ERROR)


def open_read_only(uri, opener=None):
    """A read-only connection to `uri` (`opener` replaces libvirt.openReadOnly in tests); ConnectionFailed
    when there is none."""
    if opener is None:
        if not HAS_LIBRARY:
            raise ConnectionFailed('libvirt-python is needed to read %s: %s' % (redact_uri(uri), LIBRARY_IMPORT_ERROR))
        opener = libvirt.openReadOnly
    try:
        return opener(uri)
    except Exception as error:  # libvirt.libvirtError, or whatever a custom opener raises
        raise ConnectionFailed('Cannot connect to libvirt at %s: %s' % (redact_uri(uri), error))


def read_libvirt_host(uri, opener=None):
    """{hostname, uri, domains: {total, by_state}, capacity: {vcpus, ram_mb, ...}} for one host."""
    conn = open_read_only(uri, opener)
    try:
        hostname = conn.getHostname()
        info = conn.getInfo()                    # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
        free_mb = conn.getFreeMemory() // (1024 * 1024)
        names = _state_names()
        counts = collections.Counter()
        asked_vcpus = asked_mb = running_vcpus = running_mb = 0
        for domain in conn.listAllDomains(0):
            state, max_kib, _memory, vcpus, _cpu_time = domain.info()
            name = domain_state(domain, state, names)
            counts[name] += 1
            asked_vcpus += vcpus
            asked_mb += max_kib // 1024
            if name in (states.RUNNING, states.PAUSED):
                running_vcpus += vcpus
                running_mb += max_kib // 1024
    except Exception as error:  # pylint: disable=broad-except
        raise ConnectionFailed('Reading libvirt host %s failed: %s' % (redact_uri(uri), error))
    finally:
        conn.close()
    return {
        'hostname': hostname, 'uri': redact_uri(uri), 'cpu_model': info[0],
        'domains': {'total': sum(counts.values()), 'by_state': dict(sorted(counts.items()))},
        'capacity': {
            'vcpus': {'total': info[2], 'used': running_vcpus, 'defined': asked_vcpus},
            'ram_mb': {'total': info[1], 'free': free_mb, 'used': running_mb, 'defined': asked_mb},
        },
    }
