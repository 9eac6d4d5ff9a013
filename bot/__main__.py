"""`python -m bot`: wiring and start-up only."""

import sys


def main() -> int:
    print(
        "error: the Slack app is not built yet; use `python -m bot.sms` for the SMS command line",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
