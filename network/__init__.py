"""py-libp2p host, gossip topics and slot-media transfer. Built in its own issue."""
