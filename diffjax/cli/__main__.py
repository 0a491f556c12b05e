import sys

from diffjax.cli import main

sys.exit(main())
