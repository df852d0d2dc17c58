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
      - V(auto) picks V(libvirt) (the only backend of this release).
    type: str
    choices: [auto, libvirt]
    default: auto
'''
