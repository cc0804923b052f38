"""The shared shape of a stackproof command: its manual (`help NAME`), completion
of options and values, one-line errors.

A command must never hurt the session: bad arguments, a missing target or an
internal error become one gdb error line, never a traceback or an exit.
"""

import argparse
import contextlib
import gc
import io
import os
import shlex

import gdb

from stackproof import __version__
from stackproof.gdbext import target
from stackproof.gdbext.target import UserError

# `--max-frames unlimited` (gdb's word for no limit): more frames than any stack holds.
UNLIMITED = 1 << 40
MAX_FRAMES = 1 << 20   # the largest N of `--max-frames N`
HELP_WIDTH = 80

# Every command, in the order registered (`help stackproof` lists them).
COMMANDS = []


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


def frame_limit(text):
    """`--max-frames N` (N >= 1) or `unlimited`, as gdb's own limits."""
    if text.strip().lower() == "unlimited":
        return UNLIMITED
    return bounded_int(1, MAX_FRAMES)(text)


def limit_text(n):
    return "unlimited" if n >= UNLIMITED else str(n)


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


def refuse_together(prog, given, allowed=()):
    """One line when more than one of the modes `given` ({label: bool}) is set,
    unless they are one of the `allowed` sets."""
    on = [label for label, is_set in given.items() if is_set]
    if len(on) > 1 and set(on) not in [set(a) for a in allowed]:
        raise UserError("%s: %s and %s do not go together: give one (see `help %s`)" % (
            prog, ", ".join(on[:-1]), on[-1], prog))


class StackproofCommand(gdb.Command):
    """Subclasses set `name`, `summary` (one sentence: gdb shows it in `help stack`
    and `apropos`), `manual()`, build the parser and implement `run(args)`.
    `values` maps an option's dest to how its value completes: a list of words,
    a gdb.COMPLETE_* constant, or a callable returning words."""

    name = None
    from_tty = False
    summary = ""
    values = {}
    has_output = False   # takes --output FILE

    def __init__(self):
        self.parser = _Parser(prog=self.name, add_help=True, epilog=self.manual(),
                              formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(
                                  prog, width=HELP_WIDTH, max_help_position=30))
        self.parser.add_argument("--version", action="version", version="stackproof %s" % __version__,
                                 help="print stackproof's version")
        self.add_arguments(self.parser)
        if self.has_output:
            self.parser.add_argument("--output", metavar="FILE",
                                     help="write what would be printed (text, or the --json document) to FILE")
            self.values = dict(self.values, output=FILE)
        # gdb's `help NAME` shows the docstring: its first line is the summary.
        self.__doc__ = "%s\n\n%s\nstackproof %s; every command: `help stackproof`." % (
            self.summary, self.parser.format_help().rstrip(), __version__)
        super().__init__(self.name, gdb.COMMAND_STACK)
        COMMANDS.append(self)

    @classmethod
    def manual(cls):
        return ""

    def add_arguments(self, parser):
        pass

    # ---- completion ------------------------------------------------------------

    def _options(self):
        """{option string: action} of the parser."""
        return {s: a for a in self.parser._actions for s in a.option_strings}

    def _value_words(self, action):
        how = self.values.get(action.dest)
        if how is None and action.choices:
            how = list(action.choices)
        return how or []

    def complete(self, text, word):
        # gdb asks twice: first (word None) for how to break words, then for the words.
        tokens = text.split(" ")
        current = tokens[-1]
        previous = next((t for t in reversed(tokens[:-1]) if t), None)
        options = self._options()
        action = options.get(previous) if previous else None
        if action is not None and action.nargs != 0 and not current.startswith("-"):
            how = self._value_words(action)
        elif current.startswith("-"):
            how = sorted(options)
        else:
            positional = [a for a in self.parser._actions if not a.option_strings]
            how = self._value_words(positional[0]) if positional else []
        if how == FILE:
            # gdb's own file completer reads the whole argument text: list the files here,
            # with gdb's file-name word breaks (asked for in the first call).
            if word is None:
                return gdb.COMPLETE_FILENAME
            how = _file_names(current)
        if word is None:
            return []
        if callable(how):
            try:
                how = how()
            except (gdb.error, RuntimeError, ValueError):
                how = []
        cut = len(current) - len(word)
        return [w[cut:] for w in how if w.startswith(current)]

    # ---- running ---------------------------------------------------------------

    def _run_to_file(self, args):
        """The command's output into args.output (also when --strict then fails)."""
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                self.run(args)
        finally:
            text = buf.getvalue()
            try:
                with open(os.path.expanduser(args.output), "w", encoding="utf-8") as f:
                    f.write(text)
            except OSError as e:
                raise UserError("%s: cannot write %s: %s" % (self.name, args.output, e.strerror or e))
        print("%s: wrote %s (%d bytes)" % (self.name, args.output, len(text.encode("utf-8"))))

    def invoke(self, argument, from_tty):
        self.dont_repeat()
        # A deep stack makes tens of thousands of small dicts, all alive until the
        # command ends: the cyclic collector would walk them again and again.
        gc_was_on = gc.isenabled()
        gc.disable()
        self.from_tty = from_tty
        target.progress = target.Progress(self.name, from_tty)
        try:
            args = self.parser.parse_args(_split(argument))
            if getattr(args, "output", None) is not None:
                self._run_to_file(args)
            else:
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
            target.progress.done()
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


FILE = "file"   # a value that is a file name


def _file_names(prefix):
    """Paths starting with `prefix` (directories with a trailing /)."""
    d, base = os.path.split(prefix)
    try:
        names = os.listdir(os.path.expanduser(d) or ".")
    except OSError:
        return []
    out = []
    for n in sorted(names):
        if n.startswith(base) and (base.startswith(".") or not n.startswith(".")):
            p = os.path.join(d, n)
            out.append(p + "/" if os.path.isdir(os.path.expanduser(p)) else p)
    return out


def frame_numbers():
    """The selected thread's frame numbers, for `--frame <TAB>` (at most 1024)."""
    out = []
    f = gdb.newest_frame()
    while f is not None and len(out) < 1024:
        out.append(str(len(out)))
        f = f.older()
    return out
