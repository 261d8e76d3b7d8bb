"""The command line, `python3 -m bench COMMAND …` with scripts/ on PYTHONPATH (see __init__.py)."""

import sys

from .data import make_flat, make_tree
from .measure import lease, maxrss, phases, rss, summary, trace, watch
from .report import report


def main(argv):
    cmd = argv[1]
    if cmd == "tree":
        make_tree(argv[2], int(argv[3]))
    elif cmd == "flat":
        make_flat(argv[2], int(argv[3]))
    elif cmd == "rss":
        sep = argv.index("--")
        rss(argv[2], argv[sep + 1:], argv[3])
    elif cmd == "maxrss":
        sep = argv.index("--")
        maxrss(argv[2], argv[sep + 1:])
    elif cmd == "trace":
        sep = argv.index("--")
        trace(argv[2], argv[sep + 1:])
    elif cmd == "phases":
        sep = argv.index("--")
        phases(argv[2], argv[sep + 1:])
    elif cmd == "summary":
        sep = argv.index("--")
        summary(argv[2], argv[3], argv[sep + 1:])
    elif cmd == "watch":
        sep = argv.index("--")
        watch(argv[2], argv[3], argv[4], argv[5], int(argv[6]), argv[sep + 1:])
    elif cmd == "lease":
        sep = argv.index("--")
        lease(argv[2], argv[3], argv[sep + 1:])
    elif cmd == "report":
        report(argv[2], argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
