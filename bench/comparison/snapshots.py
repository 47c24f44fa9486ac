"""Reading train.py's run folders: sessions (segments), their ticks, and the snapshots kept per tick."""
import contextlib
import json
import os

from bench.comparison.common import SEGMENT_RE


class Tick:
    __slots__ = ('tick', 'kimg', 'seconds', 'timestamp')

    def __init__(self, tick, kimg, seconds, timestamp):
        self.tick, self.kimg, self.seconds, self.timestamp = tick, kimg, seconds, timestamp


def _stat(entry, key):
    value = entry.get(key)
    if isinstance(value, dict):
        value = value.get('mean')
    return None if value is None else float(value)


class Segment:
    """One train.py session folder (`<id>-<desc>`) of a run, read incrementally."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.id = int(SEGMENT_RE.match(self.name).group(1))
        self.ticks = []
        self.snapshot_ticks = {}   # tick -> kept snapshot path
        self.lost_ticks = []       # snapshot ticks whose file was overwritten before it could be kept
        self._offset = 0
        self._partial = b''

    def read(self):
        """New complete stats.jsonl lines as Ticks (a half-written last line waits for the next call)."""
        try:
            with open(os.path.join(self.path, 'stats.jsonl'), 'rb') as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b'\n')
        self._partial = lines.pop()
        new = []
        for line in lines:
            try:
                entry = json.loads(line)
                tick = Tick(int(round(_stat(entry, 'Progress/tick'))), _stat(entry, 'Progress/kimg'),
                            _stat(entry, 'Timing/total_sec'), float(entry['timestamp']))
            except (ValueError, TypeError, KeyError):
                continue
            new.append(tick)
        self.ticks.extend(new)
        return new


def list_segments(train_dir):
    if not os.path.isdir(train_dir):
        return []
    names = [n for n in os.listdir(train_dir) if SEGMENT_RE.match(n) and os.path.isdir(os.path.join(train_dir, n))]
    return [Segment(os.path.join(train_dir, n)) for n in sorted(names, key=lambda n: int(SEGMENT_RE.match(n).group(1)))]


def _snapshot_file_for(seg, tick, lower):
    """The network-snapshot-*.pkl train.py wrote at `tick`, if it is still there: the file whose
    mtime lies after the previous stats line and not after this tick's line, and whose name
    fits the tick's image count (stats hold kimg as float32: a few images of slack). Old names
    (whole kimg) and new ones (`_with<NNN>img` within a kimg) alike. Returns (path, stat)."""
    from training import checkpoint   # the harness's one reader of snapshot names
    nimg = int(round(tick.kimg * 1000))
    slack = 2 + nimg * 1e-7
    for path in reversed(checkpoint.list_snapshots(seg.path)):
        kimg, extra = checkpoint.snapshot_order(path)
        if extra < 0 and not -1 <= nimg // 1000 - kimg <= 1:
            continue
        if extra >= 0 and abs(kimg * 1000 + extra - nimg) > slack:
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        mtime = st.st_mtime_ns / 1e9
        if lower < mtime <= tick.timestamp + 0.002:
            return path, st
    return None, None


def keep_snapshot(src, st, dst):
    """Hard-link (or copy) `src` to `dst`; True when `dst` holds the very file `st` describes."""
    tmp = dst + '.tmp'
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)
        ok = os.stat(tmp).st_ino == st.st_ino
    except FileNotFoundError:
        return False
    except OSError:   # no hard links on this file system
        import shutil
        try:
            shutil.copy2(src, tmp)
        except FileNotFoundError:
            return False
        ok = os.stat(src).st_mtime_ns == st.st_mtime_ns and os.stat(tmp).st_size == st.st_size
    if not ok:
        os.remove(tmp)
        return False
    os.replace(tmp, dst)
    return True


def collect(seg, snap_dir, snap_ticks):
    """Read new ticks of `seg` and keep their snapshots in `snap_dir`. Returns the new ticks that
    have a kept snapshot. `snap_ticks` (train.py's --snap) tells which ticks should have one."""
    found = []
    previous = seg.ticks[-1].timestamp if seg.ticks else 0.0
    for tick in seg.read():
        dst = os.path.join(snap_dir, 'snapshot-seg{:05d}-tick{:06d}.pkl'.format(seg.id, tick.tick))
        if os.path.isfile(dst):
            seg.snapshot_ticks[tick.tick] = dst
            found.append(tick)
        else:
            src, st = _snapshot_file_for(seg, tick, previous)
            if src is not None and keep_snapshot(src, st, dst):
                seg.snapshot_ticks[tick.tick] = dst
                found.append(tick)
            elif snap_ticks and tick.tick % snap_ticks == 0:
                seg.lost_ticks.append(tick.tick)
        previous = tick.timestamp
    return found


def history(segments):
    """The run's snapshots in tick order, over all sessions: a later session (resumed from a
    checkpoint) supersedes what earlier ones recorded from its first tick on.
    Returns a list of dicts (name, segment, tick, kimg, seconds)."""
    entries = {}
    for seg in segments:
        if not seg.ticks:
            continue
        first = seg.ticks[0].tick
        for tick in [t for t in entries if t >= first]:
            del entries[tick]
        for tick in seg.ticks:
            entries[tick.tick] = (seg, tick)
    snaps = []
    for number in sorted(entries):
        seg, tick = entries[number]
        path = seg.snapshot_ticks.get(number)
        if path is not None:
            snaps.append(dict(name=os.path.basename(path), segment=seg.name, tick=tick.tick,
                              kimg=round(tick.kimg, 6), seconds=round(tick.seconds, 3)))
    return snaps


def budget_reached(snap, kimg, minutes):
    if kimg is not None and snap['kimg'] * 1000 >= kimg * 1000 - 0.5 - 1e-7 * kimg * 1000:
        return True
    return minutes is not None and snap['seconds'] >= minutes * 60


def final_index(snaps, kimg, minutes):
    for i, snap in enumerate(snaps):
        if budget_reached(snap, kimg, minutes):
            return i
    return None


def latest_checkpoint(segments):
    """The newest exact-resume checkpoint of a run: in the newest session that has one, the newest snapshot's."""
    from training import checkpoint
    for seg in reversed(segments):
        found = checkpoint.list_snapshots(seg.path, checkpoint.CKPT_SUFFIX)
        if found:
            return found[-1]
    return None
