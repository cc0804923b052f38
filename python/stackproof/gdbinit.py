# For gdb: `source .../stackproof/gdbinit.py` (the line `python3 -m stackproof gdbinit`
# prints) loads stackproof from wherever pip installed it, also when gdb's own
# Python would not look there (a venv, another Python's site-packages).
import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _root not in sys.path:
    sys.path.insert(0, _root)

try:
    import stackproof.gdbext  # noqa: F401  (registers the commands)
except ImportError as e:  # a broken install must not break gdb's start-up
    print("stackproof: not loaded: %s" % e)
