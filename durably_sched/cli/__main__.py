"""``python -m durably_sched.cli``: the same as the ``durably-sched`` console script."""

from . import main

if __name__ == "__main__":
    main(prog_name="durably-sched")
