"""`python -m workers [--burst]`: the same as `injixo-freshchat worker`."""

import sys

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["worker", *sys.argv[1:]]))
