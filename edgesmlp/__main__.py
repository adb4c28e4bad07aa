"""The `edgesmlp` command and `python -m edgesmlp`: Ctrl-C even while starting up ends in one line."""

import sys


def _interrupted(error: BaseException) -> bool:
    """Whether ``error`` is Ctrl-C: itself, or wrapped in the RuntimeError Python raises when it lands while a class
    is being created (a dataclass's ``__set_name__``)."""
    return isinstance(error, KeyboardInterrupt) or (isinstance(error, RuntimeError)
                                                   and isinstance(error.__cause__, KeyboardInterrupt))


def main() -> None:
    try:
        from edgesmlp.cli import run

        run()  # Ctrl-C inside a command is reported there; here only while the CLI is still being built
    except (KeyboardInterrupt, RuntimeError) as e:
        if not _interrupted(e):
            raise
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
