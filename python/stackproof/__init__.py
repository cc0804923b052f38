"""stackproof: check backtraces and recover registers from raw x86-64 stacks.

The analysis is in the Rust extension `stackproof._core`; `stackproof.gdbext`
adapts gdb to it. Nothing here imports gdb, so the package also works in a
plain `python3` (`python3 -m stackproof layout FILE`).
"""

try:  # Cargo.toml's version, compiled into the core
    from stackproof._core import __version__
except ImportError:  # the core is missing: `import stackproof._core` says why
    __version__ = "unknown"
