import sys

from simnet.cli import main

sys.exit(main())
