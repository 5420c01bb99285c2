"""The drop-in that opens the HTTP port: only that port, only the allowed peers, exposure under 1.0.

Checked with systemd-analyze (verify and security --offline), as the units are in
tests/systemd/test_units.py; the IP and bind filters themselves need systemd's cgroup BPF and
are not exercised here.
"""
import re
import shutil

import pytest

from tests.systemd.test_units import INSTALLED, ROOT, analyze, directives, needs_analyze, needs_offline_security, \
    tumord_program
from tumord.config import DEFAULTS

DROP_IN = ROOT / "systemd" / "tumord.service.d" / "http.conf"


def test_drop_in_opens_only_the_configured_port_to_localhost():
    d, unit = directives("tumord.service.d/http.conf"), directives("tumord.service")
    assert d["SocketBindAllow"] == [f"tcp:{DEFAULTS['http']['port']}"] and d["SocketBindDeny"] == ["any"]
    assert d["IPAddressAllow"] == ["localhost"] and unit["IPAddressDeny"] == ["any"]
    assert DEFAULTS["http"]["bind"] == "127.0.0.1"
    assert d["PrivateNetwork"] == ["no"] and unit["PrivateNetwork"] == ["yes"]  # the unit alone stays offline
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


@pytest.fixture
def installed(tmp_path):
    """tumord.service with its drop-in folder beside it, pointing at this environment's tumord."""
    text = (ROOT / "systemd" / "tumord.service").read_text()
    (tmp_path / "tumord.service").write_text(text.replace(INSTALLED, " ".join(tumord_program())))
    (tmp_path / "tumord.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "tumord.service.d" / "http.conf")
    return tmp_path


@needs_analyze
def test_verify_with_the_drop_in_prints_nothing(installed):
    run = analyze("verify", "tumord.service", cwd=installed)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


@needs_offline_security
def test_exposure_with_the_port_open_stays_under_1(installed):
    def exposure() -> float:
        run = analyze("security", "--offline=true", "tumord.service", cwd=installed)
        match = re.search(r"Overall exposure level for \S+: ([\d.]+)", run.stdout)
        assert match, run.stdout + run.stderr
        return float(match[1])

    with_port = exposure()
    shutil.rmtree(installed / "tumord.service.d")
    without = exposure()
    print(f"tumord.service exposure: {without} without the HTTP drop-in, {with_port} with it")
    assert without < with_port < 1.0
