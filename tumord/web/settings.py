"""The `http:` settings, checked: where to listen, and the token any bind but loopback needs."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tumord.config import ConfigError

MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class HttpSettings:
    bind: str
    port: int
    token: str | None  # None: no token asked (loopback without token_file)
    input: Path  # uploads are written here, and nowhere else
    output: Path  # verdicts and heat maps are read from here
    models: Path
    max_upload_bytes: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.bind).is_loopback

    @classmethod
    def from_config(cls, cfg: dict, source: str, watch) -> "HttpSettings | None":
        """None when http.enabled is false; `watch` is the service's checked Settings (its folders).
        A problem is a ConfigError naming `source` and the key."""
        h = cfg["http"]
        if not h["enabled"]:
            return None
        try:
            address = ipaddress.ip_address(h["bind"])
        except ValueError:
            raise ConfigError(f"{source}: http.bind = {h['bind']!r} is not valid; expected an IP address such "
                              "as 127.0.0.1 (this host only), ::1, or 0.0.0.0 (every interface)") from None
        token = read_token(h["token_file"], source) if h["token_file"] else None
        if token is None and not address.is_loopback:
            raise ConfigError(f"{source}: http.bind = {h['bind']!r} is reachable from other hosts; set "
                              "http.token_file to a file holding a token (at least "
                              f"{MIN_TOKEN_CHARS} characters), or bind 127.0.0.1")
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ConfigError(f"{source}: http.enabled is true but prometheus-client is not installed; "
                              "install the http extra: pip install 'tumord[http]'") from None
        return cls(bind=str(address), port=h["port"], token=token, input=watch.input, output=watch.output,
                   models=watch.models, max_upload_bytes=watch.max_bytes)


def read_token(path: str, source: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{source}: http.token_file = {path!r}: cannot read the token ({reason})") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"{source}: http.token_file = {path!r}: expected one token of at least "
                          f"{MIN_TOKEN_CHARS} characters without spaces, e.g. from `openssl rand -hex 32`")
    return token
