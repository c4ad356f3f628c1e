"""The proposed methods, one file each. Every module here is registered as a plugin (see bench.registry)."""
