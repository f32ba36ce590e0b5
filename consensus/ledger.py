"""The certificate chain, and everything elections and recipes derive from it.

Elections read no certificate except through evidence, so that every node
elects the same directors for a slot whatever certificates it holds: a
partition of any length (one side certifying slots the other never sees)
leaves one director set per slot, and Tendermint's quorum intersection then
forbids two certificates for one slot across the partition, as within it.
(An earlier design drew a beacon from the newest certificate; two sides of a
long partition then elected different directors and could each certify the
same slot: a fork. See consensus/README.md, "One director set per slot".)

- the election seed is the genesis seed's hash, for every slot; the slot
  number makes each draw different. The schedule is therefore public from
  genesis (the price: a DoS on a known director is planned in advance, where
  a beacon gave 90 s of notice);
- cooldown: the validators drawn for the `cooldown_slots` slots before s
  (the plain draw, without exclusions, so it is the same in every view) are
  passed over first;
- evidence carried in a certificate for a slot <= s - evidence_lag bars its
  signer from elections for s on, if it is relevant to the certificate's slot
  (`Evidence.relevant_to`: it names that slot or one shortly before, and its
  signer directed it). Barring is the only way two views' director sets can
  differ, and it only removes proven equivocators, which stays safe: see
  `directors`. Barring for s only looks at elections of slots before s, so
  evidence naming a future slot cannot make an election depend on itself;
- recipe(s): the next recipe fixed by the certificate of slot s - recipe_lag
  (the genesis's, 2 by default), else None (the fallback programme); it is
  settled once that certificate is held, or when no certificate can fix it.

Work per slot is constant however long the chain grows (issue 20): elections
read only the certificates that carry evidence, which the ledger keeps apart
(few: a signer stops directing `evidence_lag` slots after its evidence is
committed, and evidence only counts against a director of the last
`MAX_EVIDENCE_AGE` slots); other certificates stay in memory for `keep_slots`
slots behind the newest (what `recipe` and the node's live window read) and
then live only on disk. A `Checkpoint` is that derived state at a slot: a
restarted node loads it and the window after it instead of replaying from
genesis, and elects exactly the directors a replay would.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.certificate import MAX_CERTIFICATE_BYTES, Certificate
from consensus.election import elect_directors
from consensus.evidence import decode_relevant
from consensus.membership import Genesis
from consensus.messages import DecodeError, canonical, decode_cbor, sha256
from consensus.wire import check_bytes, check_int, check_list


class LedgerError(ValueError):
    pass


MAX_CACHED_ELECTIONS = 4096  # elections are pure and cheap to redo; the caches only spare repeats
KEEP_SLOTS = 256  # certificates held in memory behind the newest: about 3 hours of 45 s slots
MAX_CHECKPOINT_EVIDENCE = 4096  # evidence-carrying certificates a checkpoint may hold (bounded per signer)


@dataclass(frozen=True)
class Checkpoint:
    """The ledger's derived state at `slot`: what elections need, and the head to continue from.

    `evidence` holds the certificates up to `slot` that carry evidence, encoded
    and in slot order: each is verified again on load, in order, against the
    directors the earlier ones leave, so a damaged or forged checkpoint is
    refused rather than believed. `head` is the hash of the certificate at
    `slot`, checked when the node applies its stored window after loading.
    """

    chain_id: bytes
    slot: int
    head: bytes
    evidence: tuple[bytes, ...]

    def encode(self) -> bytes:
        return canonical(["icn-checkpoint", 1, self.chain_id, self.slot, self.head, list(self.evidence)])

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        limit = MAX_CHECKPOINT_EVIDENCE * MAX_CERTIFICATE_BYTES
        items = check_list(decode_cbor(data, limit), "checkpoint", length=6)
        if items[0] != "icn-checkpoint" or items[1] != 1:
            raise DecodeError("not a version-1 checkpoint")
        evidence = check_list(items[5], "checkpoint evidence", max_length=MAX_CHECKPOINT_EVIDENCE)
        return cls(
            check_bytes(items[2], "chain_id", 32),
            check_int(items[3], "slot", 0, 1 << 62),
            check_bytes(items[4], "head", 32),
            tuple(check_bytes(e, "certificate", max_size=MAX_CERTIFICATE_BYTES) for e in evidence),
        )


class Ledger:
    def __init__(self, genesis: Genesis, *, keep_slots: int = KEEP_SLOTS) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.keep_slots = keep_slots
        self.recent: dict[int, Certificate] = {}  # the newest keep_slots slots' certificates
        self.head: int | None = None  # the newest slot with a certificate
        self._with_evidence: dict[int, Certificate] = {}  # every applied one that carries evidence
        self._bars: dict[int, frozenset[bytes]] = {}  # evidence certificate's slot -> the signers it bars
        self.seed = sha256(
            b"icn-genesis-beacon" + genesis.seed + self.chain_id
        )  # named when it was the first of many beacons
        self._directors: dict[int, tuple[bytes, ...]] = {}
        self._drawn: dict[int, tuple[bytes, ...]] = {}

    def certificate(self, slot: int) -> Certificate | None:
        """The certificate of `slot` if it is within the window held in memory."""
        return self.recent.get(slot)

    @property
    def floor(self) -> int:
        """The oldest slot whose certificate the window holds (certificates below live on disk)."""
        return 0 if self.head is None else max(0, self.head - self.keep_slots + 1)

    # -- derived state ----------------------------------------------------------------------------------
    def drawn(self, slot: int) -> tuple[bytes, ...]:
        """The plain draw for `slot`: what cooldown reads, identical in every view of the chain."""
        if slot not in self._drawn:
            if len(self._drawn) >= MAX_CACHED_ELECTIONS:
                self._drawn.clear()
            g = self.genesis
            self._drawn[slot] = elect_directors(
                g.validators,
                self.seed,
                slot,
                count=g.directors_per_slot,
                max_per_region=g.max_directors_per_region,
            )
        return self._drawn[slot]

    def barred(self, slot: int) -> set[bytes]:
        """Signers of evidence committed in certificates old enough to count for `slot`."""
        horizon = slot - self.genesis.evidence_lag
        out: set[bytes] = set()
        for s, cert in self._with_evidence.items():
            if s <= horizon:
                out |= self._barred_by(cert)
        return out

    def _barred_by(self, cert: Certificate) -> frozenset[bytes]:
        """The signers one evidence-carrying certificate bars, decoded and verified once (until evidence
        at or before its slot is applied, which may change the elections its relevance reads)."""
        bars = self._bars.get(cert.slot)
        if bars is None:
            found = (
                decode_relevant(data, self.chain_id, cert.slot, self.directors)
                for data in cert.value.evidence
            )
            bars = self._bars[cert.slot] = frozenset(ev.signer for ev in found if ev is not None)
        return bars

    def directors(self, slot: int) -> tuple[bytes, ...]:
        """The slot's directors, in election (and proposer) order.

        Two views of the chain can disagree here only on barred signers: a view
        that has seen evidence against b elects someone else in b's seat. Any
        two quorums, one per view, still share a correct director, so they
        cannot certify two values: with n seats, q = floor(2n/3) + 1 and f =
        (n - 1) // 3 faulty, k differing seats leave quorums sharing at least
        2q - n - k seats, all in both sets, and the k barred seats were
        faulty, so at most f - k of the shared ones are; 2q - n > f.
        """
        if slot in self._directors:
            return self._directors[slot]
        g = self.genesis
        cooling: set[bytes] = set()
        for s in range(max(0, slot - g.cooldown_slots), slot):
            cooling.update(self.drawn(s))
        chosen = elect_directors(
            g.validators,
            self.seed,
            slot,
            count=g.directors_per_slot,
            max_per_region=g.max_directors_per_region,
            excluded=self.barred(slot),
            cooling=cooling,
        )
        if len(self._directors) >= MAX_CACHED_ELECTIONS:
            self._directors.clear()
        self._directors[slot] = chosen  # `apply` forgets the elections a new certificate could change
        return chosen

    def recipe(self, slot: int) -> bytes | None:
        fixer = self.recent.get(slot - self.genesis.recipe_lag)
        return fixer.value.next_recipe if fixer else None

    def recipe_settled(self, slot: int) -> bool:
        """Whether `recipe(slot)` can no longer change: the certificate that fixes it is held, or the
        slot is too early for any certificate to fix it. A director may start making it then."""
        fixer = slot - self.genesis.recipe_lag
        return fixer < 0 or fixer in self.recent

    # -- changes -----------------------------------------------------------------------------------------
    def apply(self, cert: Certificate) -> None:
        """Add a verified certificate. A second, different certificate for a slot is a safety failure.

        A certificate below the window (catch-up filling an old gap) is verified
        and counts for elections if it carries evidence, but is not held: the
        caller finds an older duplicate on disk, not here."""
        existing = self.recent.get(cert.slot) or self._with_evidence.get(cert.slot)
        if existing is not None:
            if existing.value.hash != cert.value.hash:
                raise LedgerError(f"conflicting certificates for slot {cert.slot}")
            return
        problem = cert.verify(self.directors(cert.slot), self.chain_id)
        if problem:
            raise LedgerError(f"certificate for slot {cert.slot} rejected: {problem}")
        if self.head is None or cert.slot > self.head:
            self.head = cert.slot
        if cert.slot >= self.floor:
            self.recent[cert.slot] = cert
            if len(self.recent) > 2 * self.keep_slots:  # amortised: one sweep per keep_slots insertions
                floor = self.floor
                self.recent = {s: c for s, c in self.recent.items() if s >= floor}
        if not cert.value.evidence:
            return  # only evidence changes elections
        self._add_evidence(cert)

    def _add_evidence(self, cert: Certificate) -> None:
        """Keep an evidence-carrying certificate; forget the elections it can change."""
        self._with_evidence[cert.slot] = cert
        for s in [s for s in self._bars if s >= cert.slot]:
            del self._bars[s]
        for s in [s for s in self._directors if s - self.genesis.evidence_lag >= cert.slot]:
            del self._directors[s]

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint | None:
        """The derived state at the head (None before the first certificate)."""
        if self.head is None:
            return None
        return Checkpoint(
            self.chain_id,
            self.head,
            self.recent[self.head].hash,
            tuple(self._with_evidence[s].encode() for s in sorted(self._with_evidence) if s <= self.head),
        )

    def load(self, checkpoint: Checkpoint) -> None:
        """Start an empty ledger from a checkpoint; the window after it is applied next, by the caller.

        LedgerError if the checkpoint is another chain's or an evidence certificate fails to verify."""
        if self.head is not None or self._with_evidence:
            raise LedgerError("a checkpoint loads into an empty ledger only")
        if checkpoint.chain_id != self.chain_id:
            raise LedgerError("checkpoint of another chain")
        try:
            self._load_evidence(checkpoint)
        except LedgerError:
            self._with_evidence.clear()  # as empty as before: the caller may replay from genesis instead
            self._directors.clear()
            self._bars.clear()
            raise

    def _load_evidence(self, checkpoint: Checkpoint) -> None:
        certs = []
        for data in checkpoint.evidence:
            try:
                certs.append(Certificate.decode(data))
            except DecodeError as exc:
                raise LedgerError(f"checkpoint evidence certificate: {exc}") from None
        slots = [c.slot for c in certs]
        if slots != sorted(set(slots)) or any(s > checkpoint.slot for s in slots):
            raise LedgerError("checkpoint evidence out of order or past its slot")
        for cert in certs:  # in slot order: each verified against the directors the earlier ones leave
            if not cert.value.evidence:
                raise LedgerError(f"checkpoint certificate for slot {cert.slot} carries no evidence")
            problem = cert.verify(self.directors(cert.slot), self.chain_id)
            if problem:
                raise LedgerError(f"checkpoint evidence certificate for slot {cert.slot}: {problem}")
            self._add_evidence(cert)
