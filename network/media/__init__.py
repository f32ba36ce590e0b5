"""Slot media by content id: chunk lists, a content-addressed store, and the transfer protocol."""
