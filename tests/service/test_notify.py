"""sd_notify: datagrams to $NOTIFY_SOCKET (path or abstract), and watchdog pings only while healthy."""
import os
import socket
import threading
import time

from tumord.service.notify import Notifier, Pinger, watchdog_interval


def receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2.0)
    return s


def messages(sock: socket.socket, seconds: float) -> list[str]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


class TestNotifier:
    def test_sends_to_a_socket_path(self, tmp_path):
        """READY and STATUS arrive as one datagram of KEY=VALUE lines."""
        rx = receiver(str(tmp_path / "notify"))
        n = Notifier(str(tmp_path / "notify"))
        assert n.send(READY=1, STATUS="classified 3")
        assert rx.recv(4096) == b"READY=1\nSTATUS=classified 3"

    def test_sends_to_an_abstract_socket(self):
        """An address starting with @ is in the abstract namespace, as systemd may set it."""
        name = f"tumord-test-{os.getpid()}-{time.monotonic_ns()}"
        rx = receiver("\0" + name)
        assert Notifier("@" + name).send(WATCHDOG=1)
        assert rx.recv(4096) == b"WATCHDOG=1"

    def test_a_reader_that_stops_reading_never_blocks_the_sender(self, tmp_path):
        """Once the receiver's queue is full, send() returns False at once instead of waiting: a
        SIGTERM's STOPPING=1 must not hang the shutdown behind a stalled reader."""
        rx = receiver(str(tmp_path / "notify"))
        n = Notifier(str(tmp_path / "notify"))
        t = time.monotonic()
        sent = [n.send(STATUS="x" * 200) for _ in range(5000)]
        assert time.monotonic() - t < 5 and sent[0] and not sent[-1]
        rx.close()

    def test_without_systemd_nothing_happens(self, monkeypatch):
        """No $NOTIFY_SOCKET: disabled, and send() is a harmless no-op."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        n = Notifier()
        assert not n.enabled and n.send(READY=1) is False

    def test_watchdog_interval_is_for_this_process_only(self, monkeypatch):
        """WATCHDOG_USEC counts only when WATCHDOG_PID is unset or ours."""
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert watchdog_interval() == 4.0
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        assert watchdog_interval() is None


class TestPinger:
    def test_pings_only_while_healthy(self, tmp_path):
        """WATCHDOG=1 goes out while healthy() is true and stops when it turns false; STATUS keeps coming."""
        rx = receiver(str(tmp_path / "n"))
        healthy = threading.Event()
        healthy.set()
        p = Pinger(Notifier(str(tmp_path / "n")), 0.1, healthy.is_set, lambda: "ok")
        p.start()
        try:
            first = messages(rx, 0.3)
            healthy.clear()
            time.sleep(0.1)
            messages(rx, 0.05)  # one beat may have been in flight
            later = messages(rx, 0.3)
        finally:
            p.stop()
            p.join()
        assert any("WATCHDOG=1" in m for m in first)
        assert later and all("WATCHDOG" not in m and "STATUS=ok" in m for m in later)
