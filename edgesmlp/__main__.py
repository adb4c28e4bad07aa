"""The `edgesmlp` command and `python -m edgesmlp`: Ctrl-C even while starting up ends in one line."""

import sys


def main() -> None:
    try:
        from edgesmlp.cli import run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
