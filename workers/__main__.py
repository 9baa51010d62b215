"""`python -m workers [--burst]`: the same as `injixo-freshchat worker`."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["worker", *__import__("sys").argv[1:]]))
