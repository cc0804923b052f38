"""The shared shape of a stackproof command: argparse help, one-line errors.

A command must never hurt the session: bad arguments, a missing target or an
internal error become one gdb error line, never a traceback or an exit.
"""

import argparse
import gc
import shlex

import gdb

from stackproof.gdbext.target import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError("%s: %s (see `help %s`)" % (self.prog, message, self.prog))

    def exit(self, status=0, message=None):
        # argparse exits after --help; inside gdb that would end the session.
        if message:
            print(message, end="")
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def ascii_text(text):
    """Text for gdb's output, which may go through an ASCII codec."""
    return str(text).encode("ascii", "backslashreplace").decode("ascii")


def _one_line(text):
    """gdb may write errors through an ASCII codec: escape the rest, keep one line."""
    return " ".join(str(text).split()).encode("ascii", "backslashreplace").decode("ascii")


def _split(argument):
    # shlex costs ~0.1 ms on a long path; without quotes or backslashes it is a plain split.
    if any(c in argument for c in "'\"\\"):
        return shlex.split(argument)
    return argument.split()


class StackproofCommand(gdb.Command):
    """Subclasses set `name`, build `parser` and implement `run(args)`."""

    name = None

    def __init__(self):
        self.parser = _Parser(prog=self.name, description=self.description(), add_help=True,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_arguments(self.parser)
        # gdb's `help NAME` shows the docstring: make it the argparse help.
        self.__doc__ = self.parser.format_help()
        super().__init__(self.name, gdb.COMMAND_STACK)

    @classmethod
    def description(cls):
        return ""

    def add_arguments(self, parser):
        pass

    def invoke(self, argument, from_tty):
        self.dont_repeat()
        # A deep stack makes tens of thousands of small dicts, all alive until the
        # command ends: the cyclic collector would walk them again and again.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            args = self.parser.parse_args(_split(argument))
            self.run(args)
        except _HelpShown:
            return
        except UserError as e:
            raise gdb.GdbError(_one_line(e))
        except gdb.GdbError as e:
            raise gdb.GdbError(_one_line(e))
        except KeyboardInterrupt:
            raise gdb.GdbError("%s: interrupted" % self.name)
        except ValueError as e:  # shlex on unbalanced quotes, bad numbers
            raise gdb.GdbError(_one_line("%s: %s" % (self.name, e)))
        except BaseException as e:  # includes a Rust panic surfacing as PanicException
            if isinstance(e, SystemExit):
                raise gdb.GdbError("%s: refused to exit gdb" % self.name)
            raise gdb.GdbError(_one_line("%s: internal error: %s: %s" % (self.name, type(e).__name__, e)))
        finally:
            if gc_was_on:
                gc.enable()


def bounded_int(lo, hi):
    """An argparse type: an integer (decimal or 0x-hex) in [lo, hi]; anything else is a
    one-line usage error (a huge number would overflow the core's 64-bit arguments)."""
    def integer(text):
        try:
            value = int(text, 10)
        except ValueError:
            try:
                value = int(text, 0)
            except ValueError:
                raise argparse.ArgumentTypeError("invalid integer %r" % text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError("%s is out of range (%d to %d)" % (text, lo, hi))
        return value
    return integer
