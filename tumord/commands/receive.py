"""`tumord receive`: a DICOM C-STORE listener writing each received instance into the input folder."""
from __future__ import annotations

import argparse
import re
import signal
import threading
from pathlib import Path

from tumord.commands.common import add_config_options, add_log_option, config_from_args
from tumord.config import ConfigError
from tumord.logs import get_logger, setup_logging
from tumord.service.receiver import Receiver
from tumord.service.notify import Notifier


def register(sub) -> None:
    p = sub.add_parser("receive", help="receive DICOM instances over the network (C-STORE) into the input folder",
                       description="A DICOM listener: answers C-ECHO and stores each C-STORE instance atomically "
                                   "as input/<SOPInstanceUID>.dcm for `tumord watch`. SIGTERM/SIGINT stop it.")
    p.add_argument("--port", type=int, default=11112, help="TCP port to listen on (default 11112)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.add_argument("--ae-title", default="TUMORD", help="our AE title, as senders address us (default TUMORD)")
    p.add_argument("--input", type=Path, default=None, help="folder to write into (overrides paths.input)")
    p.add_argument("--output", type=Path, default=None,
                   help="the watch service's output folder, where received.sqlite3 is kept (overrides paths.output)")
    add_log_option(p)
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    inp = args.input or Path(cfg["paths"]["input"])
    out = args.output or Path(cfg["paths"]["output"])
    if not inp.is_dir():
        raise ConfigError(f"input folder {inp}: does not exist or is not a folder")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: expected a TCP port between 1 and 65535")
    if not re.fullmatch(r"[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}", args.ae_title):
        raise ConfigError(f"--ae-title {args.ae_title!r}: expected 1 to 16 printable ASCII characters, no backslash")
    setup_logging(json_lines=args.log_json)
    log = get_logger("tumord.receive")
    receiver = Receiver(inp.absolute(), out.absolute(), args.ae_title, log)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    receiver.start(args.host, args.port)
    notifier = Notifier()
    notifier.send(READY=1, STATUS=f"listening on {args.host}:{args.port} as {args.ae_title}")
    log.info("receive.ready", host=args.host, port=args.port, ae_title=args.ae_title, input=str(inp.absolute()))
    stop.wait()
    notifier.send(STOPPING=1)
    receiver.stop()
    log.info("receive.stopped")
    return 0
