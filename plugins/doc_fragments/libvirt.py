# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  libvirt_uri:
    description:
      - The libvirt connection URI of the hypervisor, for example V(qemu:///system),
        V(qemu+unix:///system?socket=/path/to/libvirt-sock), V(qemu+ssh://root@host/system),
        V(qemu+tcp://host/system) or V(qemu+tls://host/system).
      - Any URI libvirt accepts works; authentication is libvirt's own (SSH keys, TLS certificates,
        SASL). One connection is opened per module run and closed at the end.
      - Defaults to V(qemu:///system) when the libvirt backend is used.
    type: str
    aliases: [uri]
requirements:
  - libvirt-python >= 9.0 on the host that runs the module, for the libvirt backend
'''
