import sys

from shflbw.cli import main

sys.exit(main())
