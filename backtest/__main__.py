"""``python -m backtest run|sweep ...`` (see :mod:`backtest.cli`)."""

import sys

from backtest.cli import main

sys.exit(main())
