"""``python -m fastweights.cli`` (what ``torchrun ... -m fastweights.cli train ...`` runs)."""

import sys

from . import main

sys.exit(main())
