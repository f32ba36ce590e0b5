"""The ICN node: the trio program that runs the slot lifecycle, and its command line."""
