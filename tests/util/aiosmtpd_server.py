"""An aiosmtpd server for the interop tests: stores each accepted message as one file.

usage: aiosmtpd_server.py PORT FOLDER [--tls CERT KEY] [--strict-ehlo] [--ehlo-reply "554 ..."]
                          [--hold-file PATH]

--strict-ehlo answers a repeated EHLO (in the same TLS state) with 503, as Python's old smtpd did
(RFC 5321 allows it). --ehlo-reply answers every EHLO and HELO with the given reply.
--hold-file: PATH holds a number N; the server stores every message, but answers the end of DATA
only for the first N (in the order stored), holding the others until N grows: a client (or a test
killing it) is then stopped at a known point. Prints "ready" once it listens; stops on SIGTERM.
"""
import asyncio
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Store:
    def __init__(self, folder, hold_file):
        self.folder = folder
        self.hold_file = hold_file
        self.count = 0

    def answered(self):
        try:
            with open(self.hold_file) as f:
                return int(f.read().strip() or "0")
        except (OSError, ValueError):
            return 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = "%d-%d.eml" % (os.getpid(), self.count)
        tmp = os.path.join(self.folder, "." + name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(self.folder, name))
        seq = self.count
        while self.hold_file and seq > self.answered():
            await asyncio.sleep(0.05)
        return "250 2.0.0 stored as " + name


def make_server(strict, ehlo_reply):
    class Server(SMTP):
        async def smtp_EHLO(self, hostname):
            if ehlo_reply:
                await self.push(ehlo_reply)
                return
            seen = self.__dict__.setdefault("ehlo_seen", set())
            state = self._tls_protocol is not None
            if strict and state in seen:
                await self.push("503 5.5.1 Duplicate HELO/EHLO")
                return
            seen.add(state)
            await super().smtp_EHLO(hostname)

        async def smtp_HELO(self, hostname):
            if ehlo_reply:
                await self.push(ehlo_reply)
                return
            await super().smtp_HELO(hostname)

    return Server


def main():
    args = sys.argv[1:]
    port, folder = int(args[0]), args[1]
    tls = None
    strict = "--strict-ehlo" in args
    ehlo_reply = None
    hold_file = args[args.index("--hold-file") + 1] if "--hold-file" in args else None
    if "--tls" in args:
        i = args.index("--tls")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args[i + 1], args[i + 2])
    if "--ehlo-reply" in args:
        ehlo_reply = args[args.index("--ehlo-reply") + 1]
    server_class = make_server(strict, ehlo_reply)

    class Ctl(Controller):
        def factory(self):
            return server_class(self.handler, **self.SMTP_kwargs)

    kwargs = {"tls_context": tls, "require_starttls": False} if tls else {}
    ctl = Ctl(Store(folder, hold_file), hostname="127.0.0.1", port=port, ready_timeout=30, **kwargs)
    # the controller's own start-up probe would be answered by --ehlo-reply too; it only connects
    ctl.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    ctl.stop()


if __name__ == "__main__":
    main()
