#!/usr/bin/env python3
"""Conformance client for the gamewire wire protocol, version 1.

Written from docs/protocol.md alone (no server sources).  It connects a
handful of players to a running server, plays every rule of the protocol and
checks each answer against the document.  One line per check (PASS/FAIL);
the exit status is 1 if any check failed.

Assumptions (all are the documented defaults unless the server was started
otherwise; override with the options below):
  * the server is fresh and nobody else is connected (the script keeps an
    exact model of the world and predicts every frame every client receives);
  * the spawn point is fixed (--spawn X,Z) and at least 4 * aoi_radius away
    from every world edge, and max_speed is large (e.g. 1000) so that the
    script can walk players around quickly;
  * default rate limits, attack_range 10, damage 10, max_payload 1024,
    HELLO/partial-frame deadline 5 s, idle deadline 30 s.

Example:
  ./target/debug/gamewire serve --addr 127.0.0.1:7801 --spawn 500,500 \
      --aoi-radius 50 --max-speed 1000 &
  python3 examples/protocol_client.py --addr 127.0.0.1:7801
"""

import argparse
import math
import select
import socket
import struct
import sys
import threading
import time

# --------------------------------------------------------------------------
# Protocol constants (docs/protocol.md sections 2-4)

HELLO, WELCOME, MOVE, ATTACK, CHAT, ENTER, LEAVE, PING, PONG, ERROR, HIT = range(1, 12)
PNAME = {1: 'HELLO', 2: 'WELCOME', 3: 'MOVE', 4: 'ATTACK', 5: 'CHAT', 6: 'ENTER',
         7: 'LEAVE', 8: 'PING', 9: 'PONG', 10: 'ERROR', 11: 'HIT'}
(MALFORMED, TOO_LARGE, UNKNOWN_PACKET, SPOOFED_ID, BAD_STATE, RATE_LIMITED,
 INVALID_TARGET, SERVER_FULL, SLOW_CONSUMER, TIMEOUT, SHUTTING_DOWN) = range(1, 12)
ENAME = {1: 'MALFORMED', 2: 'TOO_LARGE', 3: 'UNKNOWN_PACKET', 4: 'SPOOFED_ID',
         5: 'BAD_STATE', 6: 'RATE_LIMITED', 7: 'INVALID_TARGET', 8: 'SERVER_FULL',
         9: 'SLOW_CONSUMER', 10: 'TIMEOUT', 11: 'SHUTTING_DOWN'}
NONFATAL = {RATE_LIMITED, INVALID_TARGET}
# payload size ranges of server -> client packets
SIZES = {WELCOME: (40, 40), MOVE: (20, 20), CHAT: (1, 256), ENTER: (16, 48),
         LEAVE: (0, 0), PONG: (0, 64), ERROR: (4, 204), HIT: (12, 12)}
# rate limits: packet -> (tokens per second, burst)
LIMITS = {MOVE: (60.0, 60.0), CHAT: (5.0, 10.0), ATTACK: (4.0, 4.0), PING: (10.0, 10.0)}
BAD_STATE_EXAMPLE_MSG = b'HELLO must come first, and only once'


def f32(v):
    """Round a Python float to binary32 (keeps inf / nan)."""
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return v
    return struct.unpack('<f', struct.pack('<f', v))[0]


def frame(pid, player=0, payload=b'', length=None):
    n = len(payload) if length is None else length
    return struct.pack('<III', pid, player & 0xffffffff, n) + payload


def move_payload(x, y, z, v=0.0, ct=0):
    return struct.pack('<ffffI', x, y, z, v, ct & 0xffffffff)


def fmt(v):
    return ('%g' % v) if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------
# Global state and reporting


class G:
    addr = None
    args = None
    lock = threading.RLock()
    clients = []
    passes = 0
    fails = 0
    fmt_fails = 0
    frames_seen = 0
    threads = []
    all_ids = []
    # world parameters (from the first WELCOME)
    params = None
    w = h = aoi = max_speed = None
    max_hp = None
    spawn = None          # (x, z) of the first WELCOME
    fixed_spawn = None    # set when two WELCOMEs agree
    damage = None
    ar = None
    ct_counter = 1


def check(ok, what, detail=''):
    with G.lock:
        if ok:
            G.passes += 1
            print('PASS ' + what, flush=True)
        else:
            G.fails += 1
            print('FAIL ' + what + ((' -- ' + detail) if detail else ''), flush=True)
    return ok


def info(what):
    with G.lock:
        print('INFO ' + what, flush=True)


def fmt_fail(client, f, msg):
    """A frame broke a per-frame rule (format, visibility window, ...)."""
    with G.lock:
        G.fails += 1
        G.fmt_fails += 1
        d = f.describe() if f is not None else ''
        print('FAIL per-frame rule: %s received %s: %s' % (client.label, d, msg), flush=True)


# --------------------------------------------------------------------------
# Frames and clients


class Frame:
    __slots__ = ('pid', 'player', 'payload', 'seq', 't')

    def __init__(self, pid, player, payload, seq, t):
        self.pid, self.player, self.payload, self.seq, self.t = pid, player, payload, seq, t

    def describe(self):
        p = self.payload
        name = PNAME.get(self.pid, 'packet%d' % self.pid)
        head = '%s[%d]' % (name, self.player)
        try:
            if self.pid == MOVE:
                x, y, z, v, ct = struct.unpack('<ffffI', p)
                return '%s (%s,%s,%s) v=%s ct=%d' % (head, fmt(x), fmt(y), fmt(z), fmt(v), ct)
            if self.pid == ENTER:
                x, y, z, hp = struct.unpack_from('<fffI', p)
                return '%s (%s,%s,%s) hp=%d name=%r' % (head, fmt(x), fmt(y), fmt(z), hp, p[16:])
            if self.pid == ERROR:
                code = struct.unpack_from('<I', p)[0]
                return '%s %s %r' % (head, ENAME.get(code, 'code%d' % code), p[4:])
            if self.pid == HIT:
                return '%s target=%d damage=%d hp=%d' % ((head,) + struct.unpack('<III', p))
            if self.pid == WELCOME:
                return '%s %r' % (head, struct.unpack('<QfffIffff', p))
        except struct.error:
            pass
        s = repr(p[:40]) + ('...(%d bytes)' % len(p) if len(p) > 40 else '')
        return '%s %s' % (head, s)


class Client:
    def __init__(self, label, name=b''):
        self.label = label
        self.name = name
        self.sock = socket.create_connection(G.addr, timeout=3)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(3)
        self.t_connect = time.time()
        self.buf = bytearray()
        self.frames = []
        self.inbox = []
        self.seen = set()
        self.id = None
        self.welcome = None
        self.fatal = None
        self.eof = False
        self.eof_t = None
        self.reset = False
        self.detached = False
        self.closed = False
        self.in_world = False
        self.x = self.y = self.z = None
        self.hp = None
        self.sent_t = None    # lower bound of the server's "last accepted" time
        self.accept_t = None  # upper bound of it
        self.buckets = {}
        G.clients.append(self)

    # -- io
    def send(self, data):
        self.last_send_t = time.time()
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            info('%s: send failed: %s' % (self.label, e))
            return False

    def close(self):
        if not self.closed:
            self.closed = True
            self.in_world = False
            try:
                self.sock.close()
            except OSError:
                pass

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 12:
            pid, player, n = struct.unpack_from('<III', self.buf, 0)
            if n > 256:
                fmt_fail(self, None, 'header announces a %d-byte payload (server never sends > 256)' % n)
                if n > 65536:
                    self.buf.clear()
                    return
            if len(self.buf) < 12 + n:
                break
            payload = bytes(self.buf[12:12 + n])
            del self.buf[:12 + n]
            self.on_frame(Frame(pid, player, payload, len(self.frames), time.time()))

    def on_eof(self):
        if not self.eof:
            self.eof = True
            self.eof_t = time.time()
            if self.buf:
                fmt_fail(self, None, 'EOF in the middle of a frame (%d bytes buffered)' % len(self.buf))

    # -- the per-frame rules: format and visibility window (section 5.7)
    def on_frame(self, f):
        G.frames_seen += 1
        bad = lambda msg: fmt_fail(self, f, msg)
        if self.fatal is not None:
            bad('frame after the fatal ERROR (the ERROR must be the last frame)')
        if f.pid not in SIZES:
            bad('packet id %d is not a server -> client packet' % f.pid)
        else:
            lo, hi = SIZES[f.pid]
            if not lo <= len(f.payload) <= hi:
                bad('payload %d bytes, document says %d..=%d' % (len(f.payload), lo, hi))
        if f.pid == ENTER and len(f.payload) >= 16:
            try:
                f.payload[16:].decode('utf-8')
            except UnicodeDecodeError:
                bad('ENTER name is not UTF-8')
            if struct.unpack_from('<I', f.payload, 12)[0] == 0:
                bad('ENTER with hp 0 (section 8.30: never)')
        if f.pid == ERROR and len(f.payload) >= 4:
            try:
                f.payload[4:].decode('utf-8')
            except UnicodeDecodeError:
                bad('ERROR message is not UTF-8')
        if f.pid == CHAT:
            try:
                f.payload.decode('utf-8')
            except UnicodeDecodeError:
                bad('CHAT text is not UTF-8')
        if self.id is None:
            if not self.frames and f.pid == WELCOME:
                if f.player == 0:
                    bad('WELCOME with player_id 0')
                self.id = f.player
                self.welcome = f
            elif f.pid == ERROR:
                if f.player != 0:
                    bad('ERROR before WELCOME must carry player_id 0')
            else:
                bad('first frame must be WELCOME (or a fatal ERROR)')
        else:
            if f.pid == WELCOME:
                bad('second WELCOME')
            elif f.pid == ENTER:
                if f.player == self.id:
                    bad('ENTER about the recipient itself')
                elif f.player in self.seen:
                    bad('ENTER about a player already in view')
                self.seen.add(f.player)
            elif f.pid == LEAVE:
                if f.player not in self.seen:
                    bad('LEAVE about a player not in view')
                self.seen.discard(f.player)
            elif f.pid in (MOVE, CHAT, HIT):
                if f.player != self.id and f.player not in self.seen:
                    bad('%s about player %d outside its ENTER..LEAVE window' % (PNAME[f.pid], f.player))
                if f.pid == CHAT and f.player == self.id:
                    bad('the speaker received its own CHAT')
            elif f.pid in (PONG, ERROR):
                if f.player != self.id:
                    bad('%s header must be the recipient (%d)' % (PNAME[f.pid], self.id))
        if f.pid == ERROR and len(f.payload) >= 4:
            code = struct.unpack_from('<I', f.payload)[0]
            if code not in NONFATAL:
                self.fatal = f
        self.frames.append(f)
        self.inbox.append(f)

    # -- local (conservative) copy of the server's token buckets
    def init_buckets(self):
        now = time.time()
        self.buckets = {k: [b, r, b, now] for k, (r, b) in LIMITS.items()}

    def tokens(self, kind):
        b = self.buckets[kind]
        now = time.time()
        b[0] = min(b[2], b[0] + (now - b[3]) * b[1])
        b[3] = now
        return b[0]

    def pace(self, kind, n=1):
        while self.tokens(kind) < n + 0.2:
            time.sleep(0.02)
        self.buckets[kind][0] -= n

    def wait_full(self, kind):
        while self.tokens(kind) < self.buckets[kind][2] - 0.05:
            time.sleep(0.02)

    def drain(self, kind):
        self.tokens(kind)
        self.buckets[kind][0] = 0.0

    def __repr__(self):
        return self.label


def pump(timeout):
    socks = {}
    for c in G.clients:
        if not c.eof and not c.detached and not c.closed:
            socks[c.sock] = c
    if not socks:
        time.sleep(max(0.0, timeout))
        return
    try:
        r, _, _ = select.select(list(socks), [], [], max(0.0, timeout))
    except (OSError, ValueError):
        return
    for s in r:
        c = socks[s]
        try:
            data = s.recv(65536)
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            data = None
        with G.lock:
            if data is None:
                c.reset = True
                c.on_eof()
            elif not data:
                c.on_eof()
            else:
                c.feed(data)


# --------------------------------------------------------------------------
# The world model


def world():
    return [c for c in G.clients if c.in_world]


def d2(ax, az, bx, bz):
    dx = ax - bx
    dz = az - bz
    return dx * dx + dz * dz


def sees(a, b):
    return d2(a.x, a.z, b.x, b.z) <= G.aoi * G.aoi


def viewers(c):
    return [p for p in world() if p is not c and sees(p, c)]


def by_id(pid):
    for c in world():
        if c.id == pid:
            return c
    return None


class Exp:
    """An expected frame: recipient, packet id, header player_id, payload test."""

    def __init__(self, client, pid, player, payload=None, check=None, desc=''):
        self.client, self.pid, self.player = client, pid, player
        self.payload, self.chk, self.desc = payload, check, desc

    def match(self, f):
        if f.pid != self.pid or f.player != self.player:
            return False
        if self.payload is not None and f.payload != self.payload:
            return False
        if self.chk is not None:
            try:
                return bool(self.chk(f.payload))
            except Exception:
                return False
        return True

    def describe(self):
        return '%s <- %s[%s] %s' % (self.client.label, PNAME.get(self.pid, self.pid),
                                     self.player, self.desc)


def exp_enter(to, about, hp=None):
    x, y, z = about.x, about.y, about.z
    hp = about.hp if hp is None else hp

    def chk(p):
        ex, ey, ez, ehp = struct.unpack_from('<fffI', p)
        return ex == x and ey == y and ez == z and ehp == hp and p[16:] == about.name
    return Exp(to, ENTER, about.id, check=chk,
               desc='about %s at (%s,%s,%s) hp %d name %r' % (about.label, fmt(x), fmt(y), fmt(z), hp, about.name))


def exp_error(c, code, header=None):
    header = (c.id or 0) if header is None else header
    return Exp(c, ERROR, header, check=lambda p: struct.unpack_from('<I', p)[0] == code, desc=ENAME[code])


def exp_correction(c, ct, pos=None):
    x, y, z = pos if pos else (c.x, c.y, c.z)

    def chk(p):
        px, py, pz, pv, pct = struct.unpack('<ffffI', p)
        return px == x and py == y and pz == z and pv == 0.0 and pct == ct
    return Exp(c, MOVE, c.id, check=chk,
               desc='correction to (%s,%s,%s) v=0 ct=%d' % (fmt(x), fmt(y), fmt(z), ct))


def consistency_problems():
    out = []
    for c in world():
        if c.detached or c.eof or c.closed:
            continue
        want = {p.id for p in world() if p is not c and sees(p, c)}
        if want != c.seen:
            out.append('%s has in view %s, the document says %s' % (c.label, sorted(c.seen), sorted(want)))
    return out


def step(title, exps, timeout=2.0, quiet=None, consume_rest=True, check_extra=True,
         consistency=True, report=True):
    """Wait until every expected frame arrived, then a quiet period; any other
    frame received by any client meanwhile is a failure."""
    if quiet is None:
        quiet = G.args.quiet
    start = time.time()
    pending = list(exps)
    got = {}
    used = set()

    def try_match():
        for e in list(pending):
            for f in e.client.inbox:
                if id(f) in used:
                    continue
                if e.match(f):
                    got[e] = f
                    used.add(id(f))
                    pending.remove(e)
                    break
    try_match()
    while pending and time.time() < start + timeout:
        pump(0.02)
        try_match()
    end = time.time() + quiet
    while time.time() < end:
        pump(end - time.time())
        try_match()
    extras = []
    for c in G.clients:
        if c.detached:
            continue
        rest = [f for f in c.inbox if id(f) not in used]
        if consume_rest:
            extras += [(c, f) for f in rest]
            c.inbox = []
        else:
            c.inbox = rest
    problems = ['missing: ' + e.describe() for e in pending]
    if check_extra:
        problems += ['unexpected: %s <- %s' % (c.label, f.describe()) for c, f in extras]
    if consistency:
        problems += consistency_problems()
    ok = not problems
    if report:
        check(ok, title, '; '.join(problems[:8]) + (' ...' if len(problems) > 8 else ''))
    return ok, got, problems


# --------------------------------------------------------------------------
# Actions


def check_welcome(c, f):
    probs = []
    token, x, y, z, hp, ww, wh, aoi, ms = struct.unpack('<QfffIffff', f.payload)
    if f.player == 0:
        probs.append('player_id 0')
    if f.seq != 0:
        probs.append('WELCOME is not the first frame')
    if y != 0.0:
        probs.append('spawn y %s != 0' % fmt(y))
    if not all(math.isfinite(v) and v > 0 for v in (ww, wh, aoi, ms)):
        probs.append('world/aoi/max_speed not positive finite')
    elif not (0 <= x < ww and 0 <= z < wh):
        probs.append('spawn (%s,%s) outside the world' % (fmt(x), fmt(z)))
    if hp == 0:
        probs.append('hp 0')
    if f.player in G.all_ids:
        probs.append('id %d was already used on this server' % f.player)
    G.all_ids.append(f.player)
    if G.params is None:
        G.params = (hp, ww, wh, aoi, ms)
        G.max_hp, G.w, G.h, G.aoi, G.max_speed = hp, ww, wh, aoi, ms
        G.spawn = (x, z)
    else:
        if (hp, ww, wh, aoi, ms) != G.params:
            probs.append('parameters %r differ from the first WELCOME %r' % ((hp, ww, wh, aoi, ms), G.params))
        if G.fixed_spawn is None and (x, z) == G.spawn:
            G.fixed_spawn = (x, z)
    ok = check(not probs, '%s: WELCOME (id %d, token %#x, spawn (%s,%s,%s), hp %d, world %sx%s, aoi %s, max_speed %s)'
               % (c.label, f.player, token, fmt(x), fmt(y), fmt(z), hp, fmt(ww), fmt(wh), fmt(aoi), fmt(ms)),
               '; '.join(probs))
    return ok, (token, x, y, z, hp)


def join(label, name, mode='normal', title_extra=''):
    c = Client(label, name)
    hello = frame(HELLO, 0, name)
    if mode == 'bytewise':
        for i in range(len(hello)):
            c.send(hello[i:i + 1])
            time.sleep(0.02)
    elif mode == 'split':
        c.send(hello[:7])
        time.sleep(0.3)
        c.send(hello[7:])
    elif mode == 'with_ping':
        c.send(hello + frame(PING, 0, b'early ping') + frame(CHAT, 0, b'early chat'))
    else:
        c.send(hello)
    c.sent_t = time.time()
    end = time.time() + 3
    while c.id is None and not c.eof and time.time() < end:
        pump(0.02)
    if c.id is None:
        check(False, '%s: WELCOME after HELLO (%s)' % (label, mode),
              'got %s, eof=%s' % ([f.describe() for f in c.frames], c.eof))
        c.close()
        return None
    c.label = '%s#%d' % (label, c.id)
    ok, (token, x, y, z, hp) = check_welcome(c, c.welcome)
    c.inbox.remove(c.welcome)
    c.x, c.y, c.z, c.hp = x, y, z, hp
    c.accept_t = time.time()
    c.init_buckets()
    exps = []
    for p in world():
        if sees(p, c):
            exps.append(exp_enter(c, p))
            exps.append(exp_enter(p, c))
    if mode == 'with_ping':
        c.pace(PING)
        c.pace(CHAT)
        exps.append(Exp(c, PONG, c.id, payload=b'early ping', desc='PONG to the PING sent behind HELLO'))
        for p in world():
            if sees(p, c):
                exps.append(Exp(p, CHAT, c.id, payload=b'early chat', desc='CHAT sent behind HELLO'))
    c.in_world = True
    n = len([e for e in exps if e.client is c and e.pid == ENTER])
    ok, got, probs = step('%s joins (%s HELLO%s): ENTER both ways with the %d player(s) in view'
                          % (c.label, mode, title_extra, n), exps)
    if mode == 'with_ping':
        enters = [got[e].seq for e in got if e.client is c and e.pid == ENTER]
        pong = [got[e].seq for e in got if e.client is c and e.pid == PONG]
        check(bool(pong) and all(s < pong[0] for s in enters),
              '%s: frames sent right behind HELLO with player_id 0 are handled after the join (PONG after WELCOME and the ENTERs, section 8.18)' % c.label,
              'frame order %s' % [f.describe() for f in c.frames])
    return c


def next_ct():
    G.ct_counter += 1
    return G.ct_counter


def predict_accept(c, x, y, z, v):
    if not all(math.isfinite(a) for a in (x, y, z, v)):
        return False
    if not (0 <= x < G.w and 0 <= z < G.h and abs(y) <= 10000):
        return False
    if not (0 <= v <= G.max_speed):
        return False
    dist = math.sqrt(d2(x, z, c.x, c.z))
    now = time.time()
    t_lo = max(0.0, now - c.accept_t - 0.05)
    if dist <= 0.95 * G.max_speed * (0.1 + t_lo):
        return True
    t_hi = now - c.sent_t + 0.3
    if dist > G.max_speed * (0.1 + t_hi):
        return False
    return None  # too close to call


def move(c, x, y, z, v=0.0, ct=None, header=None, title=None, accept=None, report=True, send=True, extra=None):
    x, y, z, v = f32(x), f32(y), f32(z), f32(v)
    ct = next_ct() if ct is None else ct
    payload = move_payload(x, y, z, v, ct)
    if accept is None:
        accept = predict_accept(c, x, y, z, v)
        if accept is None:
            check(False, 'internal: cannot predict the speed check for %s' % c.label)
            return False, payload
    if send:
        c.pace(MOVE)
        c.send(frame(MOVE, c.id if header is None else header, payload))
        t_send = time.time()
    exps = []
    if accept:
        old = (c.x, c.z)
        for p in world():
            if p is c:
                continue
            before = d2(old[0], old[1], p.x, p.z) <= G.aoi ** 2
            after = d2(x, z, p.x, p.z) <= G.aoi ** 2
            if before and after:
                exps.append(Exp(p, MOVE, c.id, payload=payload, desc='relay, byte-identical'))
            elif after:
                exps.append(('enter', p))  # built after the model update
            elif before:
                exps.append(Exp(p, LEAVE, c.id, desc='about %s' % c.label))
                exps.append(Exp(c, LEAVE, p.id, desc='about %s' % p.label))
        c.x, c.y, c.z = x, y, z
        if send:
            c.sent_t = t_send
        final = []
        for e in exps:
            if isinstance(e, tuple):
                final.append(exp_enter(e[1], c))
                final.append(exp_enter(c, e[1]))
            else:
                final.append(e)
        exps = final
    else:
        exps.append(exp_correction(c, ct))
    if title is None:
        title = '%s MOVE to (%s,%s,%s) v=%s %s' % (c.label, fmt(x), fmt(y), fmt(z), fmt(v),
                                                  'accepted' if accept else 'rejected -> correction')
    ok, got, probs = step(title, exps + (extra() if extra else []), report=False)
    if accept:
        c.accept_t = time.time()
        enters = [got[e].seq for e in got if e.client is c and e.pid == ENTER]
        leaves = [got[e].seq for e in got if e.client is c and e.pid == LEAVE]
        if enters and leaves and max(enters) > min(leaves):
            probs.append('mover got a LEAVE before an ENTER (section 8.16: ENTERs first)')
            ok = False
    if not ok:
        # resynchronise the model with a correction, if one came
        for f in reversed(c.frames):
            if f.pid == MOVE and f.player == c.id:
                px, py, pz, _, pct = struct.unpack('<ffffI', f.payload)
                if pct == ct and accept:
                    c.x, c.y, c.z = px, py, pz
                break
    if report:
        check(ok, title, '; '.join(probs[:8]))
    return ok, payload


def walk(c, x, z, title=None):
    """Walk c to (x, z) (y = 0) in legal steps; one check line for the walk."""
    x, z = f32(x), f32(z)
    allok = True
    probs_all = []
    n = 0
    ok = True
    while True:
        now = time.time()
        step_len = 0.9 * G.max_speed * (0.1 + max(0.0, now - c.accept_t - 0.05))
        dist = math.sqrt(d2(x, z, c.x, c.z))
        n += 1
        if dist <= step_len:
            ok, _ = move(c, x, 0.0, z, 0.0, report=False, title='walk')
            allok &= ok
            break
        if n > 1 and not ok:
            break
        k = step_len / dist
        ok, _ = move(c, c.x + (x - c.x) * k, 0.0, c.z + (z - c.z) * k, 0.0, report=False, title='walk')
        allok &= ok
        if n > 100:
            allok = False
            break
    check(allok, title or '%s walks to (%s,%s) in %d MOVE(s): every relay/ENTER/LEAVE as documented'
          % (c.label, fmt(x), fmt(z), n))
    return allok


def send_attack(c, target_id, header=None):
    c.pace(ATTACK)
    c.send(frame(ATTACK, c.id if header is None else header, struct.pack('<I', target_id)))


def attack(c, target_id, title, header=None):
    send_attack(c, target_id, header)
    t = by_id(target_id)
    valid = (t is not None and t is not c and sees(c, t) and d2(c.x, c.z, t.x, t.z) <= G.ar * G.ar)
    if not valid:
        return step(title + ' -> INVALID_TARGET (non-fatal, header = own id)', [exp_error(c, INVALID_TARGET)])
    newhp = max(0, t.hp - G.damage)

    def hitchk(p):
        tid, dmg, hp = struct.unpack('<III', p)
        return tid == target_id and dmg == G.damage and hp == newhp
    recipients = [c, t] + [p for p in world() if p is not c and p is not t and sees(p, c)]
    exps = [Exp(p, HIT, c.id, check=hitchk, desc='target %s damage %d hp %d' % (t.label, G.damage, newhp))
            for p in recipients]
    t.hp = newhp
    names = ','.join(p.label for p in recipients)
    if newhp > 0:
        return step('%s -> HIT (hp %d) to attacker, target and viewers of the attacker [%s]'
                    % (title, newhp, names), exps)
    # a kill: HIT, then the respawn
    old = (t.x, t.z)

    def corrchk(p):
        x, y, z, v, ct = struct.unpack('<ffffI', p)
        ok = v == 0.0 and ct == 0 and y == 0.0 and 0 <= x < G.w and 0 <= z < G.h
        if G.fixed_spawn:
            ok = ok and (x, z) == G.fixed_spawn
        return ok
    corr = Exp(t, MOVE, t.id, check=corrchk, desc='respawn correction: spawn point, y 0, v 0, ct 0')
    ok1, got1, pr1 = step('kill', exps + [corr], consume_rest=False, check_extra=False,
                          consistency=False, quiet=0.0, report=False)
    check(not [e for e in exps if e not in got1],
          '%s -> killing HIT (hp 0, damage %d) to attacker, target and viewers [%s]' % (title, G.damage, names),
          '; '.join(pr1))
    if corr not in got1:
        check(False, 'respawn: %s gets a correction MOVE at the spawn point with v 0 and ct 0' % t.label,
              '; '.join(pr1) + '; frames: %s' % [f.describe() for f in t.inbox])
        return False, {}, pr1
    cf = got1[corr]
    x, y, z, _, _ = struct.unpack('<ffffI', cf.payload)
    check(True, 'respawn: %s gets a correction MOVE to (%s,%s,%s) v 0 ct 0%s'
          % (t.label, fmt(x), fmt(y), fmt(z), ' (the fixed spawn point)' if G.fixed_spawn else ''))
    t.x, t.y, t.z = x, y, z
    t.hp = G.max_hp
    t.accept_t = time.time()
    t.sent_t = cf.t - 0.5
    exps2 = []
    kinds = {'move': [], 'enter': [], 'leave': []}
    for p in world():
        if p is t:
            continue
        before = d2(old[0], old[1], p.x, p.z) <= G.aoi ** 2
        after = sees(p, t)
        if before and after:
            exps2.append(Exp(p, MOVE, t.id, payload=cf.payload, desc='respawn MOVE, same payload'))
            kinds['move'].append(p.label)
        elif after:
            exps2.append(exp_enter(p, t, hp=G.max_hp))
            exps2.append(exp_enter(t, p))
            kinds['enter'].append(p.label)
        elif before:
            exps2.append(Exp(p, LEAVE, t.id, desc='about %s' % t.label))
            exps2.append(Exp(t, LEAVE, p.id, desc='about %s' % p.label))
            kinds['leave'].append(p.label)
    ok2, got2, pr2 = step('respawn of %s: MOVE to [%s] (saw it before and after), ENTER both ways with [%s], '
                          'LEAVE both ways with [%s]' % (t.label, ','.join(kinds['move']),
                                                         ','.join(kinds['enter']), ','.join(kinds['leave'])),
                          exps2)
    # ordering (sections 5.4 and 8.11)
    allgot = dict(got1)
    allgot.update(got2)
    probs = []
    hit_t = [allgot[e].seq for e in exps if e.client is t and e in allgot]
    ent = [allgot[e].seq for e in exps2 if e.client is t and e.pid == ENTER and e in allgot]
    lea = [allgot[e].seq for e in exps2 if e.client is t and e.pid == LEAVE and e in allgot]
    if hit_t and cf.seq < hit_t[0]:
        probs.append('target got its correction before the HIT')
    if ent and min(ent) < cf.seq or lea and min(lea) < cf.seq:
        probs.append('target got ENTER/LEAVE before its correction')
    if ent and lea and max(ent) > min(lea):
        probs.append('target got LEAVE before ENTER')
    for p in world():
        h = [allgot[e].seq for e in exps if e.client is p and e in allgot]
        o = [allgot[e].seq for e in exps2 if e.client is p and e.pid in (MOVE, LEAVE) and e in allgot]
        if h and o and min(o) < h[0]:
            probs.append('%s got the respawn frame before the HIT' % p.label)
    check(not probs, 'respawn order: HIT, then the correction, then ENTERs, then LEAVEs (sections 5.4, 8.11)',
          '; '.join(probs))
    return ok2, got2, pr2


def wait_eof(c, timeout=1.5):
    end = time.time() + timeout
    while not c.eof and time.time() < end:
        pump(0.02)
    return c.eof


def fatal_joined(title, c, data, code, header=None):
    """c is in the world; send data, expect ERROR(code) (header own id), LEAVE to its viewers, EOF."""
    header = c.id if header is None else header
    vs = viewers(c)
    t0 = time.time()
    c.send(data)
    err = exp_error(c, code, header)
    exps = [err] + [Exp(p, LEAVE, c.id, desc='about %s' % c.label) for p in vs]
    c.in_world = False
    ok, got, probs = step(title, exps, report=False)
    eof = wait_eof(c)
    if err in got:
        dt = got[err].t - t0
        if not (c.frames and c.frames[-1] is got[err]):
            probs.append('ERROR is not the last frame')
    else:
        dt = None
    if not eof:
        probs.append('no EOF within 1.5 s after the ERROR')
    elif c.reset:
        probs.append('connection reset instead of a clean EOF')
    check(not probs, '%s: ERROR(%s) header %d%s, then EOF; LEAVE to its %d viewer(s)'
          % (title, ENAME[code], header, (' after %.3f s' % dt) if dt is not None else '', len(vs)),
          '; '.join(probs[:8]))
    c.close()
    return not probs


# --------------------------------------------------------------------------
# Timer watchers (threads)


def watch_timeout(c, expected_at, title, header, lo=0.1, hi=0.6):
    c.detached = True
    c.in_world = False
    n0 = len(c.frames)

    def run():
        c.sock.settimeout(0.25)
        end = expected_at + hi + 2.0
        while time.time() < end and not c.eof:
            try:
                data = c.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                with G.lock:
                    c.reset = True
                    c.on_eof()
                break
            with G.lock:
                if data:
                    c.feed(data)
                else:
                    c.on_eof()
        fr = c.frames[n0:]
        probs = []
        if not fr:
            probs.append('no frame at all (eof=%s)' % c.eof)
        else:
            f = fr[0]
            if f.pid != ERROR or struct.unpack_from('<I', f.payload)[0] != TIMEOUT or f.player != header:
                probs.append('first frame %s, expected ERROR[%d] TIMEOUT' % (f.describe(), header))
            late = f.t - expected_at
            if not (-lo <= late <= hi):
                probs.append('ERROR arrived %+.3f s from the deadline' % late)
            if len(fr) > 1:
                probs.append('more frames: %s' % [g.describe() for g in fr[1:]])
        if not c.eof:
            probs.append('no EOF')
        elif c.reset:
            probs.append('connection reset instead of a clean EOF')
        when = ('%+.3f s from the deadline' % (fr[0].t - expected_at)) if fr else ''
        check(not probs, '%s: ERROR(TIMEOUT) header %d %s, then EOF' % (title, header, when), '; '.join(probs))
        try:
            c.sock.close()
        except OSError:
            pass
    th = threading.Thread(target=run, daemon=True)
    th.start()
    G.threads.append(th)


# --------------------------------------------------------------------------
# Rate limit helpers


def collect(c, dur):
    end = time.time() + dur
    while time.time() < end:
        pump(end - time.time())
    fr = c.inbox
    c.inbox = []
    others = []
    for o in G.clients:
        if o is not c and not o.detached and o.inbox:
            others += ['%s <- %s' % (o.label, f.describe()) for f in o.inbox]
            o.inbox = []
    return fr, others


def errcode(f):
    return struct.unpack_from('<I', f.payload)[0] if f.pid == ERROR else None


# --------------------------------------------------------------------------
# The run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--addr', default='127.0.0.1:7777')
    ap.add_argument('--attack-range', type=float, default=10.0)
    ap.add_argument('--damage', type=int, default=10)
    ap.add_argument('--max-payload', type=int, default=1024)
    ap.add_argument('--hello-timeout', type=float, default=5.0)
    ap.add_argument('--partial-timeout', type=float, default=5.0)
    ap.add_argument('--idle-timeout', type=float, default=30.0)
    ap.add_argument('--skip-idle', action='store_true', help='do not wait for the idle timeout')
    ap.add_argument('--quiet', type=float, default=0.12,
                    help='seconds to wait for unexpected frames after each step')
    args = ap.parse_args()
    G.args = args
    host, port = args.addr.rsplit(':', 1)
    G.addr = (host, int(port))
    G.ar = args.attack_range
    G.damage = args.damage
    t_start = time.time()

    # --- HELLO deadline: a connection that never sends anything (runs in the background)
    ht = Client('HT')
    watch_timeout(ht, ht.t_connect + args.hello_timeout,
                  'no HELLO within %g s of connecting' % args.hello_timeout, 0)

    # --- joins
    A = join('A', b'ada', 'bytewise')
    if A is None:
        return finish(t_start)
    check(A.id == 1, 'first player of a fresh server gets id 1 (section 8.4)', 'got id %d' % A.id)
    B = join('B', b'bob', 'normal')
    name_c = ('\u00e7\u00e4\u00f8' + 'x' * 26).encode('utf-8')  # 3 two-byte chars + 26 = 32 bytes
    assert len(name_c) == 32
    C = join('C', name_c, 'with_ping', ', 32-byte UTF-8 name, PING+CHAT in the same write')
    D = join('D', b'dee', 'split')
    E = join('E', b'e\x00\x01\x7f', 'normal', ', name with NUL and control bytes')
    I = join('I', b'idler', 'normal')
    P = join('P', b'partial', 'normal')
    if None in (B, C, D, E, I, P):
        return finish(t_start)
    if G.fixed_spawn is None:
        info('spawn is not fixed: the respawn checks use the spawn point the server reports')
    sx, sz = G.spawn
    r, ar = G.aoi, G.ar
    if not (4 * r < sx < G.w - 4 * r and 4 * r < sz < G.h - 4 * r):
        check(False, 'precondition: spawn point at least 4*aoi_radius from the world edges (start the server with --spawn)')
        return finish(t_start)
    if G.max_speed < 200:
        info('max_speed %g is low: walks will be slow' % G.max_speed)
    tokens = struct.unpack_from('<Q', A.welcome.payload)[0], struct.unpack_from('<Q', B.welcome.payload)[0]
    info('WELCOME tokens of A and B: %#x, %#x (%s)' % (tokens + ('different' if tokens[0] != tokens[1] else 'equal',)))

    # --- park the timer clients far away, then let their deadlines run
    walk(I, -0.0, sz, '%s walks to x = -0.0 (section 8.2: -0.0 counts as 0, inside the world)' % I.label)
    walk(P, sx, 0.0, '%s walks to z = 0 (the world edge is inclusive at 0)' % P.label)
    if not args.skip_idle:
        watch_timeout(I, I.last_send_t + args.idle_timeout, 'idle %g s (no frame from a WELCOMEd client)'
                      % args.idle_timeout, I.id, hi=0.7)
    else:
        I.in_world = False
        I.close()
    P.send(frame(PING, P.id, b'abcd')[:5])
    watch_timeout(P, time.time() + args.partial_timeout,
                  'a frame left unfinished (5 of 16 bytes) for %g s' % args.partial_timeout, P.id)

    # --- MOVE relay
    move(A, sx + 3.25, 1.5, sz, 12.5, ct=0xDEADBEEF, header=A.id,
         title='%s MOVE (header = own id): relayed byte-identical to B,C,D,E; nothing back to the mover' % A.label)
    move(A, sx - 2.7182817, 0.0, sz + 1.4142135, 0.0, ct=1, header=0,
         title='%s MOVE (header 0): relayed byte-identical, client_time untouched' % A.label)
    move(A, sx, 10000.0, sz, G.max_speed, title='%s MOVE with y = 10000 and velocity = max_speed: accepted' % A.label)
    move(A, sx + 1, -10000.0, sz, -0.0,
         title='%s MOVE with y = -10000 and velocity = -0.0 accepted (IEEE: -0.0 >= 0)' % A.label)
    move(A, sx + 1, 7.25, sz, 0.0, title='%s MOVE to y = 7.25: relayed' % A.label)

    # --- rejected MOVEs -> correction
    rejects = [
        ('x = world_w (bounds are half-open)', (G.w, 0.0, sz, 0.0)),
        ('z = -1', (sx, 0.0, -1.0, 0.0)),
        ('|y| = 10000.5 > 10000', (sx, 10000.5, sz, 0.0)),
        ('y = NaN', (sx, float('nan'), sz, 0.0)),
        ('x = +inf', (float('inf'), 0.0, sz, 0.0)),
        ('velocity = 1.5 * max_speed', (sx, 0.0, sz, G.max_speed * 1.5)),
        ('velocity = -1', (sx, 0.0, sz, -1.0)),
        ('velocity = NaN', (sx, 0.0, sz, float('nan'))),
    ]
    for what, (x, y, z, v) in rejects:
        move(A, x, y, z, v, accept=False,
             title='%s MOVE with %s: rejected, correction = last accepted position, v 0, same client_time, nothing broadcast'
             % (A.label, what))
    # too far: an accepted MOVE and, in the same write, one far away
    far = min(G.max_speed * 0.4, G.w - sx - 2)
    if far > G.max_speed * 0.25:
        m1 = (f32(sx + 2), 0.0, f32(sz), 0.0)
        ct1, ct2 = next_ct(), next_ct()
        p1 = move_payload(*m1, ct=ct1)
        p2 = move_payload(f32(sx + 2 + far), 0.0, f32(sz), 0.0, ct=ct2)
        A.pace(MOVE, 2)
        A.send(frame(MOVE, A.id, p1) + frame(MOVE, A.id, p2))
        move(A, *m1, ct=ct1, accept=True, send=False, extra=lambda: [exp_correction(A, ct2)],
             title='%s MOVE %g units away right behind an accepted MOVE (limit max_speed*(t+0.1)): '
             'the first is relayed, the second rejected -> correction to the just-accepted position' % (A.label, far))
    else:
        info('max_speed too small for the "too far" test; skipped')

    # --- crossing the radius
    move(A, sx + r + 10, 0.0, sz, 0.0,
         title='%s moves out of radius: LEAVE both ways with B,C,D,E' % A.label)
    move(A, sx + r, 0.0, sz, 0.0,
         title='%s moves to distance exactly aoi_radius: ENTER both ways (inclusive bound) with position, hp, name' % A.label)
    move(A, sx + r, 0.0, sz + 0.5, 0.0,
         title='%s moves just beyond aoi_radius: LEAVE both ways' % A.label)
    move(A, sx + 5, 0.0, sz, 0.0, title='%s moves back in: ENTER both ways' % A.label)

    # --- CHAT
    text = 'h\u00e9llo w\u00f6rld \u2713 \U0001F3AE'.encode('utf-8')
    A.pace(CHAT)
    A.send(frame(CHAT, A.id, text))
    step('%s CHAT (multi-byte UTF-8): relayed byte-identical to B,C,D,E, header = speaker, no copy to the speaker' % A.label,
         [Exp(p, CHAT, A.id, payload=text) for p in viewers(A)])
    big = (b'\x00\x01\x1b' + 'z\u00e9'.encode() * 84 + b'x')
    assert len(big) == 256, len(big)
    A.pace(CHAT)
    A.send(frame(CHAT, 0, big))
    step('%s CHAT of 256 bytes with NUL/control bytes (header 0): relayed byte-identical' % A.label,
         [Exp(p, CHAT, A.id, payload=big) for p in viewers(A)])
    walk(A, sx + 3 * r, sz)
    A.pace(CHAT)
    A.send(frame(CHAT, A.id, b'anyone?'))
    step('%s CHAT while nobody sees it: goes nowhere, no error (section 8.19)' % A.label, [])

    # --- PING / PONG
    for pl, hdr in ((b'', B.id), (bytes(range(64)), 0), (b'\x07\x00\x00\x00', B.id)):
        B.pace(PING)
        B.send(frame(PING, hdr, pl))
        step('%s PING with %d-byte payload (header %d): PONG to the sender alone, header = recipient, payload byte-identical'
             % (B.label, len(pl), hdr), [Exp(B, PONG, B.id, payload=pl)])

    # --- ATTACK: range, INVALID_TARGET
    qx, qz = sx + 3 * r, sz  # A stands here, away from the others
    walk(B, qx + ar, qz, '%s walks to distance exactly attack_range from %s' % (B.label, A.label))
    attack(A, B.id, '%s ATTACKs %s at distance exactly attack_range (inclusive)' % (A.label, B.label))
    move(B, qx + ar + 0.5, 0.0, qz, 0.0, title='%s steps 0.5 beyond attack_range (relay to %s)' % (B.label, A.label))
    attack(A, B.id, '%s ATTACKs %s, seen but beyond attack_range' % (A.label, B.label))
    attack(A, A.id, '%s ATTACKs itself' % A.label)
    attack(A, 0, '%s ATTACKs target_id 0' % A.label, header=0)
    attack(A, C.id, '%s ATTACKs %s, a player it does not see' % (A.label, C.label))
    attack(A, 0xFFFFF, '%s ATTACKs id 0xFFFFF, no current player' % A.label)
    move(B, qx + ar, 0.0, qz, 0.0, title='%s steps back to distance attack_range (relay)' % B.label)
    B.accept_t = time.time()

    # --- kill and respawn
    # T=B (target), K=C (attacker), V=D (sees T before and after),
    # O1=A (sees T only before), O2=E (sees T only after)
    walk(A, sx + 1.5 * r, sz, 'layout: %s (O1) to spawn + 1.5 r' % A.label)
    walk(B, sx + 0.6 * r, sz, 'layout: %s (target) to spawn + 0.6 r' % B.label)
    move(B, sx + 0.6 * r, 3.5, sz, 0.0, title='%s lifts to y = 3.5 (the respawn must reset y to 0)' % B.label)
    walk(C, sx + 0.6 * r + 0.5 * ar, sz, 'layout: %s (attacker) within attack_range of the target' % C.label)
    walk(D, sx + 0.3 * r, sz, 'layout: %s (viewer before and after) to spawn + 0.3 r' % D.label)
    walk(E, sx - 0.8 * r, sz, 'layout: %s (viewer only after) to spawn - 0.8 r' % E.label)
    n = 0
    hits_needed = -(-B.hp // G.damage)
    while n < hits_needed:
        n += 1
        attack(C, B.id, '%s ATTACK #%d on %s' % (C.label, n, B.label))

    # --- rate limits
    A.wait_full(PING)
    t1 = time.time()
    A.send(b''.join(frame(PING, A.id, bytes([i])) for i in range(13)))
    fr, others = collect(A, 0.4)
    pongs = [f.payload[0] for f in fr if f.pid == PONG]
    rls = [f for f in fr if errcode(f) == RATE_LIMITED]
    rest = [f for f in fr if f.pid != PONG and errcode(f) != RATE_LIMITED]
    ok = (pongs == list(range(10)) and len(rls) == 1 and rls[0].player == A.id and rls[0] is fr[-1]
          and not rest and not others)
    check(ok, '%s sends 13 PINGs at once (burst 10): 10 PONGs, then one ERROR(RATE_LIMITED) header own id, the rest dropped'
          % A.label, 'received %s; others %s' % ([f.describe() for f in fr], others))
    A.drain(PING)
    time.sleep(max(0.0, t1 + 0.5 - time.time()))
    t2 = time.time()
    A.send(b''.join(frame(PING, A.id, bytes([100 + i])) for i in range(8)))
    fr, others = collect(A, 0.4)
    pongs = [f.payload[0] for f in fr if f.pid == PONG]
    ok = (4 <= len(pongs) <= 6 and pongs == list(range(100, 100 + len(pongs))) and len(pongs) == len(fr)
          and not others)
    check(ok, '%s: 0.5 s later 8 PINGs: ~5 PONGs (refill 10/s), drops silent (RATE_LIMITED at most once a second)'
          % A.label, 'received %s' % [f.describe() for f in fr])
    A.drain(PING)
    time.sleep(max(0.0, t2 + 1.1 - time.time()))
    A.send(b''.join(frame(PING, A.id, bytes([200 + i])) for i in range(11)))
    fr, others = collect(A, 0.4)
    pongs = [f.payload[0] for f in fr if f.pid == PONG]
    rls = [f for f in fr if errcode(f) == RATE_LIMITED]
    ok = pongs == list(range(200, 210)) and len(rls) == 1 and len(fr) == 11 and not others
    check(ok, '%s: 1.1 s later 11 PINGs: 10 PONGs (bucket capped at 10) and a new RATE_LIMITED' % A.label,
          'received %s' % [f.describe() for f in fr])
    A.drain(PING)

    B.wait_full(CHAT)
    texts = [('chat %d' % i).encode() for i in range(11)]
    B.send(b''.join(frame(CHAT, B.id, t) for t in texts))
    vs = viewers(B)
    exps = [Exp(p, CHAT, B.id, payload=t) for p in vs for t in texts[:10]] + [exp_error(B, RATE_LIMITED)]
    step('%s sends 11 CHATs at once (burst 10): 10 relayed to each of [%s], 11th dropped, one RATE_LIMITED'
         % (B.label, ','.join(p.label for p in vs)), exps)
    B.drain(CHAT)

    C.wait_full(MOVE)
    C.send(b''.join(frame(MOVE, C.id, move_payload(C.x, 0.0, C.z, -1.0, 5000 + i)) for i in range(63)))
    fr, others = collect(C, 0.5)
    corr = [struct.unpack('<ffffI', f.payload)[4] - 5000 for f in fr if f.pid == MOVE]
    rls = [f for f in fr if errcode(f) == RATE_LIMITED]
    ok = (60 <= len(corr) <= 61 and corr == list(range(len(corr))) and len(rls) == 1
          and len(fr) == len(corr) + 1 and not others)
    check(ok, '%s sends 63 invalid MOVEs at once (burst 60): rejected ones spend tokens (8.6), ~60 corrections, one RATE_LIMITED, dropped MOVEs get no correction'
          % C.label, 'got %d corrections (%s..), %d RATE_LIMITED, %d frames, others %s'
          % (len(corr), corr[:3], len(rls), len(fr), others[:3]))
    C.drain(MOVE)
    C.accept_t = time.time()

    D.wait_full(ATTACK)
    D.send(b''.join(frame(ATTACK, D.id, struct.pack('<I', D.id)) for _ in range(5)))
    fr, others = collect(D, 0.4)
    codes = [errcode(f) for f in fr]
    ok = codes == [INVALID_TARGET] * 4 + [RATE_LIMITED] and all(f.player == D.id for f in fr) and not others
    check(ok, '%s sends 5 self-ATTACKs at once (burst 4): 4 INVALID_TARGET (spend tokens, 8.6), then RATE_LIMITED'
          % D.label, 'received %s' % [f.describe() for f in fr])
    D.drain(ATTACK)

    # --- fatal errors before WELCOME (all at once, on fresh connections)
    mp = args.max_payload
    pre = [
        ('first frame PING (not HELLO)', frame(PING, 0, b'hi'), BAD_STATE),
        ('first frame a 3-byte MOVE (BAD_STATE beats MALFORMED)', frame(MOVE, 0, b'abc'), BAD_STATE),
        ('HELLO with player_id 7', frame(HELLO, 7, b'eve'), SPOOFED_ID),
        ('PING with player_id 9, header only (SPOOFED_ID beats BAD_STATE, decided from the header)',
         frame(PING, 9, b'', length=2), SPOOFED_ID),
        ('HELLO with an empty name', frame(HELLO, 0, b''), MALFORMED),
        ('HELLO with a 33-byte name', frame(HELLO, 0, b'n' * 33), MALFORMED),
        ('HELLO with invalid UTF-8', frame(HELLO, 0, b'\xff\xfe'), MALFORMED),
        ('HELLO with truncated UTF-8', frame(HELLO, 0, b'ab\xc3'), MALFORMED),
        ('HELLO with data_length = max_payload (not TOO_LARGE; MALFORMED)', frame(HELLO, 0, b'm' * mp), MALFORMED),
        ('packet id 0', frame(0, 0, b''), UNKNOWN_PACKET),
        ('packet id 12', frame(12, 0, b'x'), UNKNOWN_PACKET),
        ('packet id 2 (WELCOME) from a client', frame(WELCOME, 0, b'\0' * 40), UNKNOWN_PACKET),
        ('packet id 0xFFFFFFFF, header only (decided from the header)', frame(0xFFFFFFFF, 0, b'', length=100),
         UNKNOWN_PACKET),
        ('HELLO header with data_length max_payload+1, no payload (decided from the header)',
         frame(HELLO, 0, b'', length=mp + 1), TOO_LARGE),
        ('packet 77, player_id 5, data_length 0xFFFFFFFF (TOO_LARGE beats UNKNOWN_PACKET and SPOOFED_ID)',
         frame(77, 5, b'', length=0xFFFFFFFF), TOO_LARGE),
    ]
    raws = []
    for i, (what, data, code) in enumerate(pre):
        c = Client('raw%d' % i)
        raws.append((what, c, data, code))
    t0 = time.time()
    for what, c, data, code in raws:
        c.send(data + frame(PING, 0, b'after'))  # bytes after a fatal frame are discarded (8.23)
    exps = [exp_error(c, code, 0) for _, c, _, code in raws]
    step('pre-WELCOME fatal errors (batch)', exps, report=False)
    for what, c, data, code in raws:
        wait_eof(c)
        probs = []
        if len(c.frames) != 1 or errcode(c.frames[0]) != code or c.frames[0].player != 0:
            probs.append('frames %s' % [f.describe() for f in c.frames])
        if not c.eof:
            probs.append('no EOF')
        elif c.reset:
            probs.append('connection reset instead of a clean EOF')
        dt = (c.frames[0].t - t0) if c.frames else -1
        check(not probs, 'before WELCOME, %s: ERROR(%s) header 0 (%.3f s), then EOF; nothing else'
              % (what, ENAME[code], dt), '; '.join(probs))
        if what.startswith('first frame PING') and c.frames and c.frames[0].pid == ERROR:
            msg = c.frames[0].payload[4:]
            info('BAD_STATE message %r %s the example in section 3.10'
                 % (msg, 'matches' if msg == BAD_STATE_EXAMPLE_MSG else 'differs from'))
        c.close()

    # --- fatal errors after WELCOME; A is the observer that carries on
    walk(A, sx, sz, 'observer %s walks back to the spawn point' % A.label)
    post = [
        ('MOVE with a 19-byte payload', lambda c: frame(MOVE, c.id, b'\0' * 19), MALFORMED),
        ('MOVE with a 21-byte payload', lambda c: frame(MOVE, c.id, b'\0' * 21), MALFORMED),
        ('ATTACK with a 5-byte payload', lambda c: frame(ATTACK, c.id, b'\0' * 5), MALFORMED),
        ('CHAT with an empty text', lambda c: frame(CHAT, c.id, b''), MALFORMED),
        ('CHAT with 257 bytes', lambda c: frame(CHAT, c.id, b'c' * 257), MALFORMED),
        ('CHAT with invalid UTF-8', lambda c: frame(CHAT, c.id, b'ok \xc3\x28'), MALFORMED),
        ('PING with 65 bytes', lambda c: frame(PING, c.id, b'p' * 65), MALFORMED),
        ('CHAT header with data_length max_payload+1, no payload (decided from the header)',
         lambda c: frame(CHAT, c.id, b'', length=mp + 1), TOO_LARGE),
        ('packet 99, spoofed id, data_length max_payload+1 (TOO_LARGE first)',
         lambda c: frame(99, c.id + 1, b'', length=mp + 1), TOO_LARGE),
        ('LEAVE (7) from a client, a valid PING behind it in the same write (discarded, 8.23)',
         lambda c: frame(LEAVE, c.id) + frame(PING, c.id, b'lost'), UNKNOWN_PACKET),
        ('HIT (11) with a spoofed id, header only (UNKNOWN_PACKET beats SPOOFED_ID)',
         lambda c: frame(HIT, c.id + 1, b'', length=12), UNKNOWN_PACKET),
        ('PING with player_id = own id + 1, header only (decided from the header)',
         lambda c: frame(PING, c.id + 1, b'', length=4), SPOOFED_ID),
        ('HELLO with player_id = own id + 1 (SPOOFED_ID beats BAD_STATE)',
         lambda c: frame(HELLO, c.id + 1, b'again'), SPOOFED_ID),
        ('a second HELLO', lambda c: frame(HELLO, c.id, b'again'), BAD_STATE),
        ('a second HELLO with an empty name (BAD_STATE beats MALFORMED)', lambda c: frame(HELLO, 0, b''), BAD_STATE),
    ]
    for i, (what, mk, code) in enumerate(post):
        c = join('F%d' % i, ('victim%d' % i).encode())
        if c is None:
            continue
        fatal_joined('after WELCOME, %s' % what, c, mk(c), code)
    # MALFORMED beats RATE_LIMITED
    c = join('F%d' % len(post), b'victim-rl')
    if c is not None:
        vs = viewers(c)
        c.send(b''.join(frame(PING, c.id, bytes([i])) for i in range(10)) + frame(PING, c.id, b'p' * 65))
        c.in_world = False
        exps = ([Exp(c, PONG, c.id, payload=bytes([i])) for i in range(10)] + [exp_error(c, MALFORMED)]
                + [Exp(p, LEAVE, c.id) for p in vs])
        ok, got, probs = step('x', exps, report=False)
        wait_eof(c)
        if not c.eof or c.reset:
            probs.append('no clean EOF')
        check(not probs, 'after WELCOME, 10 PINGs then a 65-byte PING (bucket empty): 10 PONGs, ERROR(MALFORMED) not RATE_LIMITED, EOF, LEAVE to viewers',
              '; '.join(probs[:8]))
        c.close()

    # --- disconnects
    z1 = join('Z1', b'zed')
    if z1 is not None:
        vs = viewers(z1)
        z1.close()
        step('%s closes its socket: LEAVE to its %d viewer(s)' % (z1.label, len(vs)),
             [Exp(p, LEAVE, z1.id) for p in vs])
        attack(D, z1.id, '%s ATTACKs the stale id of %s' % (D.label, z1.label))
    z2 = join('Z2', b'zoe')
    if z2 is not None:
        vs = viewers(z2)
        z2.sock.shutdown(socket.SHUT_WR)
        z2.in_world = False
        step('%s half-closes (SHUT_WR): session ends, LEAVE to its %d viewer(s) (section 8.26)'
             % (z2.label, len(vs)), [Exp(p, LEAVE, z2.id) for p in vs])
        wait_eof(z2)
        info('%s after half-close: eof=%s reset=%s frames=%s' % (z2.label, z2.eof, z2.reset,
                                                                 [f.describe() for f in z2.frames[1:]]))
        z2.close()
    z3 = join('Z3', b'zack')
    if z3 is not None:
        ids = G.all_ids
        check(len(ids) == len(set(ids)), 'no player id was handed out twice (stale ids never name a new player, 8.4)',
              'ids %s' % ids)

    # --- the survivors carry on
    for c in (A, B, C, D, E):
        c.pace(PING)
        c.send(frame(PING, c.id, b'still here'))
    step('A..E still served after all of the above: PONG each', [Exp(c, PONG, c.id, payload=b'still here')
                                                                    for c in (A, B, C, D, E)])
    return finish(t_start)


def finish(t_start):
    for th in G.threads:
        th.join(timeout=max(0.0, 60 - (time.time() - t_start)))
    with G.lock:
        check(G.fmt_fails == 0, 'per-frame rules (format, ENTER..LEAVE visibility window, ERROR last) held on all %d frames received'
              % G.frames_seen, '%d violation(s), see above' % G.fmt_fails)
        print('%d passed, %d failed, %.1f s' % (G.passes, G.fails, time.time() - t_start), flush=True)
    for c in G.clients:
        try:
            c.sock.close()
        except OSError:
            pass
    return 1 if G.fails else 0


if __name__ == '__main__':
    sys.exit(main())
