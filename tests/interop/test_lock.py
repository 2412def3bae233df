#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Image locking interop: uqcow and QEMU keep each other out as QEMU does.

Usage: test_lock.py --uqcow PATH [--noofd PATH] [--only NAME ...] [-v] [-k]

A holder (qemu-io, or `uqcow io`, reading commands from a pipe) keeps an
image open while another program tries it:
  bytes        uqcow holds exactly the lock bytes qemu-io holds (/proc/locks),
               read-write, read-only and -U, on the image and its backing file;
  qemu-writer  qemu-io writes: uqcow writes and plain reads are refused with
               the lock message, -U reads see qemu's flushed writes, and
               nothing is lost (qemu's later writes read back, check clean);
  uqcow-writer the reverse: qemu-io and qemu-img are refused with QEMU's own
               messages, qemu-img info -U and qemu-io -r -U work;
  readers      write against read both ways, read against read, -U readers
               don't keep writers out;
  two-uqcow    two uqcow processes; create (qcow2 and raw) and convert
               refuse to overwrite an image in use;
  backing      a writer's backing file is locked as a reader's;
  force-share  -U with a writable open is refused, as in qemu-img;
  no-ofd       (with --noofd) where fcntl has no OFD locks, uqcow opens
               without locking and says so once.
Exit 0 all passed, 1 any failure, 77 qemu-img/qemu-io missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import interop_common

MiB = 1 << 20
WAIT = 20          # seconds to wait for a holder


class Fail(Exception):
    pass


def run(args, cwd, timeout=120):
    p = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def held_bytes(path):
    """The lock bytes anyone holds on path, from /proc/locks."""
    st = os.stat(path)
    key = '%02x:%02x:%d' % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    out = set()
    with open('/proc/locks') as f:
        for line in f:
            w = line.split()
            # "1: OFDLCK ADVISORY READ -1 00:2a:123 100 101"; blocked
            # waiters ("->") shift the fields by one
            if w[1] == '->':
                w = w[1:]
            if w[1] != 'OFDLCK' or w[5] != key:
                continue
            out.update(range(int(w[6]), int(w[7]) + 1))
    return out


RW, RO, SHARE = {100, 101, 103, 201, 203}, {100, 201, 203}, {100}


class Holder:
    """A qemu-io or `uqcow io` that keeps an image open, fed from a pipe."""

    def __init__(self, args, cwd, name):
        self.name = name
        # qemu-io prompts when it is ready for the next command
        self.prompt = 'qemu-io> ' if args[0] == 'qemu-io' else None
        self.p = subprocess.Popen(args, cwd=cwd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.out = []
        self.err = []
        self.t = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                  for s, b in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.t:
            t.start()

    @staticmethod
    def _pump(stream, buf):
        # what arrives, not lines: qemu-io's prompt ends without one
        fd = stream.fileno()
        while True:
            data = os.read(fd, 4096)
            if not data:
                break
            buf.append(data.decode(errors='replace'))

    def text(self):
        return ''.join(self.out)

    def wait_locks(self, path, want):
        """Until path's lock bytes include want (the holder has opened it)."""
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            if want <= held_bytes(path):
                return
            if self.p.poll() is not None:
                raise Fail('%s exited (%d) before locking %s: %s' % (
                    self.name, self.p.returncode, path, ''.join(self.err)))
            time.sleep(0.02)
        raise Fail('%s: %s never showed lock bytes %s (has %s)' % (
            self.name, path, sorted(want), sorted(held_bytes(path))))

    def wait_prompt(self):
        """Until qemu-io's first prompt: it has opened the whole chain."""
        end = time.monotonic() + WAIT
        while self.prompt not in self.text():
            if time.monotonic() > end or self.p.poll() is not None:
                raise Fail('%s: no prompt: %r %r' % (self.name, self.text(),
                                                     ''.join(self.err)))
            time.sleep(0.02)

    def cmd(self, line, expect=None):
        """Send one command and wait until its output shows expect, or,
        when expect is None, until it is done: qemu-io prompts again;
        `uqcow io` runs a read after it and prints that. One command at
        a time: qemu-io leaves a second line unread until more input."""
        if expect is None and not self.prompt:
            self.p.stdin.write(line + '\n')
            line, expect = 'read 0 512', 'read 512/512 bytes'
        waits = [w for w in (expect, self.prompt) if w]
        n = [self.text().count(w) for w in waits]
        self.p.stdin.write(line + '\n')
        self.p.stdin.flush()
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            if all(self.text().count(w) > k for w, k in zip(waits, n)):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise Fail('%s: %r: no %r in its output: %r %r' % (
            self.name, line, expect, self.text(), ''.join(self.err)))

    def close(self):
        """quit; returns the exit status."""
        if self.p.poll() is None:
            try:
                self.p.stdin.write('quit\n')
                self.p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            rc = self.p.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        for t in self.t:
            t.join(timeout=5)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class Env:
    def __init__(self, exe, noofd, verbose):
        self.exe, self.noofd, self.verbose = exe, noofd, verbose
        self.d = None
        self.holders = []

    def sh(self, args, timeout=120):
        rc, out, err = run(args, self.d, timeout)
        if self.verbose:
            print('  $ %s -> %d\n%s%s' % (' '.join(args), rc, out, err), end='')
        return rc, out, err

    def ok(self, args):
        rc, out, err = self.sh(args)
        if rc != 0:
            raise Fail('%s: exit %d\n%s%s' % (' '.join(args), rc, out, err))
        return out, err

    def uq(self, *args):
        return [self.exe] + list(args)

    def hold(self, tool, opts, img, want):
        """Start a holder of img (tool 'qemu' or 'uqcow') and wait until it
        holds the lock bytes want."""
        if tool == 'qemu':
            args = ['qemu-io'] + opts + [img]
        else:
            args = self.uq('io', *opts) + [img]
        h = Holder(args, self.d, '%s io %s' % (tool, ' '.join(opts)))
        self.holders.append(h)
        h.wait_locks(os.path.join(self.d, img), want)
        if h.prompt:
            h.wait_prompt()
        return h

    def release(self, h):
        rc = h.close()
        self.holders.remove(h)
        if rc != 0:
            raise Fail('%s exited %d: %s' % (h.name, rc, ''.join(h.err)))

    def cleanup(self):
        for h in self.holders:
            h.kill()
        self.holders = []

    def qimg(self, name, size='16M', *extra):
        self.ok(['qemu-img', 'create', '-q', '-f', 'qcow2'] + list(extra) + [name, size])

    def refused(self, args, *needles):
        """args must fail (exit 1; compare's errors are 2), with one stderr
        line holding every needle."""
        rc, out, err = self.sh(args)
        lines = [l for l in err.splitlines() if l.strip()]
        if rc != (2 if 'compare' in args else 1):
            raise Fail('%s: expected a refusal, got exit %d\n%s%s' % (
                ' '.join(args), rc, out, err))
        tool = os.path.basename(args[0])
        # QEMU's hint is a second line; uqcow says it all in one
        if tool == os.path.basename(self.exe) and len(lines) != 1:
            raise Fail('%s: expected one stderr line, got %d:\n%s' % (
                ' '.join(args), len(lines), err))
        for n in needles:
            if n not in err:
                raise Fail('%s: %r not in its message:\n%s' % (' '.join(args), n, err))
        return err

    def check_clean(self, img):
        rc, out, err = self.sh(['qemu-img', 'check', img])
        if rc != 0:
            raise Fail('qemu-img check %s: exit %d\n%s%s' % (img, rc, out, err))

    def reads(self, img, pattern, off, length):
        """qemu-io (the oracle) reads pattern at off."""
        self.ok(['qemu-io', '-r', '-c', 'read -P %d %d %d' % (pattern, off, length), img])


UQ_WRITE_LOCK = ['Failed to get "write" lock', 'Is another process using the image',
                 '-U (--force-share)']
UQ_SHARED_LOCK = ['Failed to get shared "write" lock', 'Is another process using the image',
                  '-U (--force-share)']
Q_WRITE_LOCK = ['Failed to get "write" lock', 'Is another process using the image']
Q_SHARED_LOCK = ['Failed to get shared "write" lock', 'Is another process using the image']


def t_bytes(e):
    """Each tool's holders: the same bytes on the image and its backing."""
    e.qimg('base.qcow2')
    e.qimg('top.qcow2', '16M', '-b', 'base.qcow2', '-F', 'qcow2')
    for opts, top, base in (([], RW, RO), (['-r'], RO, RO), (['-r', '-U'], SHARE, SHARE)):
        seen = {}
        for tool in ('qemu', 'uqcow'):
            h = e.hold(tool, opts, 'top.qcow2', top)
            h.wait_locks(os.path.join(e.d, 'base.qcow2'), base)
            seen[tool] = (held_bytes(os.path.join(e.d, 'top.qcow2')),
                          held_bytes(os.path.join(e.d, 'base.qcow2')))
            e.release(h)
            if held_bytes(os.path.join(e.d, 'top.qcow2')):
                raise Fail('%s io %s left locks behind' % (tool, ' '.join(opts)))
        if seen['qemu'] != seen['uqcow'] or seen['qemu'] != (top, base):
            raise Fail('io %s: qemu-io holds %s, uqcow %s (expected %s)' % (
                ' '.join(opts), seen['qemu'], seen['uqcow'], (top, base)))


def t_qemu_writer(e):
    e.qimg('a.qcow2')
    e.ok(['qemu-io', '-c', 'write -P 1 0 64k', 'a.qcow2'])
    h = e.hold('qemu', [], 'a.qcow2', RW)
    # the write that got lost before image locking
    e.refused(e.uq('io', '-c', 'write -P 3 2M 64k', 'a.qcow2'), 'a.qcow2', *UQ_WRITE_LOCK)
    e.refused(e.uq('io', '-r', '-c', 'read 0 64k', 'a.qcow2'), 'a.qcow2', *UQ_SHARED_LOCK)
    for verb in (['info'], ['check'], ['map'], ['snapshot', '-l'],
                 ['convert', '-O', 'qcow2'], ['compare']):
        extra = {'convert': ['out.qcow2'], 'compare': ['a.qcow2']}.get(verb[0], [])
        e.refused(e.uq(*verb, 'a.qcow2', *extra), 'a.qcow2', *UQ_SHARED_LOCK)
    # nothing truncates it: create, and raw output the CLI writes itself
    e.refused(e.uq('create', '-f', 'qcow2', 'a.qcow2', '1M'), 'a.qcow2',
              'Failed to get "write" lock')
    e.refused(e.uq('create', '-f', 'raw', 'a.qcow2', '1M'), 'a.qcow2',
              'Failed to get "write" lock')
    e.qimg('src.qcow2', '1M')
    e.refused(e.uq('convert', '-O', 'raw', 'src.qcow2', 'a.qcow2'), 'a.qcow2',
              'Failed to get "write" lock')
    e.refused(e.uq('convert', '-O', 'qcow2', 'src.qcow2', 'a.qcow2'), 'a.qcow2',
              'Failed to get "write" lock')
    # a character device is nobody's image: not locked
    e.ok(e.uq('convert', '-O', 'raw', 'src.qcow2', '/dev/null'))
    # -U reads while qemu writes: what qemu flushed reads back
    h.cmd('write -P 7 6M 64k', 'wrote 65536/65536')
    h.cmd('flush')
    e.ok(e.uq('io', '-r', '-U', '-c', 'read -P 7 6M 64k', '-c', 'read -P 1 0 64k',
              'a.qcow2'))
    for verb in (['info'], ['map'], ['check'], ['snapshot', '-l'],
                 ['convert', '-O', 'qcow2'], ['compare']):
        extra = {'convert': ['out.qcow2'], 'compare': ['a.qcow2']}.get(verb[0], [])
        e.ok(e.uq(*verb, '-U', 'a.qcow2', *extra))
    e.ok(e.uq('-U', 'info', 'a.qcow2'))
    # nothing lost: qemu's writes after the refusal stay
    h.cmd('write -P 5 4M 64k', 'wrote 65536/65536')
    e.release(h)
    e.reads('a.qcow2', 5, 4 * MiB, 65536)
    e.reads('a.qcow2', 7, 6 * MiB, 65536)
    e.reads('a.qcow2', 0, 2 * MiB, 65536)
    e.check_clean('a.qcow2')
    # convert -U copied what qemu had flushed then
    e.reads('out.qcow2', 7, 6 * MiB, 65536)
    e.reads('out.qcow2', 1, 0, 65536)
    e.reads('out.qcow2', 0, 4 * MiB, 65536)
    e.check_clean('out.qcow2')


def t_uqcow_writer(e):
    e.qimg('a.qcow2')
    h = e.hold('uqcow', [], 'a.qcow2', RW)
    h.cmd('write -P 9 1M 64k', 'wrote 65536/65536')
    h.cmd('flush')
    e.refused(['qemu-io', '-c', 'write -P 3 2M 64k', 'a.qcow2'], *Q_WRITE_LOCK)
    e.refused(['qemu-io', '-r', '-c', 'read 0 64k', 'a.qcow2'], *Q_SHARED_LOCK)
    e.refused(['qemu-img', 'info', 'a.qcow2'], *Q_SHARED_LOCK)
    e.refused(['qemu-img', 'check', 'a.qcow2'], *Q_SHARED_LOCK)
    e.refused(['qemu-img', 'create', '-f', 'qcow2', 'a.qcow2', '1M'], *Q_WRITE_LOCK)
    e.ok(['qemu-img', 'info', '-U', 'a.qcow2'])
    # -U reads see what uqcow flushed
    h.cmd('flush')
    e.ok(['qemu-io', '-r', '-U', '-c', 'read -P 9 1M 64k', 'a.qcow2'])
    h.cmd('write -P 10 3M 64k', 'wrote 65536/65536')
    e.release(h)
    e.reads('a.qcow2', 9, 1 * MiB, 65536)
    e.reads('a.qcow2', 10, 3 * MiB, 65536)
    e.reads('a.qcow2', 0, 2 * MiB, 65536)
    e.check_clean('a.qcow2')


def t_readers(e):
    e.qimg('a.qcow2')
    # a reader keeps writers out, not readers
    h = e.hold('qemu', ['-r'], 'a.qcow2', RO)
    e.refused(e.uq('io', '-c', 'write 0 4k', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.ok(e.uq('io', '-r', '-c', 'read 0 4k', 'a.qcow2'))
    e.ok(e.uq('info', 'a.qcow2'))
    e.ok(e.uq('check', 'a.qcow2'))
    e.release(h)
    h = e.hold('uqcow', ['-r'], 'a.qcow2', RO)
    e.refused(['qemu-io', '-c', 'write 0 4k', 'a.qcow2'], *Q_WRITE_LOCK)
    e.ok(['qemu-io', '-r', '-c', 'read 0 4k', 'a.qcow2'])
    e.ok(['qemu-img', 'info', 'a.qcow2'])
    e.ok(['qemu-img', 'check', 'a.qcow2'])
    e.release(h)
    # a -U reader keeps nobody out
    h = e.hold('uqcow', ['-r', '-U'], 'a.qcow2', SHARE)
    e.ok(['qemu-io', '-c', 'write -P 4 0 4k', 'a.qcow2'])
    e.release(h)
    h = e.hold('qemu', ['-r', '-U'], 'a.qcow2', SHARE)
    e.ok(e.uq('io', '-c', 'write -P 6 64k 4k', 'a.qcow2'))
    e.release(h)
    e.reads('a.qcow2', 4, 0, 4096)
    e.reads('a.qcow2', 6, 65536, 4096)
    e.check_clean('a.qcow2')


def t_two_uqcow(e):
    e.qimg('a.qcow2')
    h = e.hold('uqcow', [], 'a.qcow2', RW)
    h.cmd('write -P 2 0 64k', 'wrote 65536/65536')
    e.refused(e.uq('io', '-c', 'write 1M 4k', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.refused(e.uq('io', '-r', '-c', 'read 0 4k', 'a.qcow2'), *UQ_SHARED_LOCK)
    e.refused(e.uq('bench', '-w', '-c', '10', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.refused(e.uq('snapshot', '-c', 's1', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.refused(e.uq('resize', 'a.qcow2', '32M'), *UQ_WRITE_LOCK)
    e.refused(e.uq('amend', '-o', 'refcount_bits=8', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.refused(e.uq('check', '-r', 'all', 'a.qcow2'), *UQ_WRITE_LOCK)
    # create truncates nothing that is in use
    e.refused(e.uq('create', '-f', 'qcow2', 'a.qcow2', '1M'), 'Failed to get "write" lock')
    e.refused(e.uq('create', '-f', 'raw', 'a.qcow2', '1M'), 'Failed to get "write" lock')
    e.ok(e.uq('io', '-r', '-U', '-c', 'read 0 4k', 'a.qcow2'))
    e.release(h)
    h = e.hold('uqcow', ['-r'], 'a.qcow2', RO)
    e.ok(e.uq('io', '-r', '-c', 'read -P 2 0 64k', 'a.qcow2'))
    e.refused(e.uq('io', '-c', 'write 1M 4k', 'a.qcow2'), *UQ_WRITE_LOCK)
    e.release(h)
    e.reads('a.qcow2', 2, 0, 65536)
    e.reads('a.qcow2', 0, MiB, 4096)
    e.check_clean('a.qcow2')


def t_backing(e):
    e.qimg('base.qcow2')
    e.ok(['qemu-io', '-c', 'write -P 8 0 64k', 'base.qcow2'])
    e.qimg('top.qcow2', '16M', '-b', 'base.qcow2', '-F', 'qcow2')
    # qemu writes the overlay: its backing file is read-locked
    h = e.hold('qemu', [], 'top.qcow2', RW)
    h.wait_locks(os.path.join(e.d, 'base.qcow2'), RO)
    e.refused(e.uq('io', '-c', 'write 0 4k', 'base.qcow2'), 'base.qcow2', *UQ_WRITE_LOCK)
    e.ok(e.uq('io', '-r', '-c', 'read -P 8 0 64k', 'base.qcow2'))
    # a second overlay over the same base: qemu-img create force-shares it
    e.ok(e.uq('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top2.qcow2'))
    e.ok(e.uq('io', '-c', 'write -P 9 64k 4k', 'top2.qcow2'))
    e.release(h)
    # uqcow writes the overlay
    h = e.hold('uqcow', [], 'top.qcow2', RW)
    h.wait_locks(os.path.join(e.d, 'base.qcow2'), RO)
    e.refused(['qemu-io', '-c', 'write 0 4k', 'base.qcow2'], *Q_WRITE_LOCK)
    e.ok(['qemu-io', '-r', '-c', 'read -P 8 0 64k', 'base.qcow2'])
    e.ok(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
          'top3.qcow2'])
    e.release(h)
    for img in ('base.qcow2', 'top.qcow2', 'top2.qcow2', 'top3.qcow2'):
        e.check_clean(img)
    e.reads('top2.qcow2', 9, 65536, 4096)


def t_force_share(e):
    e.qimg('a.qcow2')
    msg = 'force-share can only be used with read-only images'
    e.refused(e.uq('io', '-U', '-c', 'read 0 4k', 'a.qcow2'), msg)
    e.refused(e.uq('check', '-U', '-r', 'all', 'a.qcow2'), msg)
    e.refused(e.uq('snapshot', '-U', '-c', 's1', 'a.qcow2'), msg)
    e.refused(e.uq('bench', '-U', '-w', '-c', '10', 'a.qcow2'), msg)
    e.refused(['qemu-io', '-U', '-c', 'read 0 4k', 'a.qcow2'], 'force-share=on can only')
    # -U before the verb is the source's alone for convert
    e.ok(e.uq('-U', 'convert', '-O', 'qcow2', 'a.qcow2', 'b.qcow2'))
    e.ok(e.uq('convert', '-U', '-O', 'qcow2', 'a.qcow2', 'c.qcow2'))
    e.check_clean('b.qcow2')


def t_no_ofd(e):
    if not e.noofd:
        print('    note: no-ofd skipped: no --noofd helper')
        return
    e.qimg('base.qcow2')
    e.qimg('top.qcow2', '16M', '-b', 'base.qcow2', '-F', 'qcow2')
    rc, out, err = e.sh([e.noofd, 'true'])
    if rc == 77:
        print('    note: no-ofd skipped: ' + err.strip())
        return
    # the chain opens unlocked, and that is said once
    rc, out, err = e.sh([e.noofd] + e.uq('io', '-c', 'write -P 3 0 4k', 'top.qcow2'))
    warn = [l for l in err.splitlines() if 'no OFD locks here' in l]
    if rc != 0 or len(warn) != 1 or len(err.splitlines()) != 1:
        raise Fail('without OFD locks: exit %d, expected one warning line:\n%s' % (rc, err))
    if 'top.qcow2' not in warn[0] or 'Invalid argument' not in warn[0]:
        raise Fail('the warning should name the file and why: ' + warn[0])
    # QEMU there takes no locks either (its automatic mode), silently
    rc, out, err = e.sh([e.noofd, 'qemu-io', '-c', 'read -P 3 0 4k', 'top.qcow2'])
    if rc != 0 or err.strip():
        raise Fail('qemu-io without OFD locks: exit %d: %s' % (rc, err))
    e.check_clean('top.qcow2')


TESTS = [('bytes', t_bytes), ('qemu-writer', t_qemu_writer), ('uqcow-writer', t_uqcow_writer),
         ('readers', t_readers), ('two-uqcow', t_two_uqcow), ('backing', t_backing),
         ('force-share', t_force_share), ('no-ofd', t_no_ofd)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'), help='uqcow binary')
    ap.add_argument('--noofd', help='the noofd helper (tests/lib)')
    ap.add_argument('--only', nargs='*', help='test names (prefixes)')
    ap.add_argument('-k', '--keep', action='store_true', help='keep the images')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    exe, rc = interop_common.setup(a.uqcow, 'lock interop')
    if not exe:
        return rc
    if not os.path.exists('/proc/locks'):
        print('lock interop: SKIP: no /proc/locks')
        return 77
    noofd = os.path.abspath(a.noofd) if a.noofd else None
    root = tempfile.mkdtemp(prefix='uqcow-lock-')
    tests = TESTS
    if a.only:
        tests = [t for t in tests if any(t[0].startswith(p) for p in a.only)]
    env = Env(exe, noofd, a.verbose)
    failed = []
    t0 = time.monotonic()
    for name, fn in tests:
        env.d = os.path.join(root, name)
        os.makedirs(env.d)
        t1 = time.monotonic()
        try:
            fn(env)
            print('ok   %s (%.1fs)' % (name, time.monotonic() - t1))
        except Fail as x:
            failed.append(name)
            print('FAIL %s (%.1fs)\n    %s' % (name, time.monotonic() - t1,
                                               str(x).replace('\n', '\n    ')))
        except Exception as x:       # report, don't abort the other tests
            failed.append(name)
            print('FAIL %s: test error: %r' % (name, x))
        finally:
            env.cleanup()
        sys.stdout.flush()
    print('lock interop: %d passed, %d failed (%.0fs)' % (
        len(tests) - len(failed), len(failed), time.monotonic() - t0))
    if failed:
        print('lock interop: failed: ' + ' '.join(failed))
        print('lock interop: images kept in ' + root)
        return 1
    if not a.keep:
        shutil.rmtree(root)
    else:
        print('lock interop: images kept in ' + root)
    return 0


if __name__ == '__main__':
    sys.exit(main())
