"""python -m fp6serve SUBCOMMAND ...: the fp6serve command itself (generate, chat, serve,
quantize, bench, perplexity), installed inside the package as fp6serve/bin/fp6serve. The
Python process becomes the command (exec), so its output, signals and exit status are the
command's."""

import os
import sys


def main() -> None:
    command = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "fp6serve")
    if not os.access(command, os.X_OK):
        sys.stderr.write(f"error: the fp6serve command is missing from the package ({command}); "
                         "reinstall the package (docs/python.md)\n")
        sys.exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command, ["fp6serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
