# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  backend:
    description:
      - Which backend manages the instance.
      - V(auto) picks V(openstack) when O(cloud) or O(auth) is set, else V(libvirt).
        Setting both O(libvirt_uri) and O(cloud)/O(auth) with V(auto) is refused as ambiguous.
    type: str
    choices: [auto, libvirt, openstack]
    default: auto
'''
