"""`stackproof`: the list of stackproof's commands (`help stackproof`), and
`stackproof version`. Imported after every command is registered."""

import gdb

from stackproof import __version__
from stackproof.gdbext.command import COMMANDS


def _listing():
    rows = [(c.name, c.summary) for c in COMMANDS] + [("stackproof version", "Print stackproof's version.")]
    width = max(len(n) for n, _s in rows)
    return "\n".join("  %-*s  %s" % (width, n, s) for n, s in rows)


class StackproofPrefix(gdb.Command):
    def __init__(self):
        self.__doc__ = """List stackproof's commands: verify backtraces, recover registers from stacks.

Commands (`help NAME` for each one's manual; NAME -<TAB> completes options):
%s

stackproof %s. Documentation: README.md and docs/ of stackproof's sources
(docs/json.md: the JSON documents; docs/*.schema.json: their JSON Schemas).""" % (_listing(), __version__)
        super().__init__("stackproof", gdb.COMMAND_STACK, prefix=True)

    def invoke(self, argument, from_tty):
        self.dont_repeat()
        if argument.strip():
            raise gdb.GdbError("stackproof: no subcommand %r (`help stackproof` lists the commands)"
                               % argument.strip())
        print(self.__doc__)


class StackproofVersion(gdb.Command):
    """Print stackproof's version."""

    def __init__(self):
        super().__init__("stackproof version", gdb.COMMAND_STACK)

    def invoke(self, argument, from_tty):
        self.dont_repeat()
        print("stackproof %s" % __version__)


StackproofPrefix()
StackproofVersion()
