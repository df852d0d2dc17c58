# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The small interface every backend (libvirt, OpenStack) implements."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections

# What a backend reads about one instance, in the core's words.
#   name, id: the instance's name and its UUID
#   state:    one of states.ALL_STATES
#   task:     None when the instance is settled; otherwise what it is busy with
#             ('shutting_down', 'saving', Nova's task_state ...); plans start only from settled states
#   fault:    a message explaining an error state, else None
#   details:  backend-specific facts worth returning (libvirt state reason, Nova status, host ...)
Observation = collections.namedtuple('Observation', 'name id state task fault details')


def describe(observation):
    """Short human text for an observation, used in wait and error messages."""
    if observation is None:
        return 'unknown'
    text = observation.state
    if observation.task:
        text += ' (busy: %s)' % observation.task
    if observation.fault:
        text += ' (fault: %s)' % observation.fault
    return text


class Backend(abc.ABC):
    """Base class of a backend.  One instance per module run: open in __init__, close() at the end.

    Subclasses set `model` (a states.BackendModel) and implement:
      find(identifier)      -> a reference to the instance, or None if it does not exist
      observe(ref)          -> Observation (read-only; state ABSENT once the instance is gone)
      perform(ref, verb, options)
                            -> None, or a predicate on Observation that must also hold before
                               the verb counts as done (e.g. "the guest really rebooted");
                               `options` carries verb arguments (lock_reason for 'lock')
      location()            -> where the backend points (URI, cloud name), for messages
    """

    model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def close(self):
        """Release the connection; safe to call more than once."""

    def request_count(self):
        """API requests sent so far in this run, if the backend counts them (else None)."""
        return None

    def bound_by(self, deadline):
        """Retries of transient failures must end by this Deadline (the run's own)."""

    @abc.abstractmethod
    def find(self, identifier):
        """See the class docstring."""

    @abc.abstractmethod
    def observe(self, ref):
        """See the class docstring."""

    @abc.abstractmethod
    def perform(self, ref, verb, options=None):
        """See the class docstring."""

    @abc.abstractmethod
    def location(self):
        """See the class docstring."""
