"""The certificate chain, and everything elections and recipes derive from it.

State is a pure function of the genesis and the certificates applied, so every
node that holds the same certificates elects the same directors:

- beacon(s): hash of the slot and decided value of the newest certificate for
  a slot <= s - beacon_lag (the lag lets a certificate spread before anyone
  elects from it), else the genesis seed's hash. The value, not the whole
  certificate: two nodes may hold different quorums of precommits for the same
  decision, and must still elect the same directors;
- evidence carried in a certificate for a slot <= s - beacon_lag bars its
  signer from elections for s on (its reputation no longer counts at all),
  if it is relevant to the certificate's slot (`Evidence.relevant_to`: it
  names that slot or one shortly before, and its signer directed it). So
  barring for s only ever looks at elections of slots before s: evidence
  naming a future slot cannot make an election depend on itself;
- cooldown: directors of the `cooldown_slots` certified slots before s -
  beacon_lag + 1 are passed over first;
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


def beacon_of(cert: Certificate) -> bytes:
    """What a certificate contributes to elections: its slot and decided value, not its signatures."""
    return sha256(b"icn-beacon" + cert.slot.to_bytes(8, "big") + cert.value.hash)


class Ledger:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.certificates: dict[int, Certificate] = {}
        self._directors: dict[int, tuple[bytes, ...]] = {}

    # -- derived state ----------------------------------------------------------------------------------
    def beacon(self, slot: int) -> bytes:
        horizon = slot - self.genesis.beacon_lag
        prior = [s for s in self.certificates if s <= horizon]
        if not prior:
            return sha256(b"icn-genesis-beacon" + self.genesis.seed + self.chain_id)
        return beacon_of(self.certificates[max(prior)])

    def barred(self, slot: int) -> set[bytes]:
        """Signers of evidence committed in certificates old enough to count for `slot`."""
        horizon = slot - self.genesis.beacon_lag
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
        if slot in self._directors:
            return self._directors[slot]
        g = self.genesis
        horizon = slot - g.beacon_lag
        cooling: set[bytes] = set()
        if g.cooldown_slots:
            recent = sorted((s for s in self.certificates if s <= horizon), reverse=True)[: g.cooldown_slots]
            for s in recent:
                cooling.update(self.directors(s))
        chosen = elect_directors(
            g.validators,
            self.beacon(slot),
            slot,
            count=g.directors_per_slot,
            max_per_region=g.max_directors_per_region,
            excluded=self.barred(slot),
            cooling=cooling,
        )
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
        for s in [s for s in self._directors if s - self.genesis.beacon_lag >= cert.slot]:
            del self._directors[s]
