#!/usr/bin/env python3
"""ptyrun.py [-t SECONDS] [-i INPUT] -- CMD ARGS...

Run CMD with a fresh pseudo-terminal as its controlling tty and stdin/stdout/
stderr (like `script -qc`, but without touching our own stdin, so it works with
no terminal and stdin=/dev/null, e.g. in CI).  Everything CMD writes to the tty
is copied to our stdout; INPUT (with \\n escapes) is typed into the tty after
0.5 s.  Exits with CMD's exit status (128+sig if killed; 124 on timeout).
"""
import os, pty, select, signal, sys, time


def main():
    args = sys.argv[1:]
    timeout, typed = 60.0, None
    while args and args[0] != "--":
        if args[0] == "-t":
            timeout = float(args[1]); args = args[2:]
        elif args[0] == "-i":
            typed = args[1].encode().decode("unicode_escape").encode(); args = args[2:]
        else:
            break
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(args[0], args)
        except OSError as e:
            os.write(2, f"ptyrun: {e}\n".encode())
            os._exit(127)
    start = time.time()
    out = sys.stdout.buffer
    status = None
    while True:
        if typed is not None and time.time() - start > 0.5:
            os.write(fd, typed); typed = None
        if time.time() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            out.write(b"\nptyrun: timeout\n"); out.flush()
            sys.exit(124)
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: slave side closed
                data = b""
            if not data:
                break
            out.write(data); out.flush()
        elif status is None:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p:
                status = st
                # drain whatever is left, then stop
                while True:
                    r, _, _ = select.select([fd], [], [], 0.2)
                    if not r:
                        break
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    out.write(data)
                out.flush()
                break
    if status is None:
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
