"""Harness that runs many real nodes on one machine with injected faults. Built in its own issue."""
