"""Placeholder so the attacks registry imports; the attack engine replaces this module."""
