"""``python -m dcasenet_hub.cli``: the ``dcasenet-hub`` command."""

import sys

from dcasenet_hub.cli.main import main

sys.exit(main())
