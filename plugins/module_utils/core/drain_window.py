# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The window of a drain: at most `window` moves in flight, refilled as each ends, followed with ONE
shared read a cycle (`backend.poll`), at a fixed rate.

Deadlines: a live move past its deadline is aborted (or force-completed) and, once the instance is seen
back on the source, falls back to a cold move when allowed.  The run gives up following a move at its
`give_up_at` (the deadline plus another deadline).

API faults:
  * A failed shared read (poll raising any VmopsError) is not fatal: the moves stay in flight and the
    read is tried again next cycle.  When reads have failed continuously for longer than `retry_budget`
    seconds (measured from the start of the first failed read; 0 = the first failure ends the run),
    the run ends.
  * Deadlines keep counting while reads fail, but are acted on only in a cycle whose read succeeded, so
    an abort or force-complete is never sent for a move that may already have ended.  After an outage,
    a move already past its deadline gets another whole deadline from the first good read before the
    run gives up on it: time without reads is not held against it.
  * start_move (or adopt) raising ServiceUnavailable means the API stayed down through the request
    layer's own retries (retry_budget): the run ends at once, the rest not_started.  An error whose
    details say sent='no' (nothing reached a host: libvirt's start found a host out of reach) records
    that instance not_started; any other error of a start fails that instance alone.
  * Any other VmopsError mid-run ends the run too.
The host being emptied (the backend's SourceWatch, read at most every `watch.every` seconds and again
after any refused start): a drain whose source died ends at once (SOURCE_DOWN: whatever is sent to a dead
source fails or hangs, moves in flight included); an evacuation whose host turns out alive sends nothing
more, follows the evacuations in flight to their end, then ends (SOURCE_ALIVE: whatever is evacuated off a
live host runs twice).  The record names the moves sent after what the watch saw.
When the run ends early (these, or the run's `timeout`), every move still in flight is recorded
`in_flight` (it goes on in the backend; a rerun adopts it) and every move not sent `not_started`, and
RunEnded is raised: the record is whole.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    ConnectionFailed, ServiceUnavailable, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    ADOPT, COLD, DEADLINE_RETRY_SECONDS, EVACUATE, HOLD, LIVE, SOURCE_ALIVE, SOURCE_DOWN)

# Why a run ended early (RunEnded.details['reason']); also SOURCE_DOWN and SOURCE_ALIVE (move_backend).
READS_FAILING, API_UNAVAILABLE, TIMEOUT, ERROR = 'reads_failing', 'api_unavailable', 'timeout', 'error'
SOURCE_REASONS = (SOURCE_DOWN, SOURCE_ALIVE)


class RunEnded(VmopsError):
    """The window stopped before every move ended; the record already holds every instance.
    details: reason (READS_FAILING, API_UNAVAILABLE, TIMEOUT, ERROR) and, when an error caused it,
    error: {type, msg, and the error's own details}."""

    @property
    def reason(self):
        return self.details.get('reason')


class Window(object):

    def __init__(self, backend, request, clock, record, run_deadline):
        self.backend = backend
        self.request = request
        self.clock = clock
        self.record = record
        self.run_deadline = run_deadline
        self.size = request.window or backend.default_window
        self.pending = collections.deque()          # PlanItems not sent yet
        self.inflight = collections.OrderedDict()   # handle id -> MoveHandle
        self.max_in_flight = 0
        self.polls = 0              # shared reads that answered
        self.failed_polls = 0
        self.outage_since = None    # monotonic start of the first read of the current run of failures
        self.undo_unreachable = False
        self.watch = None           # the backend's SourceWatch, set once the service changes are applied
        self.watched_at = None      # monotonic time of the last check
        self.started = []           # (name, epoch seconds) of every move sent, for the watch's alarm
        self.halted = None          # (reason, why): nothing more is sent; the moves in flight are followed
        self.holding = None         # why the watch says to send nothing yet, or None

    def load(self, items):
        self.pending.extend(items)

    def drive(self):
        """Run the window until every move has ended; raises RunEnded when the run ends early."""
        try:
            self._loop()
        except RunEnded:
            raise
        except VmopsError as error:     # anything else mid-run, after the request layer's own retries
            raise self.end(ERROR, error.msg, error)

    def _loop(self):
        request, clock = self.request, self.clock
        last_poll = None
        while self.pending or self.inflight:
            self._refill()
            if not self.inflight:
                if self.holding is not None and self.pending:
                    if clock.monotonic() >= self.run_deadline:
                        raise self.end(TIMEOUT, 'the run timed out after %s s while %s'
                                       % (request.timeout, self.holding))
                    clock.sleep(self.watch.every if self.watch is not None else 1.0)
                continue
            if clock.monotonic() >= self.run_deadline:
                raise self.end(TIMEOUT, 'the run timed out after %s s' % request.timeout)
            # A fixed rate: the interval runs from one read's start to the next, whatever the cycle's
            # own requests (settling, starting the next moves) took.
            wait = request.poll_interval - (clock.monotonic() - last_poll if last_poll is not None else 0)
            if wait > 0:
                clock.sleep(wait)
            last_poll = clock.monotonic()
            statuses = self._read(last_poll)
            if statuses is not None:
                self._follow(statuses)
                self._watch()
            self.max_in_flight = max(self.max_in_flight, len(self.inflight))
        if self.halted is not None:
            raise self.end(*self.halted)

    def _refill(self):
        if self.pending and len(self.inflight) < self.size:
            self._watch()
            if self.holding is not None:
                return
        while self.pending and len(self.inflight) < self.size:
            item = self.pending.popleft()
            try:
                handle = self._start(item.subject, item.decision.move)
            except ServiceUnavailable as error:
                if error.sent == 'maybe':
                    self._maybe_sent(item.subject, item.decision.move, error)
                else:
                    self.pending.appendleft(item)
                raise self.end(API_UNAVAILABLE, 'the API was unavailable when starting the move of %s: %s'
                               % (item.subject.name, error.msg), error)
            if handle is not None:
                self.inflight[handle.id] = handle
            else:
                self._watch(now=True)   # a refusal may be the first sign ("compute service ... unavailable")
        self.max_in_flight = max(self.max_in_flight, len(self.inflight))

    def _watch(self, now=False):
        """Read the source watch when it is due (or `now`); its alarm ends the run."""
        watch = self.watch
        if watch is None:
            return
        moment = self.clock.monotonic()
        if not now and self.watched_at is not None and moment - self.watched_at < watch.every:
            return
        self.watched_at = moment
        try:
            alarm = watch.check()
        except VmopsError:
            return      # the next check tries again; the run's own reads decide about an outage
        if alarm is None or alarm[0] == HOLD:
            self.holding = alarm[1] if alarm is not None else None
            return
        self.holding = None
        reason, why, since = alarm
        if since is not None:
            late = [name for name, started in self.started if started >= since]
            if late:
                why += ('; sent after that: %s' % ', '.join(late))
        if reason == SOURCE_ALIVE:
            # The moves in flight land on live hosts: follow them to their end (an evacuation's later steps put
            # each instance back in its state); only new sends stop.
            self.halted = (reason, why)
            self.watch = None
            for item in self.pending:
                self.record.add(item.subject, item.decision.move, outcome='not_started', message='not started: %s'
                                % why)
            self.pending.clear()
            return
        raise self.end(reason, why)

    def _read(self, began):
        """The cycle's shared read: {id: MoveStatus}, or None when it failed (within the budget)."""
        try:
            statuses = self.backend.poll(list(self.inflight.values()))
        except VmopsError as error:
            self.failed_polls += 1
            if self.outage_since is None:
                self.outage_since = began
            failing = self.clock.monotonic() - self.outage_since
            budget = self.request.retry_budget
            if budget <= 0 or failing > budget:
                raise self.end(READS_FAILING, 'the shared progress read kept failing for %.1f s (retry_budget %s s): '
                               '%s' % (failing, budget, error.msg), error)
            return None
        self.polls += 1
        if self.outage_since is not None:
            self.outage_since = None
            now = self.clock.monotonic()
            for handle in self.inflight.values():
                if now >= handle.deadline_at:
                    handle.give_up_at = max(handle.give_up_at, now + self.request.deadline)
        return statuses

    def _follow(self, statuses):
        """What one good read says: settle the moves that ended, act on deadlines, give up on overdue moves."""
        request = self.request
        now = self.clock.monotonic()
        for handle_id, handle in list(self.inflight.items()):
            status = statuses.get(handle_id)
            if status is not None and (status.done or status.failed):
                del self.inflight[handle_id]
                replacement = self._settle(handle, status)
                if replacement is not None:
                    self.inflight[replacement.id] = replacement
            elif now >= handle.deadline_at and handle.deadline_acted is None:
                if now >= handle.data.get('next_deadline_try', 0):
                    self._act_on_deadline(handle)
                if handle.deadline_acted is None and now >= handle.give_up_at:
                    del self.inflight[handle_id]
                    self.record.add(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                                    message=self._give_up(handle, 'past its deadline, %s was refused until another '
                                                          '%s s had passed: %s' % (
                                                              request.deadline_action, request.deadline,
                                                              handle.data.get('deadline_error'))))
            elif handle.deadline_acted and now >= handle.give_up_at:
                # The abort / force-complete itself did not end the move within another deadline.
                del self.inflight[handle_id]
                self.record.add(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                                message=self._give_up(handle, '%s past its deadline did not end the move within %s s '
                                                      'more' % (handle.deadline_acted, request.deadline)))

    def _start(self, subject, move, attempts=None):
        """Start one move; returns its handle, or None when it was refused (recorded as failed).
        ServiceUnavailable propagates: the caller ends the run."""
        request, clock = self.request, self.clock
        try:
            if move == ADOPT:
                handle = self.backend.adopt(subject)
                if handle is None:
                    self.record.add(subject, ADOPT, outcome='failed', message='a move was in flight but could not '
                                    'be followed; look at the instance and rerun')
                    return None
            else:
                handle = self.backend.start_move(subject, move, request.target_for(subject), request)
        except ServiceUnavailable:
            raise
        except VmopsError as error:
            self.record.maybe_sent = self.record.maybe_sent or error.details.get('sent') == 'maybe'
            if error.details.get('sent') == 'no':   # refused before anything was sent (a host out of reach)
                self.record.add(subject, move, outcome='not_started', message=error.msg, attempts=attempts)
                return None
            self.record.add(subject, move, outcome='failed', message=error.msg, started_wall=clock.wall(),
                            attempts=attempts)
            return None
        handle.started = clock.monotonic()
        handle.started_wall = clock.wall()
        self.started.append((subject.name, handle.started_wall))
        handle.deadline_at = handle.started + request.deadline
        handle.give_up_at = handle.deadline_at + request.deadline
        handle.attempts = list(attempts or [])
        return handle

    def _maybe_sent(self, subject, move, error, attempts=None):
        """A start that may have reached the backend before the API went away: it may be moving."""
        self.record.maybe_sent = True
        self.record.add(subject, move, outcome='failed', started_wall=self.clock.wall(), attempts=attempts,
                        message='the API stopped answering while the move was sent; it may have started (a rerun '
                                'finds it moved, adopts it, or moves it): %s' % error.msg)

    def _give_up(self, handle, message):
        """The run stops following a move still in flight: let the backend undo what start_move did (e.g.
        release a lock it took); returns the message to report, with what was undone.  Once an undo met an
        API that does not answer, the others are not tried (each would wait out the request layer's retries)."""
        if self.undo_unreachable:
            return '%s (not undone: the API did not answer)' % message
        try:
            return self.backend.abandon(handle, message) or message
        except (ServiceUnavailable, ConnectionFailed) as error:
            self.undo_unreachable = True
            return '%s (undo failed: %s)' % (message, error.msg)
        except VmopsError as error:
            return '%s (undo failed: %s)' % (message, error.msg)

    def _act_on_deadline(self, handle):
        action = self.request.deadline_action
        if handle.move != LIVE:
            handle.deadline_acted = 'waited'   # cold moves and evacuations cannot be aborted: wait one more deadline
            return
        try:
            if action == 'force_complete':
                self.backend.force_complete(handle)
            else:
                self.backend.abort(handle)
            handle.deadline_acted = action
        except VmopsError as error:
            # Often the move is not far enough yet (still queued or being checked) or has just ended: the
            # next polls tell.  Try again every few seconds, for at most another deadline.
            handle.data['deadline_error'] = error.msg
            handle.data['next_deadline_try'] = self.clock.monotonic() + DEADLINE_RETRY_SECONDS

    def _settle(self, handle, status):
        """A move ended (done or failed): finish it, or fall back to a cold move; returns a new handle or None.
        Every way out either records the instance or returns a handle to keep in flight."""
        request = self.request
        if status.failed and handle.move == ADOPT and request.mode == 'evacuate' and status.host == handle.subject.host:
            return self._evacuate_after_adopt(handle, status)
        fallback = (status.failed and handle.move == LIVE and handle.deadline_acted == 'abort' and request.cold_fallback
                    and status.host == handle.subject.host)
        no_fallback = self._no_cold_fallback(handle, status) if fallback else None
        if fallback and no_fallback is None:
            return self._fall_back_cold(handle, status)
        try:
            final = self.backend.finish(handle, status)
        except VmopsError as error:
            self.record.add(handle.subject, handle.move, outcome='failed', handle=handle, status=status,
                            message='the move ended but settling it failed: %s' % error.msg)
            return None
        final = final or status
        if not (status.failed or final.failed or final.done):
            return handle   # more steps: stays in flight, finish() is called again on the next done
        if status.failed or final.failed:
            message = (final.message or status.message or 'the move failed')
            if handle.deadline_acted == 'abort':
                message = 'aborted after the %s s deadline; %s' % (request.deadline, message)
            if no_fallback:
                message += '; no cold fallback: %s' % no_fallback
            self.record.add(handle.subject, handle.move, outcome='failed', handle=handle, status=final,
                            message=message)
        else:
            message = final.message or handle.data.get('fallback_note')
            if handle.data.get('adopt_note'):
                message = '; '.join(part for part in (handle.data['adopt_note'], message) if part)
            self.record.add(handle.subject, handle.move, outcome='moved', handle=handle, status=final,
                            message=message)
        return None

    def _evacuate_after_adopt(self, handle, status):
        """An evacuation found a move in flight on the dead host (a drain's migration, stuck on it) and that move
        ended without moving the instance (Nova put it in ERROR): evacuate it now, as it is."""
        subject = handle.subject._replace(state=status.state or handle.subject.state, task=None)
        replacement = self._start_instead(
            handle, status, subject, EVACUATE, ADOPT,
            'a move found in flight ended without moving it (%s); the evacuation could not be sent' % status.message,
            'evacuating')
        if replacement is not None:
            replacement.data['adopt_note'] = ('a move found in flight on %s ended without moving it (%s); evacuated '
                                              'then' % (subject.host, status.message))
        return replacement

    def _no_cold_fallback(self, handle, status):
        try:
            return self.backend.can_cold_fallback(handle, status)
        except VmopsError as error:
            return 'could not tell whether it may move cold: %s' % error.msg

    def _fall_back_cold(self, handle, status):
        """The live move was aborted at its deadline and the instance is back on the source: move it cold."""
        subject = handle.subject._replace(state=status.state or handle.subject.state)
        replacement = self._start_instead(
            handle, status, subject, COLD, LIVE,
            'live move aborted after the %s s deadline; the cold move could not be sent' % self.request.deadline,
            'starting the cold move of')
        if replacement is not None:
            replacement.data.setdefault('first_started', handle.started)
            replacement.data.setdefault('first_started_wall', handle.started_wall)
            replacement.data['fallback_note'] = ('live move aborted after the %s s deadline; moved cold instead'
                                                 % self.request.deadline)
        return replacement

    def _start_instead(self, handle, status, subject, move, tried, unsent, doing):
        """A move ended without moving the instance: settle it, then start `move` for `subject` in its place (the
        record's attempts gain `tried`).  An API that stays down ends the run, with the instance recorded."""
        try:
            self.backend.finish(handle, status)    # undo what the first attempt did (unlock, re-suspend ...)
        except VmopsError:
            pass
        attempts = handle.attempts + [tried]
        try:
            return self._start(subject, move, attempts=attempts)
        except ServiceUnavailable as error:
            if error.sent == 'maybe':
                self._maybe_sent(subject, move, error, attempts=attempts)
            else:
                self.record.add(subject, move, outcome='failed', started_wall=self.clock.wall(), attempts=attempts,
                                message='%s: %s' % (unsent, error.msg))
            raise self.end(API_UNAVAILABLE, 'the API was unavailable when %s %s: %s' % (doing, subject.name, error.msg),
                           error)

    def end(self, reason, why, error=None):
        """End the run early: record every move still in flight `in_flight` and every move not sent
        `not_started`; returns the RunEnded to raise."""
        for handle in list(self.inflight.values()):
            message = self._give_up(handle, 'still in flight when %s (it goes on in the backend; a rerun adopts it)'
                                    % why)
            self.record.add(handle.subject, handle.move, outcome='in_flight', handle=handle, message=message)
        self.inflight.clear()
        for item in self.pending:
            self.record.add(item.subject, item.decision.move, outcome='not_started', message='not started: %s' % why)
        self.pending.clear()
        details = {'reason': reason}
        if error is not None:
            details['error'] = dict(error.details, type=type(error).__name__, msg=error.msg)
        return RunEnded(why, **details)
