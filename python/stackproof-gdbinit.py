# Sourced by gdb (`source .../stackproof-gdbinit.py`): puts the package on sys.path
# and registers the stackproof commands.
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_pkg_root = os.path.join(_here, "python") if os.path.isdir(os.path.join(_here, "python", "stackproof")) else _here
if _pkg_root not in sys.path:
    sys.path.insert(0, _pkg_root)

try:
    import stackproof.gdbext  # noqa: F401  (registers the commands)
except ImportError as e:  # a broken install must not break gdb's start-up
    print("stackproof: not loaded: %s" % e)
