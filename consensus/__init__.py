"""Director election and Byzantine agreement on each slot's output (sans-IO). Built in its own issue."""
