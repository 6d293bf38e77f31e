"""``python -m hdit_edu.cli`` (``torchrun … -m hdit_edu.cli train``): the ``hdit-edu`` command."""

import sys

from . import main

sys.exit(main())
