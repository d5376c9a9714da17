"""``python -m petrec`` is the ``petrec`` command."""

import sys

from petrec.cli import main

sys.exit(main())
