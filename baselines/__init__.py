"""The methods the papers compare with, one file each. Every module here is registered as a plugin."""
