"""Many real ICN nodes on one machine: scenarios, faults, and a report (`icn-node simnet`)."""
