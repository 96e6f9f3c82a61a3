import sys

from coarsekl.cli import main

sys.exit(main())
