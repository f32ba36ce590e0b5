"""What a node must not lose: certificates, evidence, its own votes, slot outcomes, the media index.

SQLite in WAL mode with `synchronous=FULL`: a committed transaction survives
SIGKILL and power loss, and a transaction cut short leaves no row. All writes
go through this one connection from the node's trio thread, so there is one
writer and no lock contention; each write is one small transaction (well under
a millisecond in WAL mode). The vote journal is written synchronously on
purpose: consensus may only release a vote after it is durable (see
`consensus.journal`), so the write cannot be queued behind other work.

Media files themselves live in the content-addressed `MediaStore` (written to a
temporary name, renamed after the hash check); this database only indexes them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import EllipsisType
from typing import Any

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.journal import JournalEntry
from consensus.ledger import Checkpoint
from consensus.messages import DecodeError, sha256
from node.clip import ClipScore

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    slot INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evidence (
    hash BLOB PRIMARY KEY, slot INTEGER NOT NULL, signer BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    slot INTEGER NOT NULL, round INTEGER NOT NULL, step TEXT NOT NULL, value BLOB, data BLOB,
    PRIMARY KEY (slot, round, step));
CREATE TABLE IF NOT EXISTS outcomes (
    slot INTEGER PRIMARY KEY, role TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS media (
    cid BLOB PRIMARY KEY, slot INTEGER NOT NULL, size INTEGER NOT NULL, origin TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clip_scores (
    slot INTEGER NOT NULL, director BLOB NOT NULL, matched INTEGER NOT NULL, cosine_b REAL,
    cosine_l REAL, self_check INTEGER NOT NULL, PRIMARY KEY (slot, director));
CREATE TABLE IF NOT EXISTS checkpoints (slot INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
"""

CERTIFICATE_PAGE = 256  # rows read at once when walking the chain: memory stays flat however long it is
KEEP_CHECKPOINTS = 2


class StorageError(RuntimeError):
    """The database cannot be used; the message names the file."""


class Storage:
    def __init__(self, path: str | Path, chain_id: bytes) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: not a usable node database ({exc})") from None
        if check != "ok":
            raise StorageError(f"{self.path}: database integrity check failed: {check}")
        self._migrate()
        self._claim(chain_id)
        self._certificates_scanned = 0  # prune_certificates has read every slot below this one

    @classmethod
    def reader(cls, path: str | Path, chain_id: bytes) -> Storage:
        """A read-only connection, for another process (the public face) beside the node's one writer.

        WAL mode lets it read while the node writes; it never takes a write lock,
        so it cannot delay a vote's journal write."""
        self = cls.__new__(cls)
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='chain_id'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot be read ({exc})") from None
        if row is None or row[0] != chain_id.hex():
            raise StorageError(f"{self.path}: not this chain's database")
        return self

    def _migrate(self) -> None:
        """Schema 1 journals had no `data` column (the signed proposal, the polka's value): add it."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(votes)")}
        if "data" not in columns:
            with self._tx():
                self._db.execute("ALTER TABLE votes ADD COLUMN data BLOB")

    def _claim(self, chain_id: bytes) -> None:
        """A storage directory belongs to one chain: refuse to mix two networks' state."""
        row = self._db.execute("SELECT value FROM meta WHERE key='chain_id'").fetchone()
        if row is None:
            with self._tx():
                self._db.execute("INSERT INTO meta VALUES ('chain_id', ?)", (chain_id.hex(),))
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != chain_id.hex():
            raise StorageError(
                f"{self.path}: holds the state of chain {row[0][:16]}..., not of this config's chain "
                f"{chain_id.hex()[:16]}...; use another storage_dir"
            )

    def _tx(self) -> Any:
        return self._db  # sqlite3 connection as a context manager: one transaction, rolled back on error

    def close(self) -> None:
        self._db.close()

    # -- certificates and evidence -------------------------------------------------------------------
    def put_certificate(self, cert: Certificate, received_at: float) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?, ?)",
                (cert.slot, cert.hash, cert.encode(), received_at),
            )
        self._certificates_scanned = min(self._certificates_scanned, cert.slot)  # an old gap filled late

    def certificates(self, from_slot: int = 0) -> Iterator[Certificate]:
        """Every stored certificate from `from_slot` on, in slot order, a page at a time."""
        while page := self._db.execute(
            "SELECT slot, data FROM certificates WHERE slot >= ? ORDER BY slot LIMIT ?",
            (from_slot, CERTIFICATE_PAGE),
        ).fetchall():
            for _, data in page:
                yield Certificate.decode(data)
            from_slot = page[-1][0] + 1

    def certificate_bytes(self, slot: int) -> bytes | None:
        row = self._db.execute("SELECT data FROM certificates WHERE slot = ?", (slot,)).fetchone()
        return None if row is None else bytes(row[0])

    def certificate_data(self, from_slot: int, limit: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT data FROM certificates WHERE slot >= ? ORDER BY slot LIMIT ?", (from_slot, limit)
        ).fetchall()
        return [r[0] for r in rows]

    def certificate_arrivals(self, since: int = 0) -> dict[int, float]:
        """slot -> when its certificate was stored (wall clock), for slots from `since` on."""
        return dict(self._db.execute("SELECT slot, received_at FROM certificates WHERE slot >= ?", (since,)))

    def last_certified_slot(self) -> int | None:
        slot: int | None = self._db.execute("SELECT MAX(slot) FROM certificates").fetchone()[0]
        return slot

    def put_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint and drop all but the newest KEEP_CHECKPOINTS."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                (checkpoint.slot, checkpoint.hash, checkpoint.encode()),
            )
            self._db.execute(
                "DELETE FROM checkpoints WHERE slot NOT IN "
                "(SELECT slot FROM checkpoints ORDER BY slot DESC LIMIT ?)",
                (KEEP_CHECKPOINTS,),
            )

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint whose bytes match its hash, or None."""
        for hash_, data in self._db.execute("SELECT hash, data FROM checkpoints ORDER BY slot DESC"):
            if sha256(data) == hash_:
                try:
                    return Checkpoint.decode(data)
                except DecodeError:
                    pass
        return None

    def put_evidence(self, ev: Evidence) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?, ?)",
                (ev.hash, ev.slot, ev.signer, ev.encode()),
            )

    def evidence(self) -> list[Evidence]:
        return [Evidence.decode(r[0]) for r in self._db.execute("SELECT data FROM evidence ORDER BY slot")]

    # -- the vote journal (consensus.journal.VoteJournal) ---------------------------------------------
    def recorded(self, slot: int, round_: int, step: str) -> bytes | None | EllipsisType:
        row = self._db.execute(
            "SELECT value FROM votes WHERE slot=? AND round=? AND step=?", (slot, round_, step)
        ).fetchone()
        return ... if row is None else row[0]

    def record(
        self, slot: int, round_: int, step: str, value_hash: bytes | None, data: bytes | None = None
    ) -> None:
        existing = self.recorded(slot, round_, step)
        if existing is not ...:
            if existing != value_hash:
                raise ValueError(f"journal already holds a different {step} for slot {slot} round {round_}")
            return
        with self._tx():  # committed (fsync, synchronous=FULL) before this returns
            self._db.execute(
                "INSERT INTO votes (slot, round, step, value, data) VALUES (?, ?, ?, ?, ?)",
                (slot, round_, step, value_hash, data),
            )

    def votes(self, slot: int) -> list[JournalEntry]:
        return list(
            self._db.execute(
                "SELECT round, step, value, data FROM votes WHERE slot=? ORDER BY round, step", (slot,)
            )
        )

    # -- outcomes and media ------------------------------------------------------------------------------
    def put_outcome(self, slot: int, role: str, outcome: str, detail: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?)",
                (slot, role, outcome, json.dumps(detail, sort_keys=True, default=str)),
            )

    def outcomes(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        return [
            (slot, role, outcome, json.loads(detail))
            for slot, role, outcome, detail in self._db.execute("SELECT * FROM outcomes ORDER BY slot")
        ]

    def put_media(self, cid: bytes, slot: int, size: int, origin: str) -> None:
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO media VALUES (?, ?, ?, ?)", (cid, slot, size, origin))

    def media_ids(self) -> set[bytes]:
        return {r[0] for r in self._db.execute("SELECT cid FROM media")}

    def media_for_slot(self, slot: int) -> list[bytes]:
        return [r[0] for r in self._db.execute("SELECT cid FROM media WHERE slot=?", (slot,))]

    def forget_media(self, cids: list[bytes]) -> None:
        with self._tx():
            self._db.executemany("DELETE FROM media WHERE cid=?", [(c,) for c in cids])

    def prune_before(self, slot: int) -> int:
        """Drop the vote journal, slot outcomes, CLIP scores and evidence of slots before `slot`; rows dropped.

        Certificates have their own, longer horizon (`prune_certificates`). Evidence is kept only while a
        certificate could still carry it (`MAX_EVIDENCE_AGE`, far below
        `journal_keep_slots`); the certificates that carried it keep it anyway."""
        dropped = 0
        with self._tx():
            for table in ("votes", "outcomes", "clip_scores", "evidence"):
                dropped += self._db.execute(f"DELETE FROM {table} WHERE slot < ?", (slot,)).rowcount
        return dropped

    def prune_certificates(self, before: int, limit: int = 10_000) -> int:
        """Drop certificates of slots before `before` that carry no evidence; how many (`limit` a call).

        Evidence-carrying ones stay: a peer catching up from far back needs them
        to elect as everyone else does, and they are few (see consensus.ledger).
        Each call reads only the slots the previous calls have not: the kept
        evidence-carrying rows are not decoded again every time, so the work
        per call stays constant however many of them the months leave."""
        rows = self._db.execute(
            "SELECT slot, data FROM certificates WHERE slot >= ? AND slot < ? ORDER BY slot LIMIT ?",
            (self._certificates_scanned, before, limit),
        ).fetchall()
        plain = [(slot,) for slot, data in rows if not Certificate.decode(data).value.evidence]
        with self._tx():
            self._db.executemany("DELETE FROM certificates WHERE slot = ?", plain)
        if len(rows) < limit:
            self._certificates_scanned = max(self._certificates_scanned, before)
        elif rows:
            self._certificates_scanned = rows[-1][0] + 1
        return len(plain)

    def size_bytes(self) -> int:
        """The database's files on disk (with its write-ahead log)."""
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())

    # -- CLIP agreement, for the schedule ----------------------------------------------------------------
    def put_clip_scores(self, slot: int, scores: list[ClipScore]) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO clip_scores VALUES (?, ?, ?, ?, ?, ?)",
                [(slot, s.director, s.matched, s.cosine_b, s.cosine_l, s.self_check) for s in scores],
            )

    def clip_scores(self, since: int) -> dict[int, list[ClipScore]]:
        out: dict[int, list[ClipScore]] = {}
        rows = self._db.execute("SELECT * FROM clip_scores WHERE slot >= ? ORDER BY slot, director", (since,))
        for slot, director, matched, cos_b, cos_l, self_check in rows:
            out.setdefault(slot, []).append(
                ClipScore(director, bool(matched), cos_b, cos_l, bool(self_check))
            )
        return out
