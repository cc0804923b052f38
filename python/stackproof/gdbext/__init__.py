"""gdb integration: importing this registers the stackproof commands."""

from stackproof.gdbext.commands import verify_bt  # noqa: F401
