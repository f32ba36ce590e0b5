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
- recipe(s): the next recipe fixed by the certificate of slot s - 1, else None
  (the fallback programme).
"""

from __future__ import annotations

from consensus.certificate import Certificate
from consensus.election import elect_directors
from consensus.evidence import decode_relevant
from consensus.membership import Genesis
from consensus.messages import sha256


class LedgerError(ValueError):
    pass


MAX_CACHED_ELECTIONS = 4096  # elections are pure and cheap to redo; the caches only spare repeats


class Ledger:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.certificates: dict[int, Certificate] = {}
        self.seed = sha256(
            b"icn-genesis-beacon" + genesis.seed + self.chain_id
        )  # named when it was the first of many beacons
        self._directors: dict[int, tuple[bytes, ...]] = {}
        self._drawn: dict[int, tuple[bytes, ...]] = {}

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
        for s, cert in self.certificates.items():
            if s > horizon:
                continue
            for data in cert.value.evidence:
                ev = decode_relevant(data, self.chain_id, cert.slot, self.directors)
                if ev is not None:
                    out.add(ev.signer)
        return out

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
        prev = self.certificates.get(slot - 1)
        return prev.value.next_recipe if prev else None

    # -- changes -----------------------------------------------------------------------------------------
    def apply(self, cert: Certificate) -> None:
        """Add a verified certificate. A second, different certificate for a slot is a safety failure."""
        existing = self.certificates.get(cert.slot)
        if existing is not None:
            if existing.value.hash != cert.value.hash:
                raise LedgerError(f"conflicting certificates for slot {cert.slot}")
            return
        problem = cert.verify(self.directors(cert.slot), self.chain_id)
        if problem:
            raise LedgerError(f"certificate for slot {cert.slot} rejected: {problem}")
        self.certificates[cert.slot] = cert
        if not cert.value.evidence:
            return  # only evidence changes elections
        for s in [s for s in self._directors if s - self.genesis.evidence_lag >= cert.slot]:
            del self._directors[s]
