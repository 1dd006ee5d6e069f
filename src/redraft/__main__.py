import sys

from redraft.cli import main

sys.exit(main())
