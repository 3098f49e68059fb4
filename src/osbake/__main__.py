import sys

from osbake.cli import main

sys.exit(main())
