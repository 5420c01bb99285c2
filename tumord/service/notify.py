"""systemd notifications without extra packages: the $NOTIFY_SOCKET datagram protocol.

Each message is one datagram of newline-separated KEY=VALUE lines sent to the AF_UNIX socket
named in $NOTIFY_SOCKET (a path, or '@name' for the abstract namespace). Outside systemd the
variable is unset and every call does nothing. The watchdog pinger sends WATCHDOG=1 at half
the interval systemd asks for ($WATCHDOG_USEC), and only while `healthy()` says the observer
and workers are alive: a hung service stops pinging and systemd restarts it.
"""
from __future__ import annotations

import os
import socket

from tumord.service.worker import Worker


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self._sock = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields) -> bool:
        """send(READY=1, STATUS="...") -> whether the datagram went out."""
        if self._sock is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:  # never blocks: a reader that stopped reading must not hold up the service or its shutdown
            self._sock.sendto(msg, socket.MSG_DONTWAIT, self.address)
            return True
        except OSError:  # systemd gone or socket full: notifications are best effort
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between pings systemd expects, if it asked for any (for this process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


class Pinger(Worker):
    """WATCHDOG=1 every interval/2 while healthy; STATUS= every time."""

    def __init__(self, notifier: Notifier, interval: float | None, healthy, status):
        super().__init__("sd-notify")
        self.notifier, self.healthy, self.status = notifier, healthy, status
        self.every = min(interval / 2, 5.0) if interval else 5.0
        self.watchdog = interval is not None

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.beat()
            fields = {"STATUS": self.status()}
            if self.watchdog and self.healthy():
                fields["WATCHDOG"] = "1"
            self.notifier.send(**fields)
