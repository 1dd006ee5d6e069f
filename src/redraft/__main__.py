import sys

from redraft.entry import main

sys.exit(main())
