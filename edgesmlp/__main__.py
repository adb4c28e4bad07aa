"""The `edgesmlp` command and `python -m edgesmlp`: Ctrl-C even while starting up ends in one line."""

import sys


def main() -> None:
    try:
        from edgesmlp.cli import run

        run()  # Ctrl-C inside a command is reported there; here only while the CLI is still being built
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
