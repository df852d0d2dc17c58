# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  wait:
    description:
      - Wait until the instance has reached the wanted state before returning.
      - When V(false), intermediate steps of a plan are still waited on (a guest cannot be paused
        before it has started); only the last step is not.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the whole run may take, all steps and waits included.
      - On timeout the module fails with the last state it saw and the time it waited.
      - An instance that enters an error state while waited on fails the run at once, with its
        fault message.
    type: int
    default: 180
'''
