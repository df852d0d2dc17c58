#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain JSON from `ansible-inventory --list`: values read from the cloud are untrusted, and the
listing marks each such string as {"__ansible_unsafe": "..."}; this replaces the mark by the string."""

import json
import sys


def unwrap(value):
    if isinstance(value, dict):
        if list(value) == ['__ansible_unsafe']:
            return value['__ansible_unsafe']
        return dict((key, unwrap(item)) for key, item in value.items())
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


if __name__ == '__main__':
    json.dump(unwrap(json.load(sys.stdin)), sys.stdout)
