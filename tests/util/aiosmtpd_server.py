"""An aiosmtpd server for the interop tests: stores each accepted message as one file.

usage: aiosmtpd_server.py PORT FOLDER [--tls CERT KEY] [--strict-ehlo] [--ehlo-reply "554 ..."]

--strict-ehlo answers a repeated EHLO (in the same TLS state) with 503, as Python's old smtpd did
(RFC 5321 allows it). --ehlo-reply answers every EHLO and HELO with the given reply.
Prints "ready" once it listens; stops on SIGTERM.
"""
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Store:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = "%d-%d.eml" % (os.getpid(), self.count)
        tmp = os.path.join(self.folder, "." + name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(self.folder, name))
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
    ctl = Ctl(Store(folder), hostname="127.0.0.1", port=port, ready_timeout=30, **kwargs)
    # the controller's own start-up probe would be answered by --ehlo-reply too; it only connects
    ctl.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    ctl.stop()


if __name__ == "__main__":
    main()
