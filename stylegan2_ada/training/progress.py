"""How long a training run will take, said early and kept up to date.

A tick can last half an hour on a CPU, so waiting for status lines leaves a new
user blind. `Progress` adds three things to the console of rank 0:
- one start-up estimate for the requested kimg, measured over a short warm-up
  (the first minibatch of a session is left out: it pays for set-up, kernel
  selection and the first tick's grids and snapshot);
- an `eta` column for every status line;
- a progress line (kimg so far, sec/kimg, eta) whenever `every_sec` seconds
  pass without any other line, between tick boundaries.

It only reads the clock and prints. Tick boundaries, statistics, snapshots and
random streams never depend on it, so a run's numbers and its stats.jsonl are
the same whatever the clock says; `every_sec` is a parameter so that tests can
make the time-driven lines appear on every minibatch.
"""

import time

import dnnlib

WARMUP_MINIBATCHES = 4  # Timed minibatches behind the start-up estimate (or every_sec, if that comes first).


class Progress:
    """Clock bookkeeping of one training session. `say` prints (rank 0 only)."""

    def __init__(self, total_kimg, every_sec, say, clock=time.time):
        if not every_sec >= 0:
            raise ValueError('progress_sec must be >= 0 seconds, got {!r}'.format(every_sec))
        self.total_nimg = total_kimg * 1000
        self.every_sec = every_sec
        self.say = say
        self.clock = clock
        self.origin = None           # (time, nimg) once the session's first minibatch is behind it.
        self.timed_minibatches = 0
        self.estimated = False
        self.last_line = clock()

    def sec_per_img(self, nimg, now):
        """This session's pace since its first minibatch (maintenance included), or None before
        any image was timed."""
        if self.origin is None or nimg <= self.origin[1]:
            return None
        return (now - self.origin[0]) / (nimg - self.origin[1])

    def eta_text(self, nimg, fallback_sec_per_img):
        """The eta column of a status line. Before the warm-up has timed anything, the
        caller's pace (that of the tick just ended) stands in."""
        now = self.clock()
        self.last_line = now
        pace = self.sec_per_img(nimg, now)
        pace = fallback_sec_per_img if pace is None else pace
        return dnnlib.util.format_time(max(self.total_nimg - nimg, 0) * pace)

    def after_minibatch(self, nimg, next_tick_nimg=None):
        """Called once per minibatch, after its tick's maintenance if it ended one
        (`next_tick_nimg`: None at a tick boundary, else where the current tick ends)."""
        now = self.clock()
        if self.origin is None:
            self.origin = (now, nimg)
            return
        self.timed_minibatches += 1
        if not self.estimated and (self.timed_minibatches >= WARMUP_MINIBATCHES
                                   or now - self.origin[0] >= self.every_sec):
            self.estimated = True
            self._say(now, self._estimate_line(nimg, now))
        elif next_tick_nimg is not None and now - self.last_line >= self.every_sec:
            self._say(now, self._progress_line(nimg, now, next_tick_nimg))

    def _say(self, now, line):
        self.last_line = now
        self.say(line)

    def _estimate_line(self, nimg, now):
        pace = self.sec_per_img(nimg, now)
        left = max(self.total_nimg - nimg, 0)
        return ('Estimated time to reach kimg {:g}: {} ({:g} kimg to go at {:.2f} sec/kimg, timed over {} '
                'minibatch(es) after the first; every status line has an eta)'.format(
                    self.total_nimg / 1000, dnnlib.util.format_time(left * pace), left / 1000, pace * 1000,
                    self.timed_minibatches))

    def _progress_line(self, nimg, now, next_tick_nimg):
        pace = self.sec_per_img(nimg, now)
        left = max(self.total_nimg - nimg, 0)
        share = 100 * nimg / self.total_nimg if self.total_nimg > 0 else 100
        return 'progress kimg {:.3f} of {:g} ({:.1f}%) sec/kimg {:.2f} eta {} (this tick ends at kimg {:g})'.format(
            nimg / 1000, self.total_nimg / 1000, share, pace * 1000, dnnlib.util.format_time(left * pace),
            next_tick_nimg / 1000)
