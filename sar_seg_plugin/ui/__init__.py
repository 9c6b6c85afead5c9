"""Dock widgets and dialogs."""
