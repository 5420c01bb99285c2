"""A DICOM C-STORE listener (pynetdicom) that hands each received instance to `tumord watch`.

Each instance is written as it arrived (not decoded and re-encoded) to `input/<SOPInstanceUID>.dcm`:
first into the hidden folder `input/.tumord-receiving/` (the watch service neither watches nor
logs what is inside hidden folders), fsynced, then renamed into `input/` (the same file system,
so the rename is atomic) and both folders fsynced: the service only ever sees whole files.
Success (0x0000) is answered only once the file is durable; a sender that got no answer sends
again. What a killed receiver left in the staging folder is removed at start.

Exactly one verdict per instance: a sender that lost our answer (we were killed after the
rename) sends the same instance again, and PACS routes often deliver one instance twice, maybe
in another transfer syntax. A SOP Instance UID names one instance (changed content must get a
new one), so, as Orthanc does by default, a SOP Instance UID received before is answered Success
and not stored again (logged, saying whether the bytes were identical). The received UIDs are kept
in `received.sqlite3` (in the output folder, beside the service's state), each recorded only after
its file is durable: a crash can at worst let one duplicate through, never lose an instance.

Statuses: 0x0000 stored (or a known duplicate); 0xA900 no valid SOP Instance UID (the dataset
cannot be named); 0xA700 the disk refused the write (out of resources: the sender retries later).
Every association is logged with the calling AE title and address; no patient data is logged.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

from tumord.atomic import fsync_dir

RECEIVED_DB = "received.sqlite3"
STAGING = ".tumord-receiving"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

SUCCESS, OUT_OF_RESOURCES, CANNOT_NAME = 0x0000, 0xA700, 0xA900


def transfer_syntaxes() -> list[str]:
    """What we accept: uncompressed, deflated, RLE, JPEG, JPEG-LS and JPEG 2000 (docs/dicom.md)."""
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.ExplicitVRBigEndian, uid.RLELossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit,
            uid.JPEGLossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
            uid.JPEG2000Lossless, uid.JPEG2000]


class Received:
    """The SOP Instance UIDs already stored, with the SHA-256 of what was stored."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS received (sop TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                             "at REAL NOT NULL)")

    def stored(self, sop: str) -> str | None:
        """The SHA-256 of the instance stored under this UID, None if there is none."""
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM received WHERE sop = ?", (sop,)).fetchone()
            return row[0] if row else None

    def add(self, sop: str, sha256: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO received VALUES (?, ?, ?)", (sop, sha256, time.time()))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Receiver:
    def __init__(self, input_dir: Path, output_dir: Path, ae_title: str, log):
        self.input, self.ae_title, self.log = Path(input_dir), ae_title, log
        self.staging = self.input / STAGING
        self.staging.mkdir(exist_ok=True)
        for leftover in self.staging.iterdir():  # written by a receiver killed before its rename
            leftover.unlink()
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.received = Received(Path(output_dir) / RECEIVED_DB)
        self.counts: dict[int, dict[str, int]] = {}  # per association: stored, duplicates, refused
        self.server = None

    # --- event handlers (pynetdicom calls them from its association threads) -------------------
    def _peer(self, event) -> dict:
        a = event.assoc
        return {"association": id(a), "calling_ae": a.requestor.ae_title, "address": a.requestor.address,
                "port": a.requestor.port}

    def on_accepted(self, event) -> None:
        self.counts[id(event.assoc)] = {"stored": 0, "duplicates": 0, "refused": 0}
        self.log.info("association.accepted", **self._peer(event))

    def on_end(self, event, how: str) -> None:
        counts = self.counts.pop(id(event.assoc), {})
        self.log.info(f"association.{how}", **self._peer(event), **counts)

    def on_rejected(self, event) -> None:
        self.log.warning("association.rejected", **self._peer(event))

    def on_echo(self, event) -> int:
        self.log.info("echo", **self._peer(event))
        return SUCCESS

    def on_store(self, event) -> int:
        counts = self.counts.setdefault(id(event.assoc), {"stored": 0, "duplicates": 0, "refused": 0})
        sop = str(event.request.AffectedSOPInstanceUID or "")
        if not _UID.match(sop) or len(sop) > 64:
            counts["refused"] += 1
            self.log.warning("instance.refused", **self._peer(event), status=hex(CANNOT_NAME),
                             reason="no valid SOP Instance UID to name the file by")
            return CANNOT_NAME
        data = event.encoded_dataset()
        digest = hashlib.sha256(event.encoded_dataset(include_meta=False)).hexdigest()
        before = self.received.stored(sop)
        if before is not None:
            counts["duplicates"] += 1
            self.log.info("instance.duplicate", sop_instance_uid=sop, association=id(event.assoc),
                          identical=before == digest, transfer_syntax=str(event.context.transfer_syntax),
                          note="this SOP Instance UID was received before; not stored again")
            return SUCCESS
        try:
            self._store(sop, data)
            self.received.add(sop, digest)
        except (OSError, sqlite3.Error) as e:
            counts["refused"] += 1
            self.log.error("instance.store_failed", sop_instance_uid=sop, status=hex(OUT_OF_RESOURCES),
                           reason=str(e))
            return OUT_OF_RESOURCES
        counts["stored"] += 1
        self.log.info("instance.stored", sop_instance_uid=sop, file=f"{sop}.dcm", bytes=len(data),
                      transfer_syntax=str(event.context.transfer_syntax), association=id(event.assoc))
        return SUCCESS

    def _store(self, sop: str, data: bytes) -> None:
        tmp = self.staging / f"{sop}.{threading.get_ident()}.tmp"  # one per association thread
        self.staging.mkdir(exist_ok=True)  # someone may have removed it
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.input / f"{sop}.dcm")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.input)
        fsync_dir(self.staging)

    # --- serving ----------------------------------------------------------------------------
    def start(self, host: str, port: int):
        """Listens in background threads; returns the server (call `stop()` to end)."""
        import logging

        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # we log associations ourselves
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0  # no limit on what we receive
        syntaxes = transfer_syntaxes()
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_ACCEPTED, self.on_accepted), (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, lambda e: self.on_end(e, "released")),
            (evt.EVT_ABORTED, lambda e: self.on_end(e, "aborted")),
        ]
        self.server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.received.close()
