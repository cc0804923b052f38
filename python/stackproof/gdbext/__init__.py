"""gdb integration: importing this registers the stackproof commands."""

from stackproof.gdbext.commands import regs_from_stack, unwinder_mode, verify_bt  # noqa: F401
from stackproof.gdbext.commands import prefix  # noqa: F401  (lists the commands above: last)
