import sys

from oedal.cli import main

sys.exit(main())
